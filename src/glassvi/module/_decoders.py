"""Linear feature decoders: the readable part of glassvi's generative models."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._compiled import kernels_apply, prefetch_intrinsic
from ._sparse_input import _argsort


class LinearFeatureDecoder(nn.Module):
    """Map a latent code linearly to the natural parameter of every feature of one modality.

    The output for cell ``c`` and feature ``g`` is

    ``eta[c, g] = sum_k z[c, k] W[g, k] + b[g] + B[batch_c, g] + sum_j C_j[cat_cj, g]
    + cont_c . D[:, g]``

    so ``W`` (features x latent) is the loadings matrix that users read. Batch and categorical
    covariates enter as per-category offsets and continuous covariates as per-feature slopes: they
    shift expression but never mix with the latent factors.

    Parameters
    ----------
    n_latent
        Number of latent units (columns of ``W``).
    n_features
        Number of features of the modality (rows of ``W``).
    n_batch
        Number of batch categories (0 or 1 means no batch offsets are learned).
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    n_continuous_cov
        Number of continuous covariates.
    mask
        Optional boolean ``(n_features, n_latent)`` mask. ``None`` leaves ``W`` dense.
    mask_mode
        ``"hard"``: entries outside the mask are fixed at zero. ``"soft"``: they are free but
        penalised by the training plan's proximal L1 step, so they are exactly zero unless the
        data need them.
    nonnegative
        Constrain ``W`` to be non-negative (enforced by projection after each optimiser step),
        so that a high value of a unit always means high expression of its features.

    Examples
    --------
    >>> import torch
    >>> dec = LinearFeatureDecoder(n_latent=3, n_features=5, n_batch=2)
    >>> eta = dec(torch.randn(4, 3), batch_index=torch.tensor([[0], [1], [0], [1]]))
    >>> eta.shape
    torch.Size([4, 5])
    """

    def __init__(
        self,
        n_latent: int,
        n_features: int,
        n_batch: int = 0,
        n_cats_per_cov: list[int] | None = None,
        n_continuous_cov: int = 0,
        mask: torch.Tensor | None = None,
        mask_mode: str = "hard",
        nonnegative: bool = False,
    ):
        super().__init__()
        self.n_latent = n_latent
        self.n_features = n_features
        self.nonnegative = nonnegative
        if mask_mode not in ("hard", "soft"):
            raise ValueError(f"mask_mode must be 'hard' or 'soft', got {mask_mode!r}.")
        self.mask_mode = mask_mode
        bound = 1.0 / math.sqrt(max(n_latent, 1))
        init = torch.empty(n_features, n_latent).uniform_(-bound, bound)
        if nonnegative:
            init = init.abs()
        if mask is not None:
            mask = torch.as_tensor(mask, dtype=torch.bool)
            if tuple(mask.shape) != (n_features, n_latent):
                raise ValueError(
                    f"mask has shape {tuple(mask.shape)}, expected ({n_features}, {n_latent})."
                )
            self.register_buffer("mask", mask)
            init = init * mask
        else:
            self.mask = None
        self.weight = nn.Parameter(init)
        self.bias = nn.Parameter(torch.zeros(n_features))
        self.batch_offset = nn.Parameter(torch.zeros(max(n_batch, 1), n_features))
        self.cat_offsets = nn.ParameterList(
            [nn.Parameter(torch.zeros(n, n_features)) for n in (n_cats_per_cov or [])]
        )
        self.cont_slope = (
            nn.Parameter(torch.zeros(n_continuous_cov, n_features)) if n_continuous_cov else None
        )

    def effective_weight(self) -> torch.Tensor:
        """Loadings as used in the forward pass (hard mask applied)."""
        if self.mask is not None and self.mask_mode == "hard":
            return self.weight * self.mask
        return self.weight

    def forward(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Natural parameter (log-rate or logit, before library size) of each feature.

        With ``features`` (1-D indices), of those features only, in that order.
        """
        if features is None:
            weight = self.effective_weight()
        else:
            # index_select: its gradient is an index_add, not advanced indexing's sorted put
            weight = self.weight.index_select(0, features)
            if self.mask is not None and self.mask_mode == "hard":
                weight = weight * self.mask.index_select(0, features)
        return self.add_offsets(F.linear(z, weight), batch_index, cat_covs, cont_covs, features)

    def pair_weight(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loadings as used in the forward pass, as a matrix and the row of each feature.

        ``weight[index]`` are the loadings of ``features``; :meth:`pair_logits` reads them.
        """
        return self.effective_weight(), features

    def pair_logits(
        self,
        z: torch.Tensor,
        rows: torch.Tensor,
        features: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward(z, ...)[rows, features]`` without the other entries: one value per pair.

        Each (cell, feature) pair costs one dot product over the latent units and a lookup
        of each offset, so the cost follows the number of pairs, not cells x features.
        """
        n_feat = self.n_features

        def entries(offsets: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
            # offsets[codes[rows], features], read from the flattened offsets
            return offsets.reshape(-1).index_select(0, codes.long()[rows] * n_feat + features)

        weight, index = self.pair_weight(features)
        eta = _PairDot.apply(z, weight, rows, index)
        eta = eta + self.bias.index_select(0, features)
        if batch_index is not None:
            codes = batch_index.reshape(-1)
            if self.batch_offset.shape[0] == 1:
                codes = torch.zeros_like(codes)
            eta = eta + entries(self.batch_offset, codes)
        if cat_covs is not None:
            for j, offsets in enumerate(self.cat_offsets):
                eta = eta + entries(offsets, cat_covs[:, j])
        if cont_covs is not None and self.cont_slope is not None:
            slope = self.cont_slope.index_select(1, features).t()
            eta = eta + (cont_covs.index_select(0, rows).to(eta.dtype) * slope).sum(-1)
        return eta

    def sampled_logits(
        self,
        z: torch.Tensor,
        columns: torch.Tensor,
        rows: torch.Tensor,
        features: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        cell_offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at ``columns`` for every cell and at the (cell, feature) pairs, together.

        Equals ``(forward(z, ..., features=columns) + cell_offset[:, None], pair_logits(z,
        rows, features, ...) + cell_offset[rows])`` up to float rounding (``cell_offset``: one
        logit offset per cell, or ``None``). On the CPU in float32, without categorical or
        continuous covariates, both are computed together: one matrix product gives the
        columns' latent product, bias, batch offsets and cell offsets, and the backward pass
        writes one gradient per parameter, the columns' rows first, the pairs' added to it.
        """
        if not self._fused_sampling(z, cat_covs, cont_covs):
            eta = self(z, batch_index, cat_covs, cont_covs, columns)
            pair = self.pair_logits(z, rows, features, batch_index, cat_covs, cont_covs)
            if cell_offset is not None:
                eta = eta + cell_offset.reshape(-1, 1)
                pair = pair + cell_offset.reshape(-1).index_select(0, rows)
            return eta, pair
        return self._sampled_linear(z, columns, rows, features, batch_index, cell_offset)

    def _fused_sampling(self, z, cat_covs, cont_covs) -> bool:
        """Whether :meth:`sampled_logits` applies the fused computation."""
        return (
            z.dim() == 2
            and (cat_covs is None or len(self.cat_offsets) == 0)
            and (cont_covs is None or self.cont_slope is None)
            and kernels_apply(z, self.bias)
        )

    def _sampled_linear(self, z, columns, rows, features, batch_index, cell_offset):
        """The fused computation of :meth:`sampled_logits`."""
        return self._sampled_product(
            z, self.effective_weight(), columns, rows, features, batch_index, cell_offset
        )

    def _sampled_product(self, z, weight, columns, rows, features, batch_index, cell_offset):
        """``z @ weight.T`` plus the offsets, at ``columns`` and at the pairs."""
        codes = offsets = None
        if batch_index is not None:
            offsets = self.batch_offset
            codes = batch_index.reshape(-1).long()
            if offsets.shape[0] == 1:
                codes = torch.zeros_like(codes)
        if cell_offset is not None:
            cell_offset = cell_offset.reshape(-1)
        return _SampledLinear.apply(
            z, weight, self.bias, offsets, codes, cell_offset, columns, rows, features
        )

    def add_offsets(
        self,
        eta: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Add the feature bias and the batch and covariate offsets to ``eta``.

        Categorical offsets enter as one-hot products (a small matrix product whose gradient is
        another), not as row lookups, whose gradient is a scatter over cells x features. With
        ``features``, ``eta`` holds those features only.
        """

        def columns(param: torch.Tensor) -> torch.Tensor:
            return param if features is None else param.index_select(-1, features)

        bias = columns(self.bias)
        if batch_index is not None and self.batch_offset.shape[0] == 1:
            bias = bias + columns(self.batch_offset[0])
        eta = eta + bias
        if batch_index is not None and self.batch_offset.shape[0] > 1:
            eta = _add_category_offset(eta, batch_index.reshape(-1), columns(self.batch_offset))
        if cat_covs is not None:
            for j, offsets in enumerate(self.cat_offsets):
                eta = _add_category_offset(eta, cat_covs[:, j], columns(offsets))
        if cont_covs is not None and self.cont_slope is not None:
            eta = torch.addmm(eta, cont_covs.to(eta.dtype), columns(self.cont_slope))
        return eta

    @torch.no_grad()
    def project_(self) -> None:
        """Re-apply the hard constraints (mask, sign) to ``W`` in place."""
        if self.mask is not None and self.mask_mode == "hard":
            self.weight.mul_(self.mask)
        if self.nonnegative:
            self.weight.clamp_(min=0.0)


def _bag_starts(index: torch.Tensor, n_bags: int) -> torch.Tensor:
    """First position of each value in the sorted ``index`` (``embedding_bag`` offsets)."""
    counts = torch.bincount(index, minlength=n_bags)
    return torch.cumsum(counts, 0) - counts


_PAIR_KERNELS = None


def _pair_kernels():
    """Compiled forward and backward of :class:`_PairDot` (numba, built on first use)."""
    global _PAIR_KERNELS
    if _PAIR_KERNELS is None:
        import numba

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _pair_dot(z, weight, rows, index):
            out = np.empty(rows.shape[0], np.float32)
            for e in range(rows.shape[0]):
                zr, wr = z[rows[e]], weight[index[e]]
                acc = np.float32(0.0)
                for k in range(zr.shape[0]):
                    acc += zr[k] * wr[k]
                out[e] = acc
            return out

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _pair_dot_backward(z, weight, rows, index, grad, grad_z, grad_weight):
            # one pass over the pairs; an empty output is not wanted
            with_z, with_weight = grad_z.shape[0] > 0, grad_weight.shape[0] > 0
            for e in range(rows.shape[0]):
                g, r, i = grad[e], rows[e], index[e]
                if with_z:
                    for k in range(z.shape[1]):
                        grad_z[r, k] += g * weight[i, k]
                if with_weight:
                    for k in range(z.shape[1]):
                        grad_weight[i, k] += g * z[r, k]

        _PAIR_KERNELS = (_pair_dot, _pair_dot_backward)
    return _PAIR_KERNELS


class _PairDot(torch.autograd.Function):
    """``(z[rows] * weight[index]).sum(-1)``: one dot product per (cell, feature) pair.

    On the CPU in float32, forward and backward are single compiled passes over the pairs
    (no pairs x latent copies). Elsewhere, the backward pass sums each cell's and each weight
    row's gradient with ``embedding_bag`` over the pairs grouped by cell and by row, without a
    pairs x latent copy of either gradient or a scatter into it.
    """

    @staticmethod
    def forward(ctx, z, weight, rows, index):
        if kernels_apply(z, weight, rows, index):
            z, weight = z.contiguous(), weight.contiguous()
            out = torch.from_numpy(
                _pair_kernels()[0](
                    z.detach().numpy(), weight.detach().numpy(), rows.numpy(), index.numpy()
                )
            )
        else:
            out = (z.index_select(0, rows) * weight.index_select(0, index)).sum(-1)
        ctx.save_for_backward(z, weight, rows, index)
        return out

    @staticmethod
    def backward(ctx, grad):
        z, weight, rows, index = ctx.saved_tensors
        grad_z = grad_weight = None
        if kernels_apply(z, weight, grad):
            with_z, with_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            grad_z = torch.zeros(z.shape if with_z else (0, z.shape[1]))
            grad_weight = torch.zeros(weight.shape if with_weight else (0, weight.shape[1]))
            _pair_kernels()[1](
                z.detach().numpy(),
                weight.detach().numpy(),
                rows.numpy(),
                index.numpy(),
                grad.contiguous().numpy(),
                grad_z.numpy(),
                grad_weight.numpy(),
            )
            return (
                grad_z if with_z else None,
                grad_weight if with_weight else None,
                None,
                None,
            )
        if z.shape[1] == 0:
            # no latent units (a hard-mask ProgramDecoder without de novo units):
            # embedding_bag does not take empty embeddings
            return (
                torch.zeros_like(z) if ctx.needs_input_grad[0] else None,
                torch.zeros_like(weight) if ctx.needs_input_grad[1] else None,
                None,
                None,
            )
        if ctx.needs_input_grad[0]:
            by_cell = None
            if rows.numel() > 1 and not bool((rows[1:] >= rows[:-1]).all()):
                by_cell = _argsort(rows)
            cells = rows if by_cell is None else rows[by_cell]
            grad_z = F.embedding_bag(
                index if by_cell is None else index[by_cell],
                weight.detach(),
                _bag_starts(cells, z.shape[0]),
                mode="sum",
                per_sample_weights=grad if by_cell is None else grad[by_cell],
            )
        if ctx.needs_input_grad[1]:
            by_row = _argsort(index)
            grad_weight = F.embedding_bag(
                rows[by_row],
                z.detach(),
                _bag_starts(index[by_row], weight.shape[0]),
                mode="sum",
                per_sample_weights=grad[by_row],
            )
        return grad_z, grad_weight, None, None


_SAMPLED_KERNELS = None


def _sampled_kernels():
    """Compiled pair logits of :class:`_SampledLinear` and their backward pass (numba)."""
    global _SAMPLED_KERNELS
    if _SAMPLED_KERNELS is None:
        import numba

        prefetch = prefetch_intrinsic()
        ahead = 16

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _pairs(z, weight, bias, offsets, codes, cell_offset, rows, index):
            n_feat = bias.shape[0]
            n_pairs = rows.shape[0]
            out = np.empty(n_pairs, np.float32)
            for e in range(n_pairs):
                if e + ahead < n_pairs:
                    # the pairs' features are far apart: load their parameters early
                    i = index[e + ahead]
                    prefetch(weight, i * weight.shape[1])
                    prefetch(bias, i)
                    if offsets.shape[0] > 0:
                        prefetch(offsets, codes[rows[e + ahead]] * n_feat + i)
                r, i = rows[e], index[e]
                zr, wr = z[r], weight[i]
                acc = np.float32(0.0)
                for k in range(zr.shape[0]):
                    acc += zr[k] * wr[k]
                acc += bias[i]
                if offsets.shape[0] > 0:
                    acc += offsets[codes[r] * n_feat + i]
                if cell_offset.shape[0] > 0:
                    acc += cell_offset[r]
                out[e] = acc
            return out

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _pairs_backward(
            z, weight, codes, rows, index, grad, grad_z, grad_weight, grad_bias, grad_offsets,
            grad_cell,
        ):  # fmt: skip
            n_feat = grad_bias.shape[0]
            n_pairs = rows.shape[0]
            for e in range(n_pairs):
                if e + ahead < n_pairs:
                    i = index[e + ahead]
                    prefetch(weight, i * weight.shape[1])
                    prefetch(grad_weight, i * weight.shape[1])
                    prefetch(grad_bias, i)
                    if grad_offsets.shape[0] > 0:
                        prefetch(grad_offsets, codes[rows[e + ahead]] * n_feat + i)
                g, r, i = grad[e], rows[e], index[e]
                for k in range(z.shape[1]):
                    grad_z[r, k] += g * weight[i, k]
                for k in range(z.shape[1]):
                    grad_weight[i, k] += g * z[r, k]
                grad_bias[i] += g
                if grad_offsets.shape[0] > 0:
                    grad_offsets[codes[r] * n_feat + i] += g
                if grad_cell.shape[0] > 0:
                    grad_cell[r] += g

        _SAMPLED_KERNELS = (_pairs, _pairs_backward)
    return _SAMPLED_KERNELS


class _SampledLinear(torch.autograd.Function):
    """Logits of a linear decoder at drawn columns (every cell) and at (cell, feature) pairs.

    ``eta[c, j] = z[c] . weight[columns[j]] + bias[columns[j]] + offsets[codes[c], columns[j]]
    + cell_offset[c]`` is one matrix product of ``[z, one_hot(codes), cell_offset, 1]`` with
    the columns' ``[weight, offsets.T, 1, bias]``; ``pair[e]`` is the same sum at cell
    ``rows[e]`` and feature ``index[e]`` (one compiled pass). ``offsets``/``codes`` and
    ``cell_offset`` may be ``None``. The backward pass forms one gradient per parameter:
    the columns' rows from one matrix product, then the pairs' added in place. CPU float32.
    """

    @staticmethod
    def forward(ctx, z, weight, bias, offsets, codes, cell_offset, columns, rows, index):
        n_cells, n_latent = z.shape
        z = z.contiguous()
        weight = weight.contiguous()
        design = [z]
        table = [weight.index_select(0, columns)]
        if offsets is not None:
            design.append(F.one_hot(codes, offsets.shape[0]).to(z.dtype))
            table.append(offsets.index_select(1, columns).t())
        if cell_offset is not None:
            design.append(cell_offset.reshape(-1, 1))
            table.append(z.new_ones(columns.numel(), 1))
        design.append(z.new_ones(n_cells, 1))
        table.append(bias.index_select(0, columns).unsqueeze(1))
        design, table = torch.cat(design, 1), torch.cat(table, 1)
        eta = design @ table.t()
        empty = z.new_zeros(0)
        flat_offsets = empty if offsets is None else offsets.detach().contiguous().view(-1)
        cells = empty if cell_offset is None else cell_offset.detach().contiguous()
        pair = torch.from_numpy(
            _sampled_kernels()[0](
                z.detach().numpy(),
                weight.detach().numpy(),
                bias.detach().numpy(),
                flat_offsets.numpy(),
                (codes if codes is not None else rows[:0]).numpy(),
                cells.numpy(),
                rows.numpy(),
                index.numpy(),
            )
        )
        ctx.save_for_backward(z, weight, design, table, codes, columns, rows, index)
        ctx.n_offsets = 0 if offsets is None else offsets.shape[0]
        ctx.has_cell_offset = cell_offset is not None
        return eta, pair

    @staticmethod
    def backward(ctx, grad_eta, grad_pair):
        z, weight, design, table, codes, columns, rows, index = ctx.saved_tensors
        n_latent, n_feat, n_off = z.shape[1], weight.shape[0], ctx.n_offsets
        grad_eta = grad_eta.contiguous()
        # columns' rows of every parameter, and of z, from two matrix products (taken with
        # the long dimension last: the other way round they are several times slower)
        grad_table = design.t() @ grad_eta
        grad_z = (table[:, :n_latent].t() @ grad_eta.t()).t().contiguous()
        grad_weight = z.new_zeros(weight.shape)
        grad_weight.index_copy_(0, columns, grad_table[:n_latent].t())
        grad_bias = z.new_zeros(n_feat).index_copy_(0, columns, grad_table[-1])
        grad_offsets = z.new_zeros(n_off, n_feat)
        if n_off:
            grad_offsets.index_copy_(1, columns, grad_table[n_latent : n_latent + n_off])
        grad_cell = grad_eta.sum(1) if ctx.has_cell_offset else z.new_zeros(0)
        _sampled_kernels()[1](
            z.detach().numpy(),
            weight.detach().numpy(),
            (codes if codes is not None else rows[:0]).numpy(),
            rows.numpy(),
            index.numpy(),
            grad_pair.contiguous().numpy(),
            grad_z.numpy(),
            grad_weight.numpy(),
            grad_bias.numpy(),
            grad_offsets.view(-1).numpy(),
            grad_cell.numpy(),
        )
        needs = ctx.needs_input_grad
        return (
            grad_z if needs[0] else None,
            grad_weight if needs[1] else None,
            grad_bias if needs[2] else None,
            grad_offsets if n_off and needs[3] else None,
            None,
            grad_cell if ctx.has_cell_offset and needs[5] else None,
            None,
            None,
            None,
        )


def _add_category_offset(eta: torch.Tensor, codes: torch.Tensor, offsets: torch.Tensor):
    """``eta + offsets[codes]``, as ``eta + one_hot(codes) @ offsets``."""
    one_hot = F.one_hot(codes.long(), offsets.shape[0]).to(eta.dtype)
    return torch.addmm(eta, one_hot, offsets)

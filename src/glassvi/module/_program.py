"""Program-masked decoders and the VAE of ProgramVI."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from .._compiled import kernels_apply
from ._anchor import anchor_loss, normalised_log_expression, normalised_log_values
from ._decoders import LinearFeatureDecoder, _PairDot
from ._distributions import as_dense, nonzero_key, values_at
from ._experts import ModalityExpertsEncoder
from ._linalg import psd_pinv
from ._sparse_input import _rows_of
from ._surgery import freeze_columns_hook, freeze_rows_hook, program_mask_from_state
from ._vae import MULTIOME_ENCODER, GlassVAE

#: what program activities can be anchored to (``ProgramVAE(anchor_target=...)``)
ANCHOR_TARGETS = ("joint", "mean")
#: programs per block when the joint fit's Gram matrix is built from the sparse memberships
_GRAM_BLOCK = 256


def _csr(crow, col, values, shape) -> torch.Tensor:
    with warnings.catch_warnings():
        # torch flags its sparse CSR support as beta; the operations used here are stable
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _feature_memberships(
    crow: torch.Tensor, n_members: torch.Tensor, features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (feature, program) memberships of each of ``features``, from a CSR layout by feature.

    ``crow`` (``n_features + 1``) and ``n_members`` (members per feature) describe memberships
    stored feature by feature; ``features`` is 1-D, in any order, with repeats. Returns
    ``(owner, entry)``: for every membership of every listed feature, the position of the
    feature in ``features`` (increasing) and the index of the membership in the layout
    (increasing within a feature). The cost follows ``features`` and their memberships, not
    the number of features.
    """
    counts = n_members.index_select(0, features)
    hit = counts.nonzero().squeeze(1)
    counts = counts.index_select(0, hit)
    total = int(counts.sum())
    owner = torch.repeat_interleave(hit, counts, output_size=total)
    # membership index = first membership of the feature + rank among the feature's entries
    first = crow.index_select(0, features.index_select(0, hit))
    shift = first - (torch.cumsum(counts, 0) - counts)
    entry = torch.arange(total, device=features.device) + torch.repeat_interleave(
        shift, counts, output_size=total
    )
    return owner, entry


class _IndexedMatmul(torch.autograd.Function):
    """``z @ W.T`` for a sparse ``W`` (features x programs) given by its nonzero values.

    Only the values at the mask's nonzeros are parameters, so memory and time scale with the
    number of (feature, program) pairs rather than with features x programs. The backward pass
    computes the gradient of the values as a sampled dense-dense product, never a dense
    features x programs matrix.
    """

    @staticmethod
    def forward(ctx, values, z, crow, col, ccol, row_by_col, order, n_features):
        n_programs = z.shape[-1]
        weight = _csr(crow, col, values, (n_features, n_programs))
        ctx.save_for_backward(values, z, crow, col, ccol, row_by_col, order)
        ctx.n_features = n_features
        # sparse @ dense reads the dense operand row by row: pass it contiguous
        return (weight @ z.T.contiguous()).T

    @staticmethod
    def backward(ctx, grad):
        values, z, crow, col, ccol, row_by_col, order = ctx.saved_tensors
        n_features, n_programs = ctx.n_features, z.shape[-1]
        # one features x cells copy of the gradient serves both products
        grad_t = grad.T.contiguous()
        grad_values = grad_z = None
        if ctx.needs_input_grad[1]:
            weight_t = _csr(ccol, row_by_col, values[order], (n_programs, n_features))
            grad_z = (weight_t @ grad_t).T
        if ctx.needs_input_grad[0]:
            pattern = _csr(crow, col, torch.zeros_like(values), (n_features, n_programs))
            grad_values = torch.sparse.sampled_addmm(pattern, grad_t, z.contiguous()).values()
        return grad_values, grad_z, None, None, None, None, None, None


class ProgramDecoder(LinearFeatureDecoder):
    """Linear decoder whose first latent units are gene programs restricted to a mask.

    The latent units are the ``n_programs`` annotated programs (the columns of ``mask``)
    followed by ``n_latent - n_programs`` de novo units that may use any feature. Offsets for
    batches and covariates are those of :class:`~glassvi.module.LinearFeatureDecoder`.

    Parameters
    ----------
    n_latent
        Number of latent units (programs + de novo units).
    n_features
        Number of features of the modality.
    n_batch
        Number of batch categories.
    n_cats_per_cov
        Number of categories of each extra categorical covariate.
    n_continuous_cov
        Number of continuous covariates.
    mask
        Boolean ``(n_features, n_programs)`` membership of features in programs.
    mask_mode
        ``"hard"``: program weights exist only at the mask's nonzeros. They are stored as an
        indexed (sparse) vector, so memory and time scale with the number of memberships, which
        lets thousands of programs be trained over a whole transcriptome. ``"soft"``: every
        feature has a weight in every program (a dense matrix); weights outside the mask are
        shrunk by :meth:`soft_threshold_` so that they are exactly zero unless the data need
        them.
    nonnegative
        Keep all weights non-negative (projection after each optimiser step).

    Examples
    --------
    >>> import torch
    >>> from glassvi.module import ProgramDecoder
    >>> mask = torch.tensor([[1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    >>> decoder = ProgramDecoder(3, 3, mask=mask)  # 2 programs + 1 de novo unit
    >>> decoder(torch.randn(4, 3)).shape
    torch.Size([4, 3])
    >>> bool((decoder.effective_weight()[:, :2][~mask] == 0).all())
    True
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
        nonnegative: bool = True,
    ):
        if mask is None:
            raise ValueError("ProgramDecoder needs a (n_features, n_programs) mask.")
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.ndim != 2 or mask.shape[0] != n_features or mask.shape[1] > n_latent:
            raise ValueError(
                f"mask has shape {tuple(mask.shape)}, expected ({n_features}, n_programs) with "
                f"n_programs <= n_latent ({n_latent})."
            )
        n_programs = int(mask.shape[1])
        n_denovo = n_latent - n_programs
        # the base class holds the de novo weights (features x n_denovo) and all the offsets
        super().__init__(
            n_denovo,
            n_features,
            n_batch=n_batch,
            n_cats_per_cov=n_cats_per_cov,
            n_continuous_cov=n_continuous_cov,
            mask=None,
            mask_mode=mask_mode,
            nonnegative=nonnegative,
        )
        self.n_latent = n_latent
        self.n_programs = n_programs
        self.n_denovo = n_denovo
        #: latent units whose weights stay fixed (reference units during query mapping)
        self.n_frozen = 0
        bound = 1.0 / math.sqrt(max(n_latent, 1))
        with torch.no_grad():
            self.weight.uniform_(0.0 if nonnegative else -bound, bound)
        self.indexed = mask_mode == "hard"
        if self.indexed:
            rows, cols = mask.nonzero(as_tuple=True)  # row-major order, as CSR needs
            self.register_buffer("program_rows", rows.to(torch.int64))
            self.register_buffer("program_cols", cols.to(torch.int64))
            init = torch.empty(rows.numel()).uniform_(0.0 if nonnegative else -bound, bound)
            self.program_values = nn.Parameter(init)
            self._build_index()
        else:
            self.register_buffer("program_mask", mask.clone())
            init = torch.empty(n_features, n_programs).uniform_(
                0.0 if nonnegative else -bound, bound
            )
            self.program_weight = nn.Parameter(init * mask)

    def _build_index(self) -> None:
        """CSR layouts of the mask (and of its transpose) used by the indexed product."""
        rows, cols = self.program_rows, self.program_cols
        crow = torch.zeros(self.n_features + 1, dtype=torch.int64, device=rows.device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=self.n_features), 0)
        order = torch.argsort(cols, stable=True)
        ccol = torch.zeros(self.n_programs + 1, dtype=torch.int64, device=rows.device)
        ccol[1:] = torch.cumsum(torch.bincount(cols, minlength=self.n_programs), 0)
        self.register_buffer("_crow", crow, persistent=False)
        self.register_buffer("_n_members", crow.diff(), persistent=False)
        self.register_buffer("_ccol", ccol, persistent=False)
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_row_by_col", rows[order].contiguous(), persistent=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.indexed:
            self._build_index()

    # ------------------------------------------------------------------------- weights
    @property
    def mask(self) -> torch.Tensor:
        """Boolean ``(n_features, n_programs)`` program mask."""
        if self.indexed:
            out = torch.zeros(
                self.n_features, self.n_programs, dtype=torch.bool, device=self.bias.device
            )
            out[self.program_rows, self.program_cols] = True
            return out
        return self.program_mask

    @mask.setter
    def mask(self, value) -> None:  # the base class sets ``mask = None``; the mask lives here
        pass

    def program_weights(self) -> torch.Tensor:
        """Dense ``(n_features, n_programs)`` weights of the annotated programs."""
        if not self.indexed:
            return self.program_weight
        out = torch.zeros(
            self.n_features,
            self.n_programs,
            dtype=self.program_values.dtype,
            device=self.program_values.device,
        )
        out[self.program_rows, self.program_cols] = self.program_values
        return out

    def program_column(self, k: int) -> torch.Tensor:
        """Dense weights of one latent unit over all features (without a dense matrix)."""
        if k >= self.n_programs:
            return self.weight[:, k - self.n_programs]
        if not self.indexed:
            return self.program_weight[:, k]
        out = torch.zeros(
            self.n_features, dtype=self.program_values.dtype, device=self.program_values.device
        )
        sel = self.program_cols == k
        out[self.program_rows[sel]] = self.program_values[sel]
        return out

    def effective_weight(self) -> torch.Tensor:
        """Dense ``(n_features, n_latent)`` weights: programs, then de novo units."""
        return torch.cat([self.program_weights(), self.weight], dim=1)

    def column_sq_norms(self) -> torch.Tensor:
        """Squared norm of each program's weights in this modality (length ``n_programs``)."""
        if self.indexed:
            out = torch.zeros(
                self.n_programs, dtype=self.program_values.dtype, device=self.program_values.device
            )
            return out.index_add_(0, self.program_cols, self.program_values**2)
        return (self.program_weight**2).sum(0)

    def mask_sizes(self) -> torch.Tensor:
        """Number of member features of each program in this modality."""
        if self.indexed:
            return torch.bincount(self.program_cols, minlength=self.n_programs)
        return self.program_mask.sum(0)

    # ------------------------------------------------------------------------- forward
    def forward(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        cat_covs: torch.Tensor | None = None,
        cont_covs: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Natural parameter (log-rate or logit, before library size) of each feature.

        With ``features`` (1-D indices in increasing order), of those features only.
        """
        if self.indexed and features is not None:
            eta = self._subset_product(z, features)
            return self.add_offsets(eta, batch_index, cat_covs, cont_covs, features)
        z_prog, z_denovo = z[..., : self.n_programs], z[..., self.n_programs :]
        if self.indexed:
            flat = z_prog.reshape(-1, self.n_programs)
            index = (self._crow, self.program_cols, self._ccol, self._row_by_col, self._order)
            eta = _IndexedMatmul.apply(self.program_values, flat, *index, self.n_features)
            eta = eta.reshape(*z.shape[:-1], self.n_features)
        else:
            weight = (
                self.program_weight
                if features is None
                else self.program_weight.index_select(0, features)
            )
            eta = z_prog @ weight.T
        if self.n_denovo:
            weight = self.weight if features is None else self.weight.index_select(0, features)
            eta = eta + z_denovo @ weight.T
        return self.add_offsets(eta, batch_index, cat_covs, cont_covs, features)

    def pair_weight(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense weights of the de novo units, and the row of each of ``features`` in them.

        :meth:`pair_logits` reads the de novo units through them and adds the programs' part.
        """
        return self.weight, features

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

        The de novo units and the offsets are read as in
        :meth:`~glassvi.module.LinearFeatureDecoder.pair_logits`. With a hard mask, a pair's
        program part is a sum over its feature's memberships only, so its cost follows the
        memberships of the listed features, not pairs x programs.
        """
        eta = super().pair_logits(
            z[..., self.n_programs :], rows, features, batch_index, cat_covs, cont_covs
        )
        if not self.indexed:
            z_prog = z[..., : self.n_programs]
            return eta + _PairDot.apply(z_prog, self.program_weight, rows, features)
        owner, entry = _feature_memberships(self._crow, self._n_members, features)
        flat = rows.index_select(0, owner) * z.shape[-1] + self.program_cols.index_select(0, entry)
        products = z.reshape(-1).index_select(0, flat) * self.program_values.index_select(0, entry)
        return eta.index_add(0, owner, products)

    def _fused_sampling(self, z, cat_covs, cont_covs) -> bool:
        return self.indexed and super()._fused_sampling(z, cat_covs, cont_covs)

    def _sampled_linear(self, z, columns, rows, features, batch_index, cell_offset):
        # the de novo units and the offsets fused; the programs' part added membership by
        # membership, at the columns and at the pairs
        eta, pair = self._sampled_product(
            z[:, self.n_programs :], self.weight, columns, rows, features, batch_index, cell_offset
        )
        owner, entry = _feature_memberships(self._crow, self._n_members, columns)
        programs = self.program_cols.index_select(0, entry)
        products = z.index_select(-1, programs) * self.program_values.index_select(0, entry)
        eta = eta.index_add_(-1, owner, products)
        owner, entry = _feature_memberships(self._crow, self._n_members, features)
        flat = rows.index_select(0, owner) * z.shape[-1] + self.program_cols.index_select(0, entry)
        products = z.reshape(-1).index_select(0, flat) * self.program_values.index_select(0, entry)
        return eta, pair.index_add_(0, owner, products)

    def _subset_product(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``z`` times the weights of ``features`` (programs and de novo units), cells x features.

        The programs' part is added membership by membership to the de novo units' product,
        so its cost follows the memberships of ``features``, not features x programs.
        """
        if self.n_denovo:
            eta = z[..., self.n_programs :] @ self.weight.index_select(0, features).T
        else:
            eta = z.new_zeros(*z.shape[:-1], features.numel())
        owner, entry = _feature_memberships(self._crow, self._n_members, features)
        programs = self.program_cols.index_select(0, entry)
        products = z.index_select(-1, programs) * self.program_values.index_select(0, entry)
        return eta.index_add_(-1, owner, products)

    # ------------------------------------------------------------------------- constraints
    @torch.no_grad()
    def project_(self) -> None:
        """Re-apply the sign constraint to the trainable (not frozen) weights."""
        if not self.nonnegative:
            return
        start = max(self.n_frozen - self.n_programs, 0)
        self.weight[:, start:].clamp_(min=0.0)
        if self.n_frozen >= self.n_programs:
            return
        if self.indexed:
            if self.n_frozen:
                sel = self.program_cols >= self.n_frozen
                self.program_values[sel] = self.program_values[sel].clamp(min=0.0)
            else:
                self.program_values.clamp_(min=0.0)
        else:
            self.program_weight[:, self.n_frozen :].clamp_(min=0.0)

    @torch.no_grad()
    def soft_threshold_(self, threshold: float) -> None:
        """Proximal L1 step on the weights outside a soft mask: shrink by ``threshold``.

        Weights whose magnitude is below the threshold become exactly zero.
        """
        if self.indexed or threshold <= 0 or self.n_frozen >= self.n_programs:
            return
        w = self.program_weight[:, self.n_frozen :]
        outside = ~self.program_mask[:, self.n_frozen :]
        shrunk = torch.sign(w) * (w.abs() - threshold).clamp(min=0.0)
        w.copy_(torch.where(outside, shrunk, w))

    @torch.no_grad()
    def scale_programs_(self, factor: torch.Tensor) -> None:
        """Multiply each program's weights by ``factor`` (length ``n_programs``)."""
        factor = factor.clone()
        factor[: self.n_frozen] = 1.0
        if self.indexed:
            self.program_values.mul_(factor[self.program_cols])
        else:
            self.program_weight.mul_(factor)

    @torch.no_grad()
    def add_denovo_(self, n_new: int) -> None:
        """Append ``n_new`` de novo units (new trainable columns); existing ones are frozen."""
        n_old = self.n_latent
        bound = 1.0 / math.sqrt(max(n_old + n_new, 1))
        new = torch.empty(self.n_features, n_new, device=self.weight.device).uniform_(
            0.0 if self.nonnegative else -bound, bound
        )
        self.weight = nn.Parameter(torch.cat([self.weight.detach(), new], dim=1))
        self.n_denovo += n_new
        self.n_latent += n_new
        self.n_frozen = n_old


def _keep_detached_output(layer: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
    """Forward hook: keep the layer's output on a detached input (``anchor_hidden`` below 1).

    Kept only while training with gradients, and taken (removed) by the loss that uses it.
    """
    if layer.training and torch.is_grad_enabled():
        layer.output_on_detached_input = F.linear(inputs[0].detach(), layer.weight, layer.bias)


_MEMBER_SUMS_KERNEL = None


def _member_sums_kernel():
    """Compiled :meth:`ProgramVAE._member_sums` on CPU float32 (numba, built on first use)."""
    global _MEMBER_SUMS_KERNEL
    if _MEMBER_SUMS_KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _sums(rows, cols, values, crow, programs, n_cells, n_programs):
            out = np.zeros((n_cells, n_programs), np.float32)
            for e in range(rows.shape[0]):
                row, value = rows[e], values[e]
                for q in range(crow[cols[e]], crow[cols[e] + 1]):
                    out[row, programs[q]] += value
            return out

        _MEMBER_SUMS_KERNEL = _sums
    return _MEMBER_SUMS_KERNEL


def _ridge_from_fit(
    size: np.ndarray,
    intercept: np.ndarray,
    n_total: float,
    real_residual: np.ndarray,
    decoy_residual: np.ndarray,
) -> np.ndarray:
    """:func:`collinearity_ridge` from each program's residual sum of squares.

    ``size`` and ``intercept`` are the programs' diagonal and intercept entries of the Gram
    matrix (annotated programs, then decoys), ``n_total`` its intercept entry, and the
    residuals those of each annotated program regressed on the other columns and of each decoy
    regressed on the annotated design.
    """
    residual = np.concatenate([real_residual, decoy_residual])
    centred = size - intercept**2 / max(n_total, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(centred > 1e-9, 1.0 - residual / np.maximum(centred, 1e-9), 0.0)
    r2 = np.clip(r2, 0.0, 0.99)
    return np.concatenate([[0.0], size * (r2 / (1.0 - r2)) ** 2])


def _quadratic_forms(matrix: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``c^T A c`` for every column ``c`` of ``columns``, by blocks of columns (no big copy)."""
    out = np.empty(columns.shape[1])
    for start in range(0, columns.shape[1], _GRAM_BLOCK):
        block = columns[:, start : start + _GRAM_BLOCK]
        out[start : start + _GRAM_BLOCK] = (block * (matrix @ block)).sum(0)
    return out


def collinearity_ridge(gram: torch.Tensor, n_real: int) -> torch.Tensor:
    """Ridge of every program in the joint fit, before the ``anchor_ridge`` factor.

    ``gram`` is ``D^T W D`` for the design ``D`` = [intercept, the ``n_real`` annotated
    programs, then any decoys]. A program's ridge is ``n_members * (VIF - 1)**2``, where the
    variance inflation factor ``VIF = 1 / (1 - R^2)`` and ``R^2`` is the share of its
    (centred) membership that the other annotated programs explain: its residual sum of squares
    is ``1 / (D^T W D)^+_kk``, with the pseudo-inverse of the annotated design's Gram matrix
    (:func:`glassvi.module._linalg.psd_pinv`); a decoy's ``R^2`` is against all annotated
    programs, as if it were added alone. A program whose members are its own gets (almost) no
    ridge and keeps its least-squares coefficient; one whose members other programs also hold,
    whose coefficient the fit cannot pin down, is pulled towards 0 (towards its members'
    summed expression). The intercept gets none.

    Parameters
    ----------
    gram
        ``(k + 1, k + 1)`` Gram matrix of the design.
    n_real
        Number of annotated programs (the first columns after the intercept).

    Returns
    -------
    ``(k + 1,)`` float64 ridge (0 for the intercept).

    Examples
    --------
    >>> members = torch.tensor([[1.0, 1, 1, 1, 0, 0, 0, 0],  # holds all of the next one
    ...                         [1.0, 1, 1, 0, 0, 0, 0, 0],
    ...                         [0.0, 0, 0, 0, 1, 1, 0, 0]])
    >>> design = torch.cat([torch.ones(8, 1), members.T], dim=1)
    >>> collinearity_ridge(design.T @ design, n_real=3)
    tensor([ 0.0000, 16.0000,  6.7500,  0.5000], dtype=torch.float64)
    """
    g = gram.detach().to(device="cpu", dtype=torch.float64).numpy()
    size = np.diagonal(g)[1:].copy()
    plain = psd_pinv(lambda: g[: n_real + 1, : n_real + 1].copy())
    real_residual = 1.0 / np.maximum(np.diagonal(plain)[1:], 1e-12)
    cross = g[: n_real + 1, n_real + 1 :]
    decoy_residual = size[n_real:] - _quadratic_forms(plain, cross)
    ridge = _ridge_from_fit(size, g[0, 1:], float(g[0, 0]), real_residual, decoy_residual)
    return torch.from_numpy(ridge).to(gram.device)


class ProgramVAE(GlassVAE):
    """VAE whose latent units are named gene programs, plus optional de novo units.

    Each modality is decoded by a :class:`ProgramDecoder`. In multiome data a program has
    weights in both modalities (for instance its genes and the peaks linked to them): the masks
    of all modalities share their column order. After every optimiser step,
    :meth:`constrain_` applies, in this order, the sign projection, the proximal L1 step on
    weights outside a soft mask and the proximal group-lasso step, which sets to exactly zero
    the programs the data do not support.

    Parameters
    ----------
    n_features
        Ordered mapping modality -> number of features.
    registry_keys
        Mapping modality -> key of its counts in the minibatch.
    likelihoods
        Mapping modality -> likelihood.
    program_masks
        Mapping modality -> boolean ``(n_features, n_programs)`` mask; same ``n_programs`` in
        every modality.
    n_denovo
        Number of unannotated latent units that may use any feature.
    mask_mode
        ``"hard"`` (indexed weights at the mask's nonzeros only) or ``"soft"`` (dense weights,
        L1-penalised outside the mask).
    soft_penalty
        Strength of the L1 penalty on weights outside a soft mask. The proximal step shrinks
        them by ``lr * soft_penalty`` after each optimiser step.
    group_lasso
        Strength of the group-lasso penalty on whole programs (each program's weights in all
        modalities form one group); ``0`` turns it off. The proximal step shrinks the norm of a
        program by ``lr * group_lasso * sqrt(n_members)`` after each optimiser step.
    nonnegative
        Keep decoder weights non-negative, so a high activity means high expression of the
        program's features.
    activity_anchor
        Weight of the anchor that ties each program's posterior-mean activity to its members'
        expression: ``activity_anchor * n_members * (1 - r)`` is added to the loss, where ``r``
        is the correlation, over the cells of a minibatch, between the activity and the mean
        standardised log-normalised expression of the program's members. It fixes the
        direction of every program (no sign flips, no hijacking by a few shared members), not
        its scale. ``0`` turns it off.
    feature_moments
        Mapping modality -> (mean, standard deviation) of each feature's log-normalised
        expression (``x > 0`` for Bernoulli modalities) in the training data, used to
        standardise the members in the ``"mean"`` anchor target; defaults to 0 and 1.
    anchor_target
        What each program's activity is anchored to. ``"joint"`` (default): in every cell, the
        program's coefficient in a least-squares fit of the cell's log-normalised expression,
        over all features, on the memberships of all annotated programs at once (with an
        intercept), as in decoupler's MLM: a member shared with another program counts for the
        program whose other members are high in that cell, so overlapping programs are told
        apart. A decoy program's target is its coefficient when it is added alone to that fit
        (its membership residualised on the annotated programs'), so that decoys stay
        exchangeable with annotated programs the data do not use. ``"mean"``: the mean
        standardised log-normalised expression of the members (:meth:`member_score`).
    anchor_ridge
        Scale of the ridge penalty of the ``"joint"`` fit. Program ``k``'s coefficient is
        penalised by ``anchor_ridge * n_members(k) * (VIF_k - 1)**2 * coef**2``, where
        ``VIF_k = 1 / (1 - R_k^2)`` and ``R_k^2`` is the share of its membership that the other
        programs explain: a program with members of its own keeps
        its least-squares coefficient (decoupler's MLM), one whose members other programs also
        hold, whose coefficient the fit cannot pin down, moves towards its members' summed
        expression. ``0`` is the plain least-squares fit. The default ``30.0`` keeps the joint
        fit's gain where marker programs have their own members (immune1k) and the members'
        sum where two marker programs share their defining genes (the two CD8 T programs of
        pbmc68k), measured in ``benchmarks/programs_real.py``.
    anchor_tvalue
        Anchor to the ``"joint"`` fit's t-values (each coefficient over its standard error in
        the cell, decoupler MLM's score; a decoy's in the fit it joins alone) instead of the
        coefficients. Off by default: on ``benchmarks/programs_real.py`` it raised the immune1k
        marker AUROC by 0.003-0.004 (the DC program: B and mast cells, which express a few of
        its members but fit poorly, count less) and lowered pbmc68k's by 0.003 (monocytes).
    anchor_hidden
        Let the anchor's gradient reach the encoder's hidden layers. ``False`` (default): the
        anchor trains only the encoder's output layer (each unit's row of the posterior mean),
        so the hidden layers, which every program and decoy reads, learn from the likelihood
        alone. On ``benchmarks/programs_real.py`` (3 seeds, hard and soft masks; pbmc68k,
        immune1k, cortex RNA and the simulator) the marker programs then separated their cell
        types at least as well as the best gene-set scorer in all 24 runs (``True``: 17 of 24),
        and the simulator's activities correlated 0.955-0.960 with the truth (``True``:
        0.915-0.923). When the anchor shapes the hidden layers, the decoys' random members get
        features of their own, which inflates the decoys' coherence (immune1k: median 0.078 vs
        0.028) and costs :meth:`~glassvi.model.ProgramVI.program_evidence` power; see
        :doc:`/programs`. A number in ``[0, 1]`` lets that share of the anchor's gradient
        reach the hidden layers (the output layer always gets all of it).
    anchor_modalities
        The modalities whose members' expression makes the anchor's target (``None``, the
        default: all of them, each by its ``modality_weights``). ``["rna"]`` leaves the
        accessibility of the peaks linked to a program's genes out of an RNA+ATAC model's
        target, which helps where those links are a weak readout of the programs. Measured on
        real SNARE-seq cortex (ProgramVI RNA+ATAC, 40 epochs, seeds 0/1/2, marker-program
        AUROC minus RNA alone; benchmarks/multiome.py): held-out lists +0.004 / +0.009 /
        -0.023 with ``["rna"]`` against -0.001 / +0.020 / +0.005 with both modalities; see
        :data:`~glassvi.module.MULTIOME_ATAC_WEIGHT`.
    n_decoys
        How many of the masks' programs, the last ones, are hidden decoy programs: trained like
        the others but left out of :meth:`loadings`, :meth:`latent_from_inputs`,
        :meth:`visible_units` and the classification head (see
        :meth:`glassvi.model.ProgramVI.program_evidence`).
    **kwargs
        Further keyword arguments of :class:`~glassvi.module.GlassVAE`.

    Examples
    --------
    >>> import torch
    >>> from glassvi.module import ProgramVAE
    >>> mask = torch.rand(50, 4) < 0.2
    >>> module = ProgramVAE({"rna": 50}, {"rna": "X"}, {"rna": "nb"}, {"rna": mask}, n_denovo=1)
    >>> module.n_latent
    5
    """

    _decoder_cls = ProgramDecoder
    _multiome_encoder = MULTIOME_ENCODER
    #: minibatch key of the anchor's targets when the data loader passes them, computed once
    #: before training (:meth:`anchor_score` depends on the data only); else computed per step
    anchor_target_key = "anchor_target"

    def __init__(
        self,
        n_features: Mapping[str, int],
        registry_keys: Mapping[str, str],
        likelihoods: Mapping[str, str],
        program_masks: Mapping[str, torch.Tensor],
        n_denovo: int = 0,
        mask_mode: str = "hard",
        soft_penalty: float = 0.5,
        group_lasso: float = 0.0,
        nonnegative: bool = True,
        activity_anchor: float = 0.0,
        feature_moments: Mapping[str, tuple] | None = None,
        n_decoys: int = 0,
        anchor_target: str = "joint",
        anchor_ridge: float = 30.0,
        anchor_tvalue: bool = False,
        anchor_hidden: bool | float = False,
        anchor_modalities: Sequence[str] | None = None,
        **kwargs,
    ):
        masks = {m: torch.as_tensor(program_masks[m], dtype=torch.bool) for m in n_features}
        sizes = {m: int(mask.shape[1]) for m, mask in masks.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"program masks have different numbers of programs: {sizes}.")
        if mask_mode not in ("hard", "soft"):
            raise ValueError(f"mask_mode must be 'hard' or 'soft', got {mask_mode!r}.")
        if min(n_denovo, soft_penalty, group_lasso, activity_anchor, anchor_ridge) < 0:
            raise ValueError(
                "n_denovo, soft_penalty, group_lasso, activity_anchor and anchor_ridge must be "
                ">= 0."
            )
        if anchor_target not in ANCHOR_TARGETS:
            raise ValueError(
                f"anchor_target must be one of {ANCHOR_TARGETS}, got {anchor_target!r}."
            )
        self_n_programs = next(iter(sizes.values()))
        kwargs.pop("n_latent", None)
        super().__init__(
            n_features,
            registry_keys,
            likelihoods,
            n_latent=self_n_programs + n_denovo,
            masks=masks,
            mask_mode=mask_mode,
            nonnegative=nonnegative,
            **kwargs,
        )
        self.n_programs = self_n_programs
        self.n_denovo = n_denovo
        self.mask_mode = mask_mode
        self.soft_penalty = float(soft_penalty)
        self.group_lasso = float(group_lasso)
        self.nonnegative = nonnegative
        sizes = sum(dec.mask_sizes() for dec in self.decoders.values())
        self.register_buffer("group_weights", torch.sqrt(sizes.clamp(min=1).float()))
        self.activity_anchor = float(activity_anchor)
        moments = dict(feature_moments or {})
        for mod, n in self.n_features.items():
            mean, sd = moments.get(mod, (torch.zeros(n), torch.ones(n)))
            # data statistics, recomputed from the registered data when a model is built, so
            # they are not part of the saved state (older saved models load unchanged)
            mean = torch.as_tensor(mean).float().reshape(n)
            sd = torch.as_tensor(sd).float().reshape(n)
            self.register_buffer(f"feature_mean_{mod}", mean, persistent=False)
            self.register_buffer(f"feature_sd_{mod}", sd, persistent=False)
        self.anchor_target = anchor_target
        anchor_modalities = list(
            self.modalities if anchor_modalities is None else anchor_modalities
        )
        unknown = sorted(set(anchor_modalities) - set(self.modalities))
        if unknown or not anchor_modalities:
            raise ValueError(
                f"anchor_modalities must name some of the modalities {self.modalities}, got "
                f"{anchor_modalities}."
            )
        self.anchor_modalities = anchor_modalities
        # not saved: rebuilt from the init parameters
        self.register_buffer(
            "anchor_weights",
            self.modality_weights
            * torch.tensor([float(m in anchor_modalities) for m in self.modalities]),
            persistent=False,
        )
        self.anchor_ridge = float(anchor_ridge)
        self.anchor_tvalue = bool(anchor_tvalue)
        share = float(anchor_hidden)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"anchor_hidden must be a bool or in [0, 1], got {anchor_hidden}.")
        self.anchor_hidden = anchor_hidden
        self.anchor_hidden_share = share
        if share < 1.0 and self.activity_anchor > 0:
            self._keep_detached_output()
        self._member_matrices: dict = {}
        self._member_indices: dict = {}
        self._joint_design_cache: tuple | None = None
        if not 0 <= n_decoys <= self.n_programs:
            raise ValueError(f"n_decoys must be in [0, n_programs], got {n_decoys}.")
        self.n_decoys = int(n_decoys)
        if self.n_decoys:
            self._hide_decoys_()

    def _keep_detached_output(self) -> None:
        """Have the encoder keep its posterior mean on detached hidden layers in training."""
        if isinstance(self.z_encoder, ModalityExpertsEncoder):
            self.z_encoder.keep_detached_output = True
        else:
            self.z_encoder.mean_encoder.register_forward_hook(_keep_detached_output)

    def _detached_output_holder(self) -> nn.Module:
        """Where the encoder keeps that posterior mean (see :meth:`_keep_detached_output`)."""
        if isinstance(self.z_encoder, ModalityExpertsEncoder):
            return self.z_encoder
        return self.z_encoder.mean_encoder

    # ------------------------------------------------------------------------- anchor
    def _member_matrix(self, mod: str) -> torch.Tensor:
        """Sparse ``(n_programs, n_features)`` 0/1 membership matrix of one modality."""
        dec = self.decoders[mod]
        device = dec.bias.device
        cached = self._member_matrices.get(mod)
        if cached is not None and cached.device == device:
            return cached
        if dec.indexed:
            rows, cols = dec.program_rows, dec.program_cols
        else:
            rows, cols = dec.program_mask.nonzero(as_tuple=True)
        matrix = torch.sparse_coo_tensor(
            torch.stack([cols, rows]),
            torch.ones(rows.numel(), device=device),
            (self.n_programs, dec.n_features),
            check_invariants=False,
        ).coalesce()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            # CSR: its product with a dense minibatch is ~3x faster than COO's
            matrix = matrix.to_sparse_csr()
        self._member_matrices[mod] = matrix
        return matrix

    def _member_sums(
        self, mod: str, y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n_cells: int
    ) -> torch.Tensor:
        """Sum of ``y`` over each program's members, per cell (cells x programs).

        ``y`` are the values of a minibatch at the entries (``rows``: cells, ``cols``:
        features) where it is not zero; each entry is added to the programs its feature belongs
        to, so the cost follows the entries and their memberships, not the features.
        """
        dec = self.decoders[mod]
        if dec.indexed:
            crow, n_members, programs = dec._crow, dec._n_members, dec.program_cols
        else:
            cached = self._member_indices.get(mod)
            if cached is None or cached[0].device != y.device:
                features, programs = dec.program_mask.nonzero(as_tuple=True)
                n_members = torch.bincount(features, minlength=dec.n_features)
                crow = torch.cat([n_members.new_zeros(1), torch.cumsum(n_members, 0)])
                cached = (crow, n_members, programs)
                self._member_indices[mod] = cached
            crow, n_members, programs = cached
        if kernels_apply(y):
            # entry by entry into the programs of its feature, without the (entry, membership)
            # index arrays of the torch path below; the same sums, added in the same order
            sums = _member_sums_kernel()(
                rows.numpy(),
                cols.numpy(),
                y.detach().numpy(),
                crow.cpu().numpy(),
                programs.cpu().numpy(),
                n_cells,
                self.n_programs,
            )
            return torch.from_numpy(sums)
        owner, entry = _feature_memberships(crow, n_members, cols)
        flat = rows.index_select(0, owner) * self.n_programs + programs.index_select(0, entry)
        sums = y.new_zeros(n_cells * self.n_programs).index_add_(0, flat, y.index_select(0, owner))
        return sums.view(n_cells, self.n_programs)

    def member_score(
        self,
        x: Mapping[str, torch.Tensor],
        nonzero: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Mean standardised log-normalised expression of each program's members, per cell.

        This is the gene-set score the activities are anchored to (cells x programs; 0 for a
        program without members). Members of each modality count by that modality's weight
        (``modality_weights``), and a modality of weight 0 is not read at all. ``nonzero``
        maps modalities to the flat positions of the non-zero counts of their minibatch (as
        the data loader passes them);
        the score is then computed from these entries only: a member's standardised value is
        ``(y - mean) / sd`` with ``y = 0`` at zero counts, so the sum over members is the sum of
        ``y / sd`` over the non-zero entries minus a constant per program.
        """
        nonzero = dict(nonzero or {})
        n_cells = next(iter(x.values())).shape[0]
        total = torch.zeros(n_cells, self.n_programs, device=self.group_weights.device)
        count = torch.zeros(self.n_programs, device=self.group_weights.device)
        for i, mod in enumerate(self.modalities):
            # a modality counts as much as it may shape the activities (modality_weights), if
            # the anchor reads it (anchor_modalities)
            weight = self.anchor_weights[i]
            if float(weight) == 0.0:
                continue
            binary = self.likelihoods[mod] == "bernoulli"
            mean = getattr(self, f"feature_mean_{mod}")
            sd = getattr(self, f"feature_sd_{mod}")
            members = self._member_matrix(mod)
            flat = nonzero.get(mod)
            if flat is None:
                y = normalised_log_expression(as_dense(x[mod]).float(), binary)
                y = (y - mean) / sd
                sums = torch.sparse.mm(members, y.T).T
            else:
                n_feat = x[mod].shape[-1]
                rows = _rows_of(flat, n_feat)
                cols = flat - rows * n_feat
                values = values_at(x[mod], flat).float()
                y = normalised_log_values(values, rows, n_cells, binary) / sd[cols]
                # members x (y / sd) over the non-zero entries, minus members x (mean / sd)
                offset = torch.sparse.mm(members, (mean / sd).unsqueeze(1)).squeeze(1)
                sums = self._member_sums(mod, y, rows, cols, n_cells) - offset
            total = total + weight * sums
            count = count + weight * self.decoders[mod].mask_sizes().to(total.dtype)
        return total / count.clamp(min=1.0)

    def anchor_score(
        self,
        x: Mapping[str, torch.Tensor],
        nonzero: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """The anchor's target for every program, per cell (see ``anchor_target``)."""
        if self.anchor_target == "mean":
            return self.member_score(x, nonzero)
        return self.joint_score(x, nonzero)

    def _scipy_members(self, mod: str) -> sp.csr_matrix:
        """The ``(n_programs, n_features)`` 0/1 membership matrix of one modality, in SciPy."""
        dec = self.decoders[mod]
        if dec.indexed:
            rows, cols = dec.program_rows, dec.program_cols
        else:
            rows, cols = dec.program_mask.nonzero(as_tuple=True)
        rows, cols = rows.cpu().numpy(), cols.cpu().numpy()
        return sp.csr_matrix(
            (np.ones(rows.size), (cols, rows)), shape=(self.n_programs, dec.n_features)
        )

    def _joint_design(self) -> tuple:
        """Inverse Gram matrix of [intercept, annotated programs], and the decoys' terms.

        Returns ``(inverse, cross, residual, gram, n_total)``: the (pseudo-)inverse of
        ``D^T W D + ridge`` for the design ``D`` (an intercept column and the annotated
        programs' memberships, all modalities stacked, ``W`` the modality weights),
        ``D^T W d`` for every decoy ``d`` (columns), each decoy's residual sum of squares
        ``d^T W d + ridge - (D^T W d)^T (D^T W D + ridge)^+ D^T W d``, ``D^T W D`` itself (only
        with ``anchor_tvalue``, else ``None``) and the intercept's entry ``sum(W)``. Computed
        once, in float64 on the CPU: the Gram matrix is built from the sparse memberships block
        by block, and pseudo-inverted in place (:func:`~glassvi.module._linalg.psd_pinv`), so
        that at most one ``(k + 1) x (k + 1)`` float64 array is held at a time.
        """
        device = self.group_weights.device
        cached = self._joint_design_cache
        if cached is not None and cached[0].device == device:
            if cached[3] is not None or not self.anchor_tvalue:
                return cached
        n_real = self.n_programs - self.n_decoys
        parts, n_total = [], 0.0
        for i, mod in enumerate(self.modalities):
            weight = float(self.anchor_weights[i])
            if weight != 0.0:
                parts.append((weight, self._scipy_members(mod)))
                n_total += weight * self.decoders[mod].n_features
        sizes = sum(w * np.asarray(m.sum(1)).ravel() for w, m in parts)
        sizes = np.zeros(self.n_programs) if isinstance(sizes, int) else sizes

        def gram_real(ridge: np.ndarray | None = None) -> np.ndarray:
            gram = np.zeros((n_real + 1, n_real + 1))
            gram[0, 0] = n_total
            gram[0, 1:] = gram[1:, 0] = sizes[:n_real]
            for weight, members in parts:
                real = members[:n_real]
                real_t = real.T.tocsr()
                for start in range(0, n_real, _GRAM_BLOCK):
                    stop = min(start + _GRAM_BLOCK, n_real)
                    block = (real[start:stop] @ real_t).toarray()
                    gram[start + 1 : stop + 1, 1:] += weight * block
            if ridge is not None:
                gram[np.diag_indices(n_real + 1)] += ridge[: n_real + 1]
            return gram

        cross = np.zeros((n_real + 1, self.n_decoys))
        cross[0] = sizes[n_real:]
        for weight, members in parts:
            cross[1:] += weight * (members[:n_real] @ members[n_real:].T).toarray()
        plain = psd_pinv(gram_real)
        ridge = self.anchor_ridge * _ridge_from_fit(
            sizes,
            sizes,
            n_total,
            1.0 / np.maximum(np.diagonal(plain)[1:], 1e-12),
            sizes[n_real:] - _quadratic_forms(plain, cross),
        )
        del plain
        inverse = psd_pinv(lambda: gram_real(ridge))
        own = sizes[n_real:] + ridge[n_real + 1 :]
        residual = np.maximum(own - _quadratic_forms(inverse, cross), 1e-6)
        cross = torch.from_numpy(cross).float().to(device)  # frees the float64 copy first
        inverse = torch.from_numpy(inverse.astype(np.float32)).to(device)
        gram = None
        if self.anchor_tvalue:
            gram = torch.from_numpy(gram_real().astype(np.float32)).to(device)
        self._joint_design_cache = (
            inverse,
            cross,
            torch.from_numpy(residual).float().to(device),
            gram,
            float(n_total),
        )
        return self._joint_design_cache

    def release_anchor_fit(self) -> None:
        """Free the joint fit's cached matrices (rebuilt from the masks when next needed).

        Examples
        --------
        >>> module.release_anchor_fit()  # once every cell's anchor target is known
        """
        self._joint_design_cache = None

    def joint_score(
        self,
        x: Mapping[str, torch.Tensor],
        nonzero: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Each program's coefficient in a joint fit of every cell's expression (cells x programs).

        Per cell, the log-normalised expression over all features (``x > 0`` for Bernoulli
        modalities; features weighted by their modality's weight) is fitted by least squares on
        an intercept and the memberships of the annotated programs; the annotated programs'
        coefficients are returned. A decoy's value is its coefficient when it is added alone to
        that fit (by Frisch-Waugh-Lovell: its membership residualised on the annotated design).
        ``nonzero`` is as in :meth:`member_score`.
        """
        nonzero = dict(nonzero or {})
        n_cells = next(iter(x.values())).shape[0]
        device = self.group_weights.device
        rhs = torch.zeros(n_cells, self.n_programs + 1, device=device)
        sq = torch.zeros(n_cells, device=device)
        for i, mod in enumerate(self.modalities):
            weight = self.anchor_weights[i]
            if float(weight) == 0.0:
                continue
            binary = self.likelihoods[mod] == "bernoulli"
            flat = nonzero.get(mod)
            if flat is None:
                y = normalised_log_expression(as_dense(x[mod]).float(), binary)
                sums = torch.sparse.mm(self._member_matrix(mod), y.T).T
                total = y.sum(-1)
                sq_mod = (y * y).sum(-1)
            else:
                n_feat = x[mod].shape[-1]
                rows = _rows_of(flat, n_feat)
                cols = flat - rows * n_feat
                values = values_at(x[mod], flat).float()
                y = normalised_log_values(values, rows, n_cells, binary)
                sums = self._member_sums(mod, y, rows, cols, n_cells)
                total = y.new_zeros(n_cells).index_add_(0, rows, y)
                sq_mod = y.new_zeros(n_cells).index_add_(0, rows, y * y)
            sq += weight * sq_mod
            rhs[:, 0] += weight * total
            rhs[:, 1:] += weight * sums
        inverse, cross, residual, gram, n_total = self._joint_design()
        n_real = self.n_programs - self.n_decoys
        coef = rhs[:, : n_real + 1] @ inverse
        decoys = (rhs[:, n_real + 1 :] - coef @ cross) / residual if self.n_decoys else None
        if self.anchor_tvalue:
            # t-values, as decoupler's MLM: each coefficient over its standard error, from the
            # cell's residual variance; a cell whose expression the programs fit poorly (a
            # type that expresses a few members of a program, but not the rest) counts less
            rss = sq - 2 * (coef * rhs[:, : n_real + 1]).sum(-1) + ((coef @ gram) * coef).sum(-1)
            sigma = (rss.clamp(min=1e-6) / max(n_total - n_real - 1, 1.0)).sqrt().unsqueeze(1)
            if decoys is not None:
                # a decoy's t-value in the fit it joins alone: one more column, less residual
                rss_decoy = (rss.unsqueeze(1) - decoys**2 * residual).clamp(min=1e-6)
                df = max(n_total - n_real - 2, 1.0)
                decoys = decoys * (residual * df / rss_decoy).sqrt()
            coef = coef / (sigma * torch.diagonal(inverse).clamp(min=1e-12).sqrt())
        if decoys is None:
            return coef[:, 1:]
        return torch.cat([coef[:, 1:], decoys], dim=1)

    def anchor_inputs(self, tensors: dict) -> tuple[dict, dict]:
        """A minibatch's counts and non-zero positions by modality, as :meth:`anchor_score` reads.

        Parameters
        ----------
        tensors
            Minibatch as the data loader passes it (registry key -> tensor).

        Returns
        -------
        ``(x, nonzero)``: modality -> counts, and modality -> flat positions of the non-zero
        counts (``None`` where the loader passes none).

        Examples
        --------
        >>> score = module.anchor_score(*module.anchor_inputs(batch))
        """
        x = {mod: tensors[key] for mod, key in self.registry_keys.items()}
        nonzero = {mod: tensors.get(nonzero_key(key)) for mod, key in self.registry_keys.items()}
        return x, nonzero

    def anchor_penalty(self, tensors: dict, activity: torch.Tensor) -> torch.Tensor:
        """Anchor term of the loss for a minibatch (see ``activity_anchor``).

        The targets are read from ``tensors[anchor_target_key]`` where the data loader passes
        them, else computed from the minibatch (:meth:`anchor_score`).
        """
        score = tensors.get(self.anchor_target_key)
        if score is None:
            score = self.anchor_score(*self.anchor_inputs(tensors))
        start = min(self.n_frozen, self.n_programs)
        weights = self.activity_anchor * self.group_weights[start:] ** 2
        return anchor_loss(activity[:, start : self.n_programs], score[:, start:], weights)

    def loss(self, tensors, inference_outputs, generative_outputs, kl_weight: float = 1.0):
        """ELBO loss of :class:`~glassvi.module.GlassVAE` plus the activity anchor."""
        out = super().loss(tensors, inference_outputs, generative_outputs, kl_weight)
        if self.activity_anchor <= 0 or self.n_frozen >= self.n_programs:
            return out
        activity = inference_outputs["qz"].loc
        share = self.anchor_hidden_share
        if share < 1.0:
            # the same posterior means, with the gradient path into the hidden layers scaled
            holder = self._detached_output_holder()
            kept = holder.__dict__.pop("output_on_detached_input", None)
            kept = activity.detach() if kept is None else kept
            activity = kept if share == 0.0 else kept + share * (activity - kept)
        penalty = self.anchor_penalty(tensors, activity)
        out.loss = out.loss + penalty
        extra = dict(out.extra_metrics or {})
        extra["activity_anchor"] = penalty.detach()
        out.extra_metrics = extra
        return out

    @torch.no_grad()
    def _hide_decoys_(self) -> None:
        """Classifier over the visible units; initial weights on the scale without decoys."""
        n_visible = self.n_latent - self.n_decoys
        if self.classifier is not None:
            old = self.classifier
            self.classifier = nn.Linear(n_visible, old.out_features, device=old.weight.device)
        # the decoders draw initial weights on a 1 / sqrt(n_latent) scale: the hidden decoys
        # must not make the annotated programs start smaller than they would without them
        factor = math.sqrt(self.n_latent / max(n_visible, 1))
        for dec in self.decoders.values():
            dec.weight.mul_(factor)
            if dec.indexed:
                dec.program_values.mul_(factor)
            else:
                dec.program_weight.mul_(factor)

    def visible_units(self) -> torch.Tensor:
        """Indices of the latent units outside the module: programs and de novo, no decoys."""
        n_real = self.n_programs - self.n_decoys
        device = self.group_weights.device
        return torch.cat(
            [
                torch.arange(n_real, device=device),
                torch.arange(self.n_programs, self.n_latent, device=device),
            ]
        )

    def classifier_input(self, z: torch.Tensor) -> torch.Tensor:
        """The visible latent units (decoys are left out of the classification head)."""
        return z[..., self.visible_units()] if self.n_decoys else z

    def loadings(self, modality: str) -> torch.Tensor:
        """Decoder weights (features x visible latent units) of one modality."""
        full = super().loadings(modality)
        return full[:, self.visible_units()] if self.n_decoys else full

    def latent_from_inputs(self, inputs, *covariates) -> torch.Tensor:
        """Posterior mean of the visible latent units from attribution inputs."""
        return self.classifier_input(super().latent_from_inputs(inputs, *covariates))

    @property
    def n_frozen(self) -> int:
        """Number of leading latent units whose decoder weights are fixed."""
        return next(iter(self.decoders.values())).n_frozen

    @n_frozen.setter
    def n_frozen(self, value: int) -> None:
        for dec in self.decoders.values():
            dec.n_frozen = int(value)

    @torch.no_grad()
    def constrain_(self, lr: float | None = None) -> None:
        """Projection and proximal steps after an optimiser step with learning rate ``lr``."""
        lr = 1e-3 if lr is None else float(lr)
        for dec in self.decoders.values():
            if self.mask_mode == "soft":
                dec.soft_threshold_(lr * self.soft_penalty)
            dec.project_()
        if self.group_lasso > 0:
            norms = torch.sqrt(sum(dec.column_sq_norms() for dec in self.decoders.values()))
            threshold = lr * self.group_lasso * self.group_weights
            factor = (1.0 - threshold / norms.clamp(min=1e-12)).clamp(min=0.0)
            for dec in self.decoders.values():
                dec.scale_programs_(factor)

    def program_norms(self) -> torch.Tensor:
        """Norm of each latent unit's decoder weights over all modalities."""
        norms = []
        for dec in self.decoders.values():
            prog = dec.column_sq_norms()
            denovo = (dec.weight.detach() ** 2).sum(0)
            norms.append(torch.cat([prog.detach(), denovo]))
        return torch.sqrt(sum(norms))

    @staticmethod
    def mask_from_state(
        state: Mapping[str, torch.Tensor], role: str, shape: tuple[int, int]
    ) -> np.ndarray | None:
        """Features x programs mask of modality ``role`` in a saved state dict of this class.

        ``None`` when the state has another number of programs than ``shape[1]``.
        """
        return program_mask_from_state(state, role, shape)

    @torch.no_grad()
    def add_denovo_(self, n_new: int) -> None:
        """Append ``n_new`` trainable de novo units; the existing units are kept fixed.

        The encoder gets new output rows (mean and variance) for the new units, and every
        decoder new columns. Gradients of the existing rows and columns are zeroed by hooks.
        """
        if n_new <= 0:
            return
        n_old = self.n_latent
        for encoder in self._encoder_parts().values():
            for name in ("mean_encoder", "var_encoder"):
                old = getattr(encoder, name)
                new = nn.Linear(old.in_features, n_old + n_new, device=old.weight.device)
                new.weight[:n_old] = old.weight
                new.bias[:n_old] = old.bias
                # start the new units near the prior (small mean, unit variance)
                new.weight[n_old:] *= 0.1
                new.bias[n_old:] = 0.0
                for param in (new.weight, new.bias):
                    param.requires_grad_(True)
                    param.register_hook(freeze_rows_hook(n_old))
                setattr(encoder, name, new)
        for dec in self.decoders.values():
            dec.add_denovo_(n_new)
            dec.weight.requires_grad_(True)
            dec.weight.register_hook(freeze_columns_hook(n_old - dec.n_programs))
        if self.classifier is not None:
            old = self.classifier
            n_seen = old.in_features  # the classifier reads the visible units only
            new = nn.Linear(n_seen + n_new, old.out_features, device=old.weight.device)
            new.weight.zero_()
            new.weight[:, :n_seen] = old.weight
            new.bias.copy_(old.bias)
            new.requires_grad_(False)
            self.classifier = new
        self.n_latent += n_new
        self.n_denovo += n_new
        self.z_encoder.n_output = self.n_latent
        if self.anchor_hidden_share < 1.0 and self.activity_anchor > 0:
            self._keep_detached_output()

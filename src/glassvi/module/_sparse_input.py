"""Encoder whose first layer reads sparse inputs at their non-zero entries.

A multiome encoder's input is mostly binarised accessibility: tens of thousands of peak
columns of which well under 1% are non-zero in a cell. Multiplying that dense input by the
first layer's weight costs cells x features x hidden units forward and the same again for the
weight's gradient. Here the first layer adds, for every non-zero entry, its value times the
weight column of its feature (a gather forward, a scatter-add backward), so its cost follows
the non-zeros. Dense inputs (log counts of RNA, continuous covariates) are multiplied as
before, and categorical covariates add the weight column of their category instead of being
concatenated as one-hot columns.

The weight keeps its shape, name and meaning (``n_hidden x n_input``, columns: features, then
covariates), so saved models, scvi-tools' reference-mapping surgery and every dense caller
(attribution on dense inputs) are unchanged. It is stored feature-major (its transpose is
contiguous) when the encoder reads sparse inputs: each feature's weights are then one
contiguous row to gather and to scatter the gradient into.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scvi.nn import Encoder
from torch import nn
from torch.distributions import Normal
from torch.nn import functional as F

from .._compiled import kernels_apply


class SparseBlock(NamedTuple):
    """Non-zero entries of a block of encoder input columns (one minibatch).

    ``rows`` (sorted) and ``cols`` index the entries within the block; ``values`` are their
    input values, ``None`` when every listed entry is 1 (binarised accessibility).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor | None
    n_rows: int
    n_cols: int

    @classmethod
    def from_positions(
        cls,
        counts: torch.Tensor,
        positions: torch.Tensor,
        binarise: bool,
        values: torch.Tensor | None = None,
    ) -> SparseBlock:
        """The entries of ``counts`` at flat (row-major) ``positions``, e.g. from the loader.

        With ``binarise=True`` the block holds the ones of ``counts > 0`` (positions of stored
        zeros are dropped). ``values`` are ``counts`` at ``positions``, when already read.
        """
        n_rows, n_cols = counts.shape
        if values is None:
            values = counts.reshape(-1).take(positions)
        if binarise:
            ones = values > 0
            if not bool(ones.all()):
                positions = positions[ones]
            values = None
        rows = _rows_of(positions, n_cols)
        return cls(rows, positions - rows * n_cols, values, n_rows, n_cols)

    def entry_values(self) -> torch.Tensor:
        """Value of every listed entry."""
        if self.values is not None:
            return self.values
        return torch.ones(self.rows.shape, device=self.rows.device)

    def row_starts(self) -> torch.Tensor:
        """Index of the first entry of each row (``rows`` is sorted)."""
        counts = torch.bincount(self.rows, minlength=self.n_rows)
        return torch.cumsum(counts, 0) - counts

    def to_dense(self) -> torch.Tensor:
        """The block as a dense ``(n_rows, n_cols)`` tensor."""
        values = self.entry_values()
        out = values.new_zeros(self.n_rows * self.n_cols)
        out.index_put_((self.rows * self.n_cols + self.cols,), values, accumulate=True)
        return out.view(self.n_rows, self.n_cols)


#: one block of encoder input columns: dense values or the non-zero entries of a sparse block
InputBlock = torch.Tensor | SparseBlock


def dense_input(blocks: Sequence[InputBlock]) -> torch.Tensor:
    """The encoder input that ``blocks`` describe, as one dense tensor.

    Examples
    --------
    >>> block = SparseBlock.from_positions(torch.eye(2), torch.tensor([0, 3]), binarise=True)
    >>> dense_input([torch.ones(2, 1), block])
    tensor([[1., 1., 0.],
            [1., 0., 1.]])
    """
    parts = [b.to_dense() if isinstance(b, SparseBlock) else b for b in blocks]
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _columns_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight.t()`` as a contiguous tensor (free when the weight is stored feature-major)."""
    wt = weight.t()
    return wt if wt.is_contiguous() else wt.contiguous()


def _rows_of(flat: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Row of each flat (row-major) position in a matrix of ``n_cols`` columns.

    ``flat // n_cols``, by NumPy on the CPU (torch's integer division is several times slower
    there: 23 vs 6 us for a minibatch's 13,000 ATAC entries).

    Examples
    --------
    >>> _rows_of(torch.tensor([0, 4, 5]), 3).tolist()
    [0, 1, 1]
    """
    if flat.device.type == "cpu" and flat.dtype == torch.int64:
        return torch.from_numpy(flat.numpy() // n_cols)
    return torch.div(flat, n_cols, rounding_mode="floor")


def _argsort(index: torch.Tensor) -> torch.Tensor:
    """An order that sorts ``index`` (not stable; NumPy's sort is the faster one on CPU)."""
    if index.device.type == "cpu":
        return torch.from_numpy(np.argsort(index.numpy()))
    return torch.argsort(index)


class _BlockLinear(torch.autograd.Function):
    """``cat(blocks + one-hot categories) @ weight.T + bias`` without building the input.

    Forward, each sparse entry adds its value times its feature's weights (``embedding_bag``
    over the rows of the feature-major weight). Backward, the weight's gradient of a feature
    sums the output gradients of the cells in which it is non-zero: the same ``embedding_bag``
    with the roles of cells and features swapped (entries ordered by feature), which writes
    the gradient once instead of zero-filling it and scattering into it. The gradient is taken
    with respect to the weight and bias only (inputs are data).
    """

    @staticmethod
    def forward(ctx, weight, bias, blocks, categories):
        out = _block_forward(_columns_major(weight), bias, blocks, categories)
        ctx.blocks = blocks
        ctx.categories = categories
        ctx.has_bias = bias is not None
        ctx.weight_shape = weight.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_weight = _weight_grad(grad.contiguous(), ctx.blocks, ctx.categories)
            # the transpose of a contiguous tensor: the gradient has the feature-major layout
            grad_weight = grad_weight.t()
            if tuple(grad_weight.shape) != tuple(ctx.weight_shape):
                raise RuntimeError("internal error: weight gradient of the wrong shape")
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_bias = grad.sum(0)
        return grad_weight, grad_bias, None, None


class _BlockLinearRows(torch.autograd.Function):
    """:class:`_BlockLinear` on the feature-major weight, with a row-sparse weight gradient.

    The weight argument is the contiguous ``(n_input, n_hidden)`` transpose of the layer's
    weight. Its gradient is a sparse tensor holding only the rows that the minibatch reaches
    (features with an entry in a sparse block, every column of a dense block, categories
    present), as :class:`torch.nn.Embedding` with ``sparse=True`` gives: the other rows'
    gradient is zero and is neither written nor read. With a ``sink`` (a list), the gradient
    is not formed: its :class:`RowGradientFactors` are appended to the sink instead, for an
    optimiser that sums each row while it updates it, and the weight gets no gradient.
    """

    @staticmethod
    def forward(ctx, weight_t, bias, blocks, categories, sink=None):
        out = _block_forward(weight_t, bias, blocks, categories)
        ctx.blocks = blocks
        ctx.categories = categories
        ctx.has_bias = bias is not None
        ctx.weight_t_shape = tuple(weight_t.shape)
        ctx.sink = sink
        return out

    @staticmethod
    def backward(ctx, grad):
        grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            factors = _row_gradient_factors(grad.contiguous(), ctx.blocks, ctx.categories)
            if ctx.sink is not None:
                ctx.sink.append(factors)
            else:
                grad_weight = factors.to_sparse()
        if ctx.has_bias and ctx.needs_input_grad[1]:
            grad_bias = grad.sum(0)
        return grad_weight, grad_bias, None, None, None


class RowGradientFactors(NamedTuple):
    """The row-sparse gradient of a feature-major weight, as the factors it sums.

    Rows ``index`` (sorted) have the gradient ``rows`` (columns of dense input blocks); each
    entry ``e`` of the sparse blocks and categories adds ``weights[e] * grad[cells[e]]``
    (weight 1 when ``weights`` is ``None``) to row ``columns[e]``, a row not in ``index``.
    ``shape`` is the weight's.
    """

    index: torch.Tensor
    rows: torch.Tensor
    cells: torch.Tensor
    columns: torch.Tensor
    weights: torch.Tensor | None
    grad: torch.Tensor
    shape: tuple[int, int]

    def row_sums(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted, distinct indices of the rows reached and their gradient rows."""
        index, parts = [self.index], [self.rows]
        if self.cells.numel():
            touched, rows = _entry_rows_sum(
                self.cells, self.columns, self.weights, self.grad, self.shape[0]
            )
            index.append(touched)
            parts.append(rows)
        if not self.index.numel():
            # (torch.cat copies even a single tensor: the rows are most of the gradient's bytes)
            return index[-1], parts[-1]
        if len(parts) == 1:
            return self.index, self.rows
        # dense blocks and sparse/category rows interleave in column order
        index, rows = torch.cat(index), torch.cat(parts)
        order = _argsort(index)
        return index[order], rows[order]

    def to_sparse(self) -> torch.Tensor:
        """The gradient as a coalesced sparse tensor of the rows reached."""
        index, rows = self.row_sums()
        return torch.sparse_coo_tensor(
            index.unsqueeze(0), rows, self.shape, check_invariants=False, is_coalesced=True
        )


def _block_forward(wt: torch.Tensor, bias, blocks, categories) -> torch.Tensor:
    """``cat(blocks + one-hot categories) @ wt + bias`` for the feature-major weight ``wt``."""
    n_rows = _n_rows(blocks, categories)
    if bias is None:
        out = wt.new_zeros(n_rows, wt.shape[1])
    else:
        out = bias.expand(n_rows, -1).clone()
    offset = 0
    for block in blocks:
        if isinstance(block, SparseBlock):
            if block.rows.numel():
                out += F.embedding_bag(
                    block.cols + offset,
                    wt,
                    block.row_starts(),
                    mode="sum",
                    per_sample_weights=block.values,
                )
            offset += block.n_cols
        else:
            out.addmm_(block, wt[offset : offset + block.shape[-1]])
            offset += block.shape[-1]
    for codes, n_cat in categories:
        out += wt.index_select(0, codes + offset)
        offset += n_cat
    if offset != wt.shape[0]:
        raise ValueError(f"the input blocks cover {offset} columns, the weight {wt.shape[0]}.")
    return out


def _weight_entries(grad: torch.Tensor, blocks, categories):
    """The weight rows each cell reaches: sparse entries and category codes, plus dense blocks.

    Returns ``(cells, columns, values, dense, n_columns)``: per sparse block or categorical
    covariate, the cells, weight rows (offset into the concatenated input) and values (None
    for categories, whose value is one); ``dense`` holds ``(offset, block)`` pairs.
    """
    n_rows = grad.shape[0]
    cells, columns, values, dense = [], [], [], []
    offset = 0
    for block in blocks:
        if isinstance(block, SparseBlock):
            cells.append(block.rows)
            columns.append(block.cols + offset)
            values.append(block.values)
            offset += block.n_cols
        else:
            dense.append((offset, block))
            offset += block.shape[-1]
    for codes, n_cat in categories:
        cells.append(torch.arange(n_rows, device=grad.device))
        columns.append(codes + offset)
        values.append(None)
        offset += n_cat
    return cells, columns, values, dense, offset


def _weight_grad(grad: torch.Tensor, blocks, categories) -> torch.Tensor:
    """Gradient of the feature-major weight, ``(n_input, n_hidden)``."""
    cells, columns, values, dense, offset = _weight_entries(grad, blocks, categories)
    if cells:
        columns = torch.cat(columns)
        order = _argsort(columns)
        counts = torch.bincount(columns, minlength=offset)
        weights = None
        if any(v is not None for v in values):
            weights = torch.cat(
                [grad.new_ones(c.shape) if v is None else v for c, v in zip(cells, values)]
            )[order]
        grad_wt = F.embedding_bag(
            torch.cat(cells)[order],
            grad,
            torch.cumsum(counts, 0) - counts,
            mode="sum",
            per_sample_weights=weights,
        )
    else:
        grad_wt = grad.new_zeros(offset, grad.shape[1])
    for start, block in dense:
        torch.mm(block.t(), grad, out=grad_wt[start : start + block.shape[-1]])
    return grad_wt


def _row_gradient_factors(grad: torch.Tensor, blocks, categories) -> RowGradientFactors:
    """The feature-major weight gradient's factors: dense-block rows and the reached entries.

    Features of sparse blocks without an entry (and categories no cell has) are not reached;
    columns of dense blocks are all listed.
    """
    cells, columns, values, dense, offset = _weight_entries(grad, blocks, categories)
    empty = torch.zeros(0, dtype=torch.int64, device=grad.device)
    index = [torch.arange(start, start + b.shape[-1], device=grad.device) for start, b in dense]
    parts = [b.t() @ grad for _, b in dense]
    if len(parts) > 1:
        index, parts = [torch.cat(index)], [torch.cat(parts)]
    weights = None
    if cells and any(v is not None for v in values):
        weights = torch.cat(
            [grad.new_ones(c.shape) if v is None else v for c, v in zip(cells, values)]
        )
    return RowGradientFactors(
        index[0] if index else empty,
        parts[0] if parts else grad.new_zeros(0, grad.shape[1]),
        (torch.cat(cells) if len(cells) > 1 else cells[0]) if cells else empty,
        (torch.cat(columns) if len(columns) > 1 else columns[0]) if cells else empty,
        weights,
        grad,
        (offset, grad.shape[1]),
    )


def _entry_rows_sum(cells, columns, weights, grad: torch.Tensor, n_columns: int):
    """Distinct sorted ``columns`` and, for each, the sum of ``weights * grad[cells]`` rows."""
    if kernels_apply(grad):
        touched, rows = _rows_kernel()(
            cells.numpy(),
            columns.numpy(),
            np.zeros(0, np.float32) if weights is None else weights.detach().numpy(),
            grad.detach().numpy(),
            n_columns,
        )
        return torch.from_numpy(touched), torch.from_numpy(rows)
    order = _argsort(columns)
    counts = torch.bincount(columns, minlength=n_columns)
    touched = counts.nonzero().squeeze(1)
    counts = counts[touched]
    rows = F.embedding_bag(
        cells[order],
        grad,
        torch.cumsum(counts, 0) - counts,
        mode="sum",
        per_sample_weights=None if weights is None else weights[order],
    )
    return touched, rows


_ROWS_KERNEL = None


def _rows_kernel():
    """Compiled row sums of :func:`_entry_rows_sum` (numba, built on first use)."""
    global _ROWS_KERNEL
    if _ROWS_KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _add_row(out, row, weight):
            for j in range(out.shape[0]):
                out[j] += weight * row[j]

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _rows_sum(cells, columns, weights, grad, n_columns):
            seen = np.zeros(n_columns, np.bool_)
            for c in columns:
                seen[c] = True
            position = np.empty(n_columns, np.int64)
            n_touched = 0
            for c in range(n_columns):
                position[c] = n_touched
                n_touched += seen[c]
            touched = np.empty(n_touched, np.int64)
            for c in range(n_columns):
                if seen[c]:
                    touched[position[c]] = c
            out = np.zeros((n_touched, grad.shape[1]), np.float32)
            weighted = weights.shape[0] > 0
            for e in range(cells.shape[0]):
                w = weights[e] if weighted else np.float32(1.0)
                _add_row(out[position[columns[e]]], grad[cells[e]], w)
            return touched, out

        _ROWS_KERNEL = _rows_sum
    return _ROWS_KERNEL


def _n_rows(blocks, categories) -> int:
    for block in blocks:
        return block.n_rows if isinstance(block, SparseBlock) else block.shape[0]
    return categories[0][0].shape[0]


def block_linear(
    linear: nn.Linear,
    blocks: Sequence[InputBlock],
    categories: Sequence[tuple[torch.Tensor, int]] = (),
) -> torch.Tensor:
    """``linear`` applied to the concatenated ``blocks`` and one-hot ``categories``.

    Equals ``linear(torch.cat([dense_input(blocks), *one_hots], -1))`` up to float rounding,
    with a cost that follows the non-zero entries of sparse blocks.

    Parameters
    ----------
    linear
        The layer; its input columns are the blocks' columns in order, then the categories'.
    blocks
        Dense tensors and :class:`SparseBlock` s, in column order.
    categories
        ``(codes, n_categories)`` of each categorical covariate, in column order; ``codes``
        holds one integer category per row.

    Returns
    -------
    Output of the layer, shape ``(n_rows, linear.out_features)``.

    Examples
    --------
    >>> layer = nn.Linear(3 + 2, 4)
    >>> block = SparseBlock.from_positions(torch.eye(3), torch.tensor([0, 4, 8]), True)
    >>> block_linear(layer, [block], [(torch.tensor([0, 1, 1]), 2)]).shape
    torch.Size([3, 4])
    """
    return _BlockLinear.apply(linear.weight, linear.bias, list(blocks), list(categories))


class SparseInputEncoder(Encoder):
    """:class:`scvi.nn.Encoder` that also takes its input as blocks with sparse ones.

    ``forward(x, *cat_list)`` with a tensor ``x`` is scvi-tools' encoder unchanged. With a list
    of input blocks (dense tensors and :class:`SparseBlock` s, in column order) the first layer
    is computed by :func:`block_linear` and the rest as in scvi-tools; the result equals the
    dense forward on :func:`dense_input` ``(blocks)`` up to float rounding, and the same
    dropout masks are drawn.

    Parameters
    ----------
    *args
        Arguments of :class:`scvi.nn.Encoder`.
    feature_major
        Store the first layer's weight feature-major (its transpose contiguous), which makes
        gathering and scattering per-feature weights fast. Shape, values and state-dict
        entries are unchanged.
    **kwargs
        Keyword arguments of :class:`scvi.nn.Encoder`.

    Examples
    --------
    >>> enc = SparseInputEncoder(5, 2, n_cat_list=[3], return_dist=True, feature_major=True)
    >>> block = SparseBlock.from_positions(torch.eye(5)[:2], torch.tensor([0, 6]), True)
    >>> qz, z = enc([block], torch.tensor([[0], [2]]))
    >>> qz.loc.shape
    torch.Size([2, 2])
    """

    def __init__(self, *args, feature_major: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if feature_major:
            first = self.first_linear
            first.weight = nn.Parameter(first.weight.detach().t().contiguous().t())

    def set_row_gradient_weight(
        self, weight_t: torch.Tensor | None, factored: bool = False
    ) -> None:
        """Give the first layer's weight gradient by rows, to ``weight_t``, or stop (``None``).

        ``weight_t`` is a leaf tensor sharing the storage of the feature-major weight's
        transpose (shape ``(n_input, n_hidden)``), as an optimiser that updates the weight by
        rows holds it. While it is set, a forward pass on input blocks with gradients enabled
        computes the first layer from ``weight_t``, whose gradient is then a sparse tensor of
        the rows the minibatch reaches (the weight itself gets none). Dense inputs, and a
        weight with gradient hooks (e.g. frozen columns in reference mapping), keep the dense
        gradient of the weight.

        With ``factored=True`` the row gradient is not formed: each backward pass appends its
        :class:`RowGradientFactors` to the list ``weight_t.row_gradient_factors``, and
        ``weight_t`` gets no gradient; an optimiser that reads that list (the training plan's
        lazy Adam) sums each row as it updates it and empties the list.
        """
        previous = self.__dict__.get("_row_gradient_weight")
        if previous is not None and hasattr(previous, "row_gradient_factors"):
            del previous.row_gradient_factors
        if weight_t is not None:
            weight = self.first_linear.weight
            if tuple(weight_t.shape) != tuple(weight.t().shape) or (
                weight_t.data_ptr() != weight.data_ptr()
            ):
                raise ValueError("weight_t must share the storage of the weight's transpose.")
            if factored:
                weight_t.row_gradient_factors = []
        # a plain attribute: assigning a Parameter through nn.Module would register it
        self.__dict__["_row_gradient_weight"] = weight_t

    def _rows_weight(self) -> torch.Tensor | None:
        """The tensor to take the first layer's row-sparse gradient, when it applies now."""
        weight_t = self.__dict__.get("_row_gradient_weight")
        if weight_t is None or not torch.is_grad_enabled():
            return None
        weight = self.first_linear.weight
        if weight._backward_hooks or weight_t.data_ptr() != weight.data_ptr():
            return None
        return weight_t

    @property
    def first_linear(self) -> nn.Linear:
        """The first layer's linear map (input columns: features, then covariates)."""
        return self.encoder.fc_layers[0][0]

    def forward(self, x, *cat_list):
        """Posterior of the latent units from a dense tensor or a list of input blocks."""
        if isinstance(x, torch.Tensor):
            return super().forward(x, *cat_list)
        q = self._hidden_from_blocks(list(x), cat_list)
        q_m = self.mean_encoder(q)
        q_v = self.var_activation(self.var_encoder(q)) + self.var_eps
        dist = Normal(q_m, q_v.sqrt())
        latent = self.z_transformation(dist.rsample())
        if self.return_dist:
            return dist, latent
        return q_m, q_v, latent

    def _hidden_from_blocks(self, blocks: list, cat_list) -> torch.Tensor:
        fc = self.encoder
        covariates = [
            (n_cat, cat) for n_cat, cat in zip(fc.n_cat_list, cat_list, strict=False) if n_cat > 1
        ]
        if len(fc.n_cat_list) > len(cat_list) or any(
            cat is None or cat.size(1) == n_cat for n_cat, cat in covariates
        ):
            # missing or already one-hot categories: scvi-tools' own checks and concatenation
            return self.encoder(dense_input(blocks), *cat_list)
        categories = [(cat.reshape(-1).long(), n_cat) for n_cat, cat in covariates]
        for i, layers in enumerate(fc.fc_layers):
            for j, layer in enumerate(layers):
                if layer is None:
                    continue
                if i == 0 and j == 0:
                    weight_t = self._rows_weight()
                    if weight_t is None:
                        h = block_linear(layer, blocks, categories)
                    else:
                        sink = getattr(weight_t, "row_gradient_factors", None)
                        h = _BlockLinearRows.apply(weight_t, layer.bias, blocks, categories, sink)
                    continue
                if isinstance(layer, nn.Linear) and fc.inject_into_layer(i):
                    one_hots = [F.one_hot(codes, n).to(h.dtype) for codes, n in categories]
                    h = torch.cat((h, *one_hots), dim=-1)
                h = layer(h)
        return h

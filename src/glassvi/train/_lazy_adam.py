"""Adam whose step on a row-sparse gradient touches only the rows it lists ("lazy" Adam).

The encoder's first layer has one weight row per input feature. With tens of thousands of
rarely open peaks, a minibatch reaches only a fraction of them, and its gradient is zero on
the other rows. Exact Adam still moves every row at every step (its momentum decays), so its
cost follows the number of peaks. Lazy Adam, as :class:`torch.optim.SparseAdam` and
TensorFlow's ``LazyAdamOptimizer``, updates the moments and values of the listed rows only;
it is the usual optimiser of embedding tables. Here the listed rows are updated in one fused
pass (a compiled loop: one read and write of each row's value and moments), every other
parameter takes torch's Adam step. The encoder can also hand over its gradient unformed, as
the entries and output gradient whose products it sums (``row_gradient_factors``): each row's
gradient is then summed in a small buffer just before the row is updated, so that the
gradient rows are never written out and read back.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._compiled import prefetch_intrinsic

_KERNELS = None


def _row_kernel():
    """The compiled row update, built on first use (numba; cached on disk where possible)."""
    return _kernels()[0]


def _factored_kernel():
    """The compiled update from gradient factors, built on first use."""
    return _kernels()[1]


#: rows ahead of the one being updated whose value and moments are prefetched
_PREFETCH_ROWS = 8


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        import numba

        prefetch = prefetch_intrinsic()
        ahead = _PREFETCH_ROWS

        # error_model="numpy": no division-by-zero checks, so the inner loop vectorises
        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _update_row(param, exp_avg, exp_avg_sq, grad, beta1, beta2, c1, c2, step, scale, eps):
            for j in range(param.shape[0]):
                g = grad[j]
                m = exp_avg[j] * beta1 + c1 * g
                v = exp_avg_sq[j] * beta2 + c2 * g * g
                exp_avg[j] = m
                exp_avg_sq[j] = v
                param[j] -= step * m / (np.sqrt(v) * scale + eps)

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _prefetch_row(param, exp_avg, exp_avg_sq, r):
            # the rows are far apart: without this, each one waits for memory three times
            n = param.shape[1]
            for j in range(r * n, (r + 1) * n, 16):
                prefetch(param, j)
                prefetch(exp_avg, j)
                prefetch(exp_avg_sq, j)

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _update_rows(
            param, exp_avg, exp_avg_sq, index, grad, beta1, beta2, c1, c2, step, scale, eps
        ):
            for k in range(min(ahead, index.shape[0])):
                _prefetch_row(param, exp_avg, exp_avg_sq, index[k])
            for k in range(index.shape[0]):
                if k + ahead < index.shape[0]:
                    _prefetch_row(param, exp_avg, exp_avg_sq, index[k + ahead])
                r = index[k]
                _update_row(
                    param[r], exp_avg[r], exp_avg_sq[r], grad[k], beta1, beta2, c1, c2, step,
                    scale, eps,
                )  # fmt: skip

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _add_row(out, row, weight):
            for j in range(out.shape[0]):
                out[j] += weight * row[j]

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _update_factored(
            param, exp_avg, exp_avg_sq, cells, columns, weights, grad, beta1, beta2, c1, c2,
            step, scale, eps,
        ):  # fmt: skip
            n_rows = param.shape[0]
            # entries grouped by row, in their order within a row (a stable counting sort)
            start = np.zeros(n_rows + 1, np.int64)
            for c in columns:
                start[c + 1] += 1
            n_touched = 0
            for r in range(n_rows):
                n_touched += start[r + 1] > 0
                start[r + 1] += start[r]
            touched = np.empty(n_touched, np.int64)
            n_touched = 0
            for r in range(n_rows):
                if start[r] != start[r + 1]:
                    touched[n_touched] = r
                    n_touched += 1
            fill = start[:-1].copy()
            order = np.empty(columns.shape[0], np.int64)
            for e in range(columns.shape[0]):
                order[fill[columns[e]]] = e
                fill[columns[e]] += 1
            weighted = weights.shape[0] > 0
            row_grad = np.empty(grad.shape[1], np.float32)
            for t in range(min(ahead, n_touched)):
                _prefetch_row(param, exp_avg, exp_avg_sq, touched[t])
            for t in range(n_touched):
                if t + ahead < n_touched:
                    _prefetch_row(param, exp_avg, exp_avg_sq, touched[t + ahead])
                r = touched[t]
                row_grad[:] = 0.0
                for k in range(start[r], start[r + 1]):
                    e = order[k]
                    w = weights[e] if weighted else np.float32(1.0)
                    _add_row(row_grad, grad[cells[e]], w)
                _update_row(
                    param[r], exp_avg[r], exp_avg_sq[r], row_grad, beta1, beta2, c1, c2, step,
                    scale, eps,
                )  # fmt: skip

        _KERNELS = (_update_rows, _update_factored)
    return _KERNELS


def lazy_adam_rows_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    index: torch.Tensor,
    grad: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    step: int,
) -> None:
    """One Adam step on rows ``index`` of ``param`` (and its moments), in place.

    ``grad`` holds the gradient of those rows (``len(index)`` rows); ``step`` is the step
    number (from 1) used in the bias corrections. Same update as :class:`torch.optim.Adam`
    (no weight decay, no amsgrad) on those rows; the other rows are not read or written.
    ``index`` must be distinct. CPU float32 tensors, contiguous.
    """
    _row_kernel()(
        param.detach().numpy(),
        exp_avg.numpy(),
        exp_avg_sq.numpy(),
        index.numpy(),
        grad.numpy(),
        *_adam_scalars(lr, beta1, beta2, eps, step),
    )


def lazy_adam_factored_(
    param: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    cells: torch.Tensor,
    columns: torch.Tensor,
    weights: torch.Tensor | None,
    grad: torch.Tensor,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    step: int,
) -> None:
    """:func:`lazy_adam_rows_` on the rows ``columns`` reach, their gradient given by factors.

    Row ``r``'s gradient is the sum over the entries ``e`` with ``columns[e] == r`` of
    ``weights[e] * grad[cells[e]]`` (weight 1 when ``weights`` is ``None``), added in entry
    order; it is summed in a buffer just before the row is updated. CPU tensors, float32
    values, int64 indices.
    """
    _factored_kernel()(
        param.detach().numpy(),
        exp_avg.numpy(),
        exp_avg_sq.numpy(),
        cells.numpy(),
        columns.numpy(),
        np.zeros(0, np.float32) if weights is None else weights.detach().numpy(),
        grad.detach().numpy(),
        *_adam_scalars(lr, beta1, beta2, eps, step),
    )


def _adam_scalars(lr, beta1, beta2, eps, step) -> tuple:
    f32 = np.float32
    return (
        f32(beta1),
        f32(beta2),
        f32(1.0 - beta1),
        f32(1.0 - beta2),
        f32(lr / (1.0 - beta1**step)),
        f32(1.0 / math.sqrt(1.0 - beta2**step)),
        f32(eps),
    )


class RowSparseAdam(torch.optim.Adam):
    """:class:`torch.optim.Adam` that steps a parameter with a sparse gradient at its rows only.

    Parameters with a dense gradient take torch's Adam step (fused where asked). A
    parameter whose gradient is a sparse tensor over its first dimension (the encoder's first
    layer seen feature-major, when the minibatch reaches some features only) takes the lazy
    Adam step: the rows listed in the gradient have their moments and values updated as
    Adam would, the other rows keep theirs (exact Adam would still move them with their
    decaying momentum). The bias corrections use the parameter's own step count, as in
    :class:`torch.optim.SparseAdam`. State entries have Adam's names and shapes, so dense
    and sparse steps of one parameter share them.

    A parameter may also carry its row gradient unformed, in a list
    ``param.row_gradient_factors`` of :class:`~glassvi.module._sparse_input.RowGradientFactors`
    (one per backward pass, as the sparse-input encoder appends them): the same lazy step is
    then taken with each row's gradient summed as the row is updated. :meth:`zero_grad` and
    :meth:`step` empty these lists.

    Parameters
    ----------
    params
        Parameters or parameter groups, as for :class:`torch.optim.Adam`.
    **kwargs
        Arguments of :class:`torch.optim.Adam`. Sparse gradients need ``weight_decay=0``,
        ``amsgrad=False`` and ``maximize=False``, and parameters on the CPU in float32.

    Examples
    --------
    >>> weight = torch.nn.Parameter(torch.zeros(4, 2))
    >>> opt = RowSparseAdam([weight], lr=0.1)
    >>> rows, values = torch.tensor([[1]]), torch.ones(1, 2)
    >>> weight.grad = torch.sparse_coo_tensor(rows, values, (4, 2), check_invariants=True)
    >>> opt.step()
    >>> [round(w, 6) for w in weight[:, 0].tolist()]
    [0.0, -0.1, 0.0, 0.0]
    """

    @torch.no_grad()
    def step(self, closure=None):
        """One step: torch's Adam on dense gradients, the lazy row step on sparse ones."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse, factored = [], []
        for group in self.param_groups:
            for param in group["params"]:
                pending = getattr(param, "row_gradient_factors", None)
                if pending:
                    pending = list(pending)
                    param.row_gradient_factors.clear()
                    if len(pending) == 1 and param.grad is None:
                        factored.append((group, param, pending[0]))
                    else:
                        # several backward passes, or a gradient of its own too: formed
                        grads = [f.to_sparse() for f in pending]
                        if param.grad is not None:
                            grads.append(param.grad)
                        param.grad = _sum(grads)
                if param.grad is not None and param.grad.is_sparse:
                    sparse.append((group, param, param.grad))
                    param.grad = None
        try:
            super().step()
        finally:
            for _, param, grad in sparse:
                param.grad = grad
        for group, param, grad in sparse:
            self._rows_step(group, param, grad)
        for group, param, factors in factored:
            self._factored_step(group, param, factors)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients, and drop unformed row gradients."""
        super().zero_grad(set_to_none)
        for group in self.param_groups:
            for param in group["params"]:
                pending = getattr(param, "row_gradient_factors", None)
                if pending:
                    pending.clear()

    def _rows_state(self, group: dict, param: torch.Tensor) -> tuple[dict, dict]:
        if group["amsgrad"] or group["maximize"] or group["weight_decay"]:
            raise ValueError(
                "A sparse gradient needs amsgrad=False, maximize=False and weight_decay=0."
            )
        if param.device.type != "cpu" or param.dtype != torch.float32:
            raise ValueError("A sparse gradient needs a float32 parameter on the CPU.")
        if not param.is_contiguous():
            raise ValueError("A sparse gradient must list rows of a contiguous parameter.")
        state = self.state[param]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        options = {
            "lr": float(group["lr"]),
            "beta1": float(beta1),
            "beta2": float(beta2),
            "eps": float(group["eps"]),
            "step": int(state["step"].item()),
        }
        return state, options

    def _rows_step(self, group: dict, param: torch.Tensor, grad: torch.Tensor) -> None:
        if grad.sparse_dim() != 1:
            raise ValueError("A sparse gradient must list rows of a contiguous parameter.")
        if not grad.is_coalesced() and not _sorted_distinct(grad._indices()[0]):
            grad = grad.coalesce()
        state, options = self._rows_state(group, param)
        lazy_adam_rows_(
            param,
            state["exp_avg"],
            state["exp_avg_sq"],
            grad._indices()[0].contiguous(),
            grad._values().contiguous(),
            **options,
        )

    def _factored_step(self, group: dict, param: torch.Tensor, factors) -> None:
        state, options = self._rows_state(group, param)
        moments = (param, state["exp_avg"], state["exp_avg_sq"])
        if factors.index.numel():
            # rows given whole (dense input columns); the entries reach other rows
            lazy_adam_rows_(*moments, factors.index, factors.rows.contiguous(), **options)
        if factors.cells.numel():
            lazy_adam_factored_(
                *moments,
                factors.cells,
                factors.columns,
                factors.weights,
                factors.grad.contiguous(),
                **options,
            )


def _sum(grads: list[torch.Tensor]) -> torch.Tensor:
    total = grads[0]
    for grad in grads[1:]:
        total = total + grad if not total.is_sparse or grad.is_sparse else grad + total
    return total


def _sorted_distinct(index: torch.Tensor) -> bool:
    """Whether ``index`` increases strictly (autograd's copy of a gradient drops the flag)."""
    values = index.numpy()
    return bool(np.all(values[1:] > values[:-1]))

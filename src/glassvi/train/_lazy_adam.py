"""Adam whose step on a row-sparse gradient touches only the rows it lists ("lazy" Adam).

The encoder's first layer has one weight row per input feature. With tens of thousands of
rarely open peaks, a minibatch reaches only a fraction of them, and its gradient is zero on
the other rows. Exact Adam still moves every row at every step (its momentum decays), so its
cost follows the number of peaks. Lazy Adam, as :class:`torch.optim.SparseAdam` and
TensorFlow's ``LazyAdamOptimizer``, updates the moments and values of the listed rows only;
it is the usual optimiser of embedding tables. Here the listed rows are updated in one fused
pass (a compiled loop: one read and write of each row's value and moments), every other
parameter takes torch's Adam step. The pass is bound by memory traffic (rows far apart), so
the two moments of a row are kept next to each other, in one ``(rows, 2, ...)`` buffer of
which ``exp_avg`` and ``exp_avg_sq`` are views: a row's moments are then one stretch of
memory instead of two. The encoder can also hand over its gradient unformed, as
the entries and output gradient whose products it sums (``row_gradient_factors``): each row's
gradient is then summed in a small buffer just before the row is updated, so that the
gradient rows are never written out and read back.

Optionally (``row_second_moment=True``) a parameter updated by rows keeps one second moment
per row, the running mean of its squared gradient averaged over the row, while the first
moment stays per element: the row-wise Adam of embedding-table training (as row-wise Adagrad
keeps one accumulator per row). The elements of a row then share one step size; a row's
state is its value, its first moment and one number, a third less memory traffic, and the
square root and division are taken once per row.
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
        def _prefetch_row(param, moments, r):
            # the rows are far apart: without this, each one waits for memory in turn
            n = param.shape[1]
            for j in range(r * n, (r + 1) * n, 16):
                prefetch(param, j)
            for j in range(2 * r * n, 2 * (r + 1) * n, 16):
                prefetch(moments, j)

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _update_rows(param, moments, index, grad, beta1, beta2, c1, c2, step, scale, eps):
            for k in range(min(ahead, index.shape[0])):
                _prefetch_row(param, moments, index[k])
            for k in range(index.shape[0]):
                if k + ahead < index.shape[0]:
                    _prefetch_row(param, moments, index[k + ahead])
                r = index[k]
                _update_row(
                    param[r], moments[r, 0], moments[r, 1], grad[k], beta1, beta2, c1, c2, step,
                    scale, eps,
                )  # fmt: skip

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def _update_factored(
            param, moments, cells, columns, weights, grad, beta1, beta2, c1, c2, step, scale,
            eps,
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
            n = param.shape[1]
            for t in range(min(ahead, n_touched)):
                _prefetch_row(param, moments, touched[t])
            # the prefetch of the row ahead, the sums and the update are written out here
            # rather than called (as _prefetch_row and _update_row): as calls they run about a
            # third slower (SNARE-seq minibatch: 1.4 -> 1.0 ms; the prefetch alone ~8%)
            for t in range(n_touched):
                if t + ahead < n_touched:
                    ahead_row = touched[t + ahead]
                    for j in range(ahead_row * n, (ahead_row + 1) * n, 16):
                        prefetch(param, j)
                    for j in range(2 * ahead_row * n, 2 * (ahead_row + 1) * n, 16):
                        prefetch(moments, j)
                r = touched[t]
                row_grad[:] = 0.0
                for k in range(start[r], start[r + 1]):
                    e = order[k]
                    w = weights[e] if weighted else np.float32(1.0)
                    cell_grad = grad[cells[e]]
                    for j in range(n):
                        row_grad[j] += w * cell_grad[j]
                value, exp_avg, exp_avg_sq = param[r], moments[r, 0], moments[r, 1]
                for j in range(n):
                    g = row_grad[j]
                    m = exp_avg[j] * beta1 + c1 * g
                    v = exp_avg_sq[j] * beta2 + c2 * g * g
                    exp_avg[j] = m
                    exp_avg_sq[j] = v
                    value[j] -= step * m / (np.sqrt(v) * scale + eps)

        # reassociation lets the sum of squares of a row vectorise (its order is free)
        @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"})
        def _update_rows_rowwise(
            param, exp_avg, exp_avg_sq, index, grad, beta1, beta2, c1, c2, step, scale, eps,
        ):  # fmt: skip
            n = param.shape[1]
            inv_n = np.float32(1.0 / n)
            for k in range(index.shape[0]):
                if k + ahead < index.shape[0]:
                    ahead_row = index[k + ahead]
                    for j in range(ahead_row * n, (ahead_row + 1) * n, 16):
                        prefetch(param, j)
                    for j in range(ahead_row * n, (ahead_row + 1) * n, 16):
                        prefetch(exp_avg, j)
                r = index[k]
                row_grad = grad[k]
                squares = np.float32(0.0)
                for j in range(n):
                    squares += row_grad[j] * row_grad[j]
                v = exp_avg_sq[r] * beta2 + c2 * squares * inv_n
                exp_avg_sq[r] = v
                rate = step / (np.sqrt(v) * scale + eps)
                value, exp_avg_row = param[r], exp_avg[r]
                for j in range(n):
                    m = exp_avg_row[j] * beta1 + c1 * row_grad[j]
                    exp_avg_row[j] = m
                    value[j] -= rate * m

        @numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"})
        def _update_factored_rowwise(
            param, exp_avg, exp_avg_sq, cells, columns, weights, grad, beta1, beta2, c1, c2,
            step, scale, eps,
        ):  # fmt: skip
            n_rows = param.shape[0]
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
            n = param.shape[1]
            inv_n = np.float32(1.0 / n)
            row_grad = np.empty(n, np.float32)
            for t in range(min(ahead, n_touched)):
                first = touched[t]
                for j in range(first * n, (first + 1) * n, 16):
                    prefetch(param, j)
                    prefetch(exp_avg, j)
            for t in range(n_touched):
                if t + ahead < n_touched:
                    ahead_row = touched[t + ahead]
                    for j in range(ahead_row * n, (ahead_row + 1) * n, 16):
                        prefetch(param, j)
                    for j in range(ahead_row * n, (ahead_row + 1) * n, 16):
                        prefetch(exp_avg, j)
                r = touched[t]
                row_grad[:] = 0.0
                for k in range(start[r], start[r + 1]):
                    e = order[k]
                    w = weights[e] if weighted else np.float32(1.0)
                    cell_grad = grad[cells[e]]
                    for j in range(n):
                        row_grad[j] += w * cell_grad[j]
                squares = np.float32(0.0)
                for j in range(n):
                    squares += row_grad[j] * row_grad[j]
                v = exp_avg_sq[r] * beta2 + c2 * squares * inv_n
                exp_avg_sq[r] = v
                rate = step / (np.sqrt(v) * scale + eps)
                value, exp_avg_row = param[r], exp_avg[r]
                for j in range(n):
                    m = exp_avg_row[j] * beta1 + c1 * row_grad[j]
                    exp_avg_row[j] = m
                    value[j] -= rate * m

        _KERNELS = (_update_rows, _update_factored, _update_rows_rowwise, _update_factored_rowwise)
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
    ``index`` must be distinct. CPU float32 tensors, contiguous; the moments fastest as views
    of one buffer (:func:`_interleaved_moments`).
    """
    with _MomentBuffer(exp_avg, exp_avg_sq) as moments:
        _row_kernel()(
            param.detach().numpy(),
            moments,
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
    with _MomentBuffer(exp_avg, exp_avg_sq) as moments:
        _factored_kernel()(
            param.detach().numpy(),
            moments,
            cells.numpy(),
            columns.numpy(),
            np.zeros(0, np.float32) if weights is None else weights.detach().numpy(),
            grad.detach().numpy(),
            *_adam_scalars(lr, beta1, beta2, eps, step),
        )


def row_adam_rows_(
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
    """Row-wise Adam step on rows ``index`` of ``param``, in place.

    As :func:`lazy_adam_rows_`, but ``exp_avg_sq`` holds one second moment per row of
    ``param`` (shape ``(rows,)``), updated with the mean over the row of the squared
    gradient; each row's elements move by ``lr * m_hat / (sqrt(v_hat) + eps)`` with the
    row's ``v_hat``. ``exp_avg`` has ``param``'s shape. Contiguous CPU float32 tensors.
    """
    _kernels()[2](
        param.detach().numpy(),
        exp_avg.numpy(),
        exp_avg_sq.numpy(),
        index.numpy(),
        grad.detach().numpy(),
        *_adam_scalars(lr, beta1, beta2, eps, step),
    )


def row_adam_factored_(
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
    """:func:`row_adam_rows_` on the rows ``columns`` reach, their gradient given by factors.

    The row gradients are those of :func:`lazy_adam_factored_`.
    """
    _kernels()[3](
        param.detach().numpy(),
        exp_avg.numpy(),
        exp_avg_sq.numpy(),
        cells.numpy(),
        columns.numpy(),
        np.zeros(0, np.float32) if weights is None else weights.detach().numpy(),
        grad.detach().numpy(),
        *_adam_scalars(lr, beta1, beta2, eps, step),
    )


def _interleaved_moments(param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero first and second moments of a 2-D ``param``, as views of one ``(rows, 2, n)`` buffer.

    Row ``r`` of both moments then lies in one stretch of memory, which the lazy row update
    reads and writes in one go. The views have ``param``'s shape (not its strides).

    Examples
    --------
    >>> exp_avg, exp_avg_sq = _interleaved_moments(torch.ones(3, 2))
    >>> exp_avg.shape, exp_avg.stride()
    (torch.Size([3, 2]), (4, 1))
    """
    if param.dim() != 2:
        return torch.zeros_like(param), torch.zeros_like(param)
    buffer = torch.zeros((param.shape[0], 2, param.shape[1]), dtype=param.dtype)
    return buffer[:, 0], buffer[:, 1]


def _interleaved_base(exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor) -> torch.Tensor | None:
    """The ``(rows, 2, n)`` buffer two 2-D moments are views of, or ``None``."""
    if exp_avg.dim() != 2 or exp_avg.shape != exp_avg_sq.shape:
        return None
    n = exp_avg.shape[1]
    strides = (2 * n, 1)
    if exp_avg.stride() != strides or exp_avg_sq.stride() != strides:
        return None
    if exp_avg.untyped_storage().data_ptr() != exp_avg_sq.untyped_storage().data_ptr():
        return None
    if exp_avg_sq.data_ptr() != exp_avg.data_ptr() + n * exp_avg.element_size():
        return None
    return exp_avg.as_strided((exp_avg.shape[0], 2, n), (2 * n, n, 1))


class _MomentBuffer:
    """Context giving the ``(rows, 2, n)`` NumPy buffer of two moments for the kernels.

    Views of one buffer (:func:`_interleaved_moments`) are passed as they are; separate
    tensors are copied into one buffer, and the updated moments copied back on exit.
    """

    def __init__(self, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor):
        self.exp_avg, self.exp_avg_sq = exp_avg, exp_avg_sq
        self.base = _interleaved_base(exp_avg, exp_avg_sq)

    def __enter__(self) -> np.ndarray:
        if self.base is None:
            self.copy = torch.stack([self.exp_avg, self.exp_avg_sq], 1).reshape(
                self.exp_avg.shape[0], 2, -1
            )
            return self.copy.numpy()
        return self.base.numpy()

    def __exit__(self, *exc) -> None:
        if self.base is None:
            self.exp_avg.copy_(self.copy[:, 0].view_as(self.exp_avg))
            self.exp_avg_sq.copy_(self.copy[:, 1].view_as(self.exp_avg_sq))


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

    With ``row_second_moment=True``, a matrix updated by rows keeps one second moment per row
    (state ``exp_avg_sq`` of shape ``(rows,)``: the running mean of the squared gradient
    averaged over the row), its first moment per element: row-wise Adam, as used for
    embedding tables. The elements of a row share one step size. A dense gradient of such a
    matrix updates every row the same way. Element-wise moments found in the state (a loaded
    state, exact steps before) are turned into row-wise ones by their row means, and back by
    repeating them when ``row_second_moment=False``.

    Parameters
    ----------
    params
        Parameters or parameter groups, as for :class:`torch.optim.Adam`.
    row_second_moment
        Keep one second moment per row for matrices updated by rows (see above).
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

    def __init__(self, params, row_second_moment: bool = False, **kwargs):
        super().__init__(params, **kwargs)
        self.row_second_moment = bool(row_second_moment)

    @torch.no_grad()
    def step(self, closure=None):
        """One step: torch's Adam on dense gradients, the lazy row step on sparse ones."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse, factored, dense_rows = [], [], []
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
                elif param.grad is not None and _row_moment(self.state.get(param), param):
                    if self.row_second_moment:
                        # a dense gradient of a matrix with row-wise moments: every row
                        dense_rows.append((group, param, param.grad))
                        param.grad = None
                    else:
                        _element_moments(self.state[param], param)
                elif param.grad is not None:
                    _contiguous_moments(self.state.get(param))
        try:
            super().step()
        finally:
            for _, param, grad in sparse + dense_rows:
                param.grad = grad
        for group, param, grad in sparse:
            self._rows_step(group, param, grad)
        for group, param, grad in dense_rows:
            self._dense_rows_step(group, param, grad)
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
        row_wise = self.row_second_moment and param.dim() == 2
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            if row_wise:
                state["exp_avg"] = torch.zeros(param.shape, dtype=param.dtype)
                state["exp_avg_sq"] = param.new_zeros(param.shape[0])
            else:
                state["exp_avg"], state["exp_avg_sq"] = _interleaved_moments(param)
        elif row_wise:
            if not _row_moment(state, param):
                # element-wise moments (exact steps before, a loaded state): their row means
                state["exp_avg"] = state["exp_avg"].contiguous()
                state["exp_avg_sq"] = state["exp_avg_sq"].mean(1)
        elif param.dim() == 2 and (
            _row_moment(state, param)
            or _interleaved_base(state["exp_avg"], state["exp_avg_sq"]) is None
        ):
            # moments from a dense step, a loaded or a row-wise state: into one buffer once
            exp_avg, exp_avg_sq = _interleaved_moments(param)
            exp_avg.copy_(state["exp_avg"])
            exp_avg_sq.copy_(state["exp_avg_sq"].reshape(param.shape[0], -1))
            state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
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
        rows_step = row_adam_rows_ if _row_moment(state, param) else lazy_adam_rows_
        rows_step(
            param,
            state["exp_avg"],
            state["exp_avg_sq"],
            grad._indices()[0].contiguous(),
            grad._values().contiguous(),
            **options,
        )

    def _dense_rows_step(self, group: dict, param: torch.Tensor, grad: torch.Tensor) -> None:
        state, options = self._rows_state(group, param)
        index = torch.arange(param.shape[0])
        row_adam_rows_(
            param, state["exp_avg"], state["exp_avg_sq"], index, grad.contiguous(), **options
        )

    def _factored_step(self, group: dict, param: torch.Tensor, factors) -> None:
        state, options = self._rows_state(group, param)
        moments = (param, state["exp_avg"], state["exp_avg_sq"])
        row_wise = _row_moment(state, param)
        if factors.index.numel():
            # rows given whole (dense input columns); the entries reach other rows
            rows_step = row_adam_rows_ if row_wise else lazy_adam_rows_
            rows_step(*moments, factors.index, factors.rows.contiguous(), **options)
        if factors.cells.numel():
            factored_step = row_adam_factored_ if row_wise else lazy_adam_factored_
            factored_step(
                *moments,
                factors.cells,
                factors.columns,
                factors.weights,
                factors.grad.contiguous(),
                **options,
            )


def _row_moment(state: dict | None, param: torch.Tensor) -> bool:
    """Whether ``state`` holds one second moment per row of the matrix ``param``."""
    return bool(state) and param.dim() == 2 and state.get("exp_avg_sq", param).dim() == 1


def _element_moments(state: dict, param: torch.Tensor) -> None:
    """Row-wise second moments repeated over their rows (for element-wise steps)."""
    state["exp_avg"] = state["exp_avg"].contiguous()
    state["exp_avg_sq"] = state["exp_avg_sq"].unsqueeze(1).expand(param.shape).contiguous()


def _contiguous_moments(state: dict | None) -> None:
    """Moments left as views of one buffer by lazy steps, made contiguous for torch's step."""
    if state and "exp_avg" in state and not state["exp_avg"].is_contiguous():
        state["exp_avg"] = state["exp_avg"].contiguous()
        state["exp_avg_sq"] = state["exp_avg_sq"].contiguous()


def _sum(grads: list[torch.Tensor]) -> torch.Tensor:
    total = grads[0]
    for grad in grads[1:]:
        total = total + grad if not total.is_sparse or grad.is_sparse else grad + total
    return total


def _sorted_distinct(index: torch.Tensor) -> bool:
    """Whether ``index`` increases strictly (autograd's copy of a gradient drops the flag)."""
    values = index.numpy()
    return bool(np.all(values[1:] > values[:-1]))

"""Adam whose step on a row-sparse gradient touches only the rows it lists ("lazy" Adam).

The encoder's first layer has one weight row per input feature. With tens of thousands of
rarely open peaks, a minibatch reaches only a fraction of them, and its gradient is zero on
the other rows. Exact Adam still moves every row at every step (its momentum decays), so its
cost follows the number of peaks. Lazy Adam, as :class:`torch.optim.SparseAdam` and
TensorFlow's ``LazyAdamOptimizer``, updates the moments and values of the listed rows only;
it is the usual optimiser of embedding tables. Here the listed rows are updated in one fused
pass (a compiled loop: one read and write of each row's value and moments), every other
parameter takes torch's Adam step.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_KERNEL = None


def _row_kernel():
    """The compiled row update, built on first use (numba; cached on disk where possible)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

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
        def _update_rows(
            param, exp_avg, exp_avg_sq, index, grad, beta1, beta2, c1, c2, step, scale, eps
        ):
            for k in range(index.shape[0]):
                r = index[k]
                _update_row(
                    param[r], exp_avg[r], exp_avg_sq[r], grad[k], beta1, beta2, c1, c2, step,
                    scale, eps,
                )  # fmt: skip

        _KERNEL = _update_rows
    return _KERNEL


def lazy_adam_available() -> bool:
    """Whether the compiled row update can be used (numba importable)."""
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return True


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
    kernel = _row_kernel()
    f32 = np.float32
    kernel(
        param.detach().numpy(),
        exp_avg.numpy(),
        exp_avg_sq.numpy(),
        index.numpy(),
        grad.numpy(),
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
        sparse = []
        for group in self.param_groups:
            for param in group["params"]:
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
        return loss

    def _rows_step(self, group: dict, param: torch.Tensor, grad: torch.Tensor) -> None:
        if group["amsgrad"] or group["maximize"] or group["weight_decay"]:
            raise ValueError(
                "A sparse gradient needs amsgrad=False, maximize=False and weight_decay=0."
            )
        if param.device.type != "cpu" or param.dtype != torch.float32:
            raise ValueError("A sparse gradient needs a float32 parameter on the CPU.")
        if grad.sparse_dim() != 1 or not param.is_contiguous():
            raise ValueError("A sparse gradient must list rows of a contiguous parameter.")
        if not grad.is_coalesced() and not _sorted_distinct(grad._indices()[0]):
            grad = grad.coalesce()
        state = self.state[param]
        if len(state) == 0:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        lazy_adam_rows_(
            param,
            state["exp_avg"],
            state["exp_avg_sq"],
            grad._indices()[0].contiguous(),
            grad._values().contiguous(),
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=float(group["eps"]),
            step=int(state["step"].item()),
        )


def _sorted_distinct(index: torch.Tensor) -> bool:
    """Whether ``index`` increases strictly (autograd's copy of a gradient drops the flag)."""
    values = index.numpy()
    return bool(np.all(values[1:] > values[:-1]))

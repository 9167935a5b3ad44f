"""Anchoring program activities to the expression of their member features.

A program's latent unit is only as meaningful as its link to the program's members. In a linear
decoder with a softmax likelihood that link is loose: a unit can be driven by the variance of a
few highly expressed members, or by members it shares with a neighbouring cell type's program,
and its sign is not pinned down when members are free (soft masks). The anchor ties each
program's posterior-mean activity to a simple, fixed summary of its members' expression in every
cell: the mean of the members' standardised log-normalised expression (a gene-set score). The
penalty is ``1 - r`` for the correlation ``r`` of the activity with that score over the cells of
a minibatch, so it fixes the sign and direction of each unit, not its scale; the likelihood still
decides the weights of the members and how the activity is denoised from the whole profile.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

#: rows read at a time from backed (on-disk) matrices
_CHUNK = 10_000
#: counts per cell that log-normalised expression is scaled to, as in ``normalize_total``
TARGET_SUM = 1e4


def normalised_log_expression(x: torch.Tensor, binary: bool) -> torch.Tensor:
    """``log1p(1e4 * x / total)`` per cell for counts; ``x > 0`` for binary modalities."""
    if binary:
        return (x > 0).to(x.dtype)
    total = x.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return torch.log1p(x * (TARGET_SUM / total))


def normalised_log_values(
    values: torch.Tensor, rows: torch.Tensor, n_cells: int, binary: bool
) -> torch.Tensor:
    """:func:`normalised_log_expression` at the non-zero entries of a minibatch only.

    ``values`` are the counts at the entries, ``rows`` their cells; both functions are zero at
    zero counts, so these values are all there is of the normalised minibatch.
    """
    if binary:
        return (values > 0).to(values.dtype)
    total = values.new_zeros(n_cells).index_add_(0, rows, values).clamp(min=1.0)
    return torch.log1p(values * (TARGET_SUM / total[rows]))


def expression_moments(X, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each feature's normalised log expression.

    Parameters
    ----------
    X
        Cells x features counts: dense, SciPy sparse, or a backed matrix (read in chunks).
    binary
        Use ``x > 0`` (accessibility) instead of log-normalised counts.

    Returns
    -------
    Two float32 arrays of length ``n_features``: mean and standard deviation (at least
    ``1e-3``, so that features without variation do not blow up).

    Examples
    --------
    >>> import numpy as np
    >>> mean, sd = expression_moments(np.array([[1.0, 0.0], [0.0, 2.0]]), binary=False)
    >>> mean.round(2).tolist()
    [4.61, 4.61]
    """
    n, n_features = X.shape
    s1 = np.zeros(n_features)
    s2 = np.zeros(n_features)
    for start in range(0, n, _CHUNK):
        block = X[start : start + _CHUNK]
        block = sp.csr_matrix(block, dtype=np.float64) if not sp.issparse(block) else block
        block = sp.csr_matrix(block, dtype=np.float64, copy=True)
        if binary:
            block.data = (block.data > 0).astype(np.float64)
        else:
            totals = np.asarray(block.sum(axis=1)).ravel().clip(min=1.0)
            block.data *= np.repeat(TARGET_SUM / totals, np.diff(block.indptr))
            np.log1p(block.data, out=block.data)
        s1 += np.asarray(block.sum(axis=0)).ravel()
        s2 += np.asarray(block.multiply(block).sum(axis=0)).ravel()
    mean = s1 / max(n, 1)
    var = np.clip(s2 / max(n, 1) - mean**2, 0.0, None)
    return mean.astype(np.float32), np.sqrt(var).clip(min=1e-3).astype(np.float32)


def member_scores(
    standardised: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n_programs: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of standardised member expression per program, and the number of members.

    ``rows``/``cols`` list the (feature, program) memberships. Returns ``(cells x programs
    sums, members per program)``.
    """
    sums = standardised.new_zeros(standardised.shape[0], n_programs)
    sums.index_add_(1, cols, standardised[:, rows])
    counts = torch.bincount(cols, minlength=n_programs).to(standardised.dtype)
    return sums, counts


def anchor_loss(
    activity: torch.Tensor, score: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """``sum_k weights[k] * (1 - corr(activity[:, k], score[:, k]))`` over a minibatch.

    Programs whose score does not vary within the minibatch contribute nothing.
    """
    a = activity - activity.mean(0)
    s = score - score.mean(0)
    s_norm = s.norm(dim=0)
    r = (a * s).sum(0) / (a.norm(dim=0) * s_norm + eps)
    varies = (s_norm > eps).to(activity.dtype)
    return (weights * varies * (1.0 - r)).sum()

"""Dense symmetric linear algebra of the activity anchor's joint fit, in place and in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import lapack

#: rows per block when a triangle is mirrored into the other (bounds the temporary copies)
_BLOCK = 512


def _fortran(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as a Fortran-ordered array LAPACK works on in place (no copy if symmetric)."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.dtype != np.float64:
        raise ValueError("expected a square float64 array.")
    # a symmetric C-ordered array is its own transpose, which is Fortran-ordered
    work = matrix.T if matrix.flags.c_contiguous else matrix
    return work if work.flags.f_contiguous else np.asfortranarray(work)


def _mirror_lower_(matrix: np.ndarray) -> np.ndarray:
    """Copy the lower triangle of a square array into its upper one, in place, by blocks."""
    n = matrix.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        diag = matrix[start:stop, start:stop]
        diag[...] = np.tril(diag) + np.tril(diag, -1).T
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
    return matrix


def _inverse_pd_(work: np.ndarray, tol: float) -> np.ndarray | None:
    """Inverse of a positive definite Fortran array in its own storage; ``None`` if singular.

    ``work`` is overwritten either way. Singular: a Cholesky pivot whose square is at most
    ``tol`` (so a matrix singular up to rounding is not inverted into noise).
    """
    factor, info = lapack.dpotrf(work, lower=1, clean=0, overwrite_a=1)
    if info != 0 or float(np.diagonal(factor).min()) ** 2 <= tol:
        return None
    inverse, info = lapack.dpotri(factor, lower=1, overwrite_c=1)
    if info != 0:  # pragma: no cover - dpotri fails only on a zero pivot, excluded above
        return None
    return _mirror_lower_(inverse)


def _null_basis(factor: np.ndarray, pivots: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal basis of the null space of ``G`` from its pivoted Cholesky factor.

    ``G[p][:, p] = L L^T`` with ``L = [L11; L21]`` of ``rank`` columns (LAPACK ``?pstrf``, lower
    triangle of ``factor``, 0-based ``pivots`` ``p``), so the null space of ``G[p][:, p]`` is
    spanned by the columns of ``[-L11^{-T} L21^T; I]``.
    """
    n = factor.shape[0]
    l21t = np.asfortranarray(factor[rank:, :rank].T)
    # L11 read in place: the first ``rank`` columns of the Fortran-ordered factor, whose
    # leading dimension is ``n`` (a copy would be a second near-``n x n`` array)
    top, info = lapack.dtrtrs(factor[:, :rank], l21t, lower=1, trans=1, lda=n)
    if info != 0:  # pragma: no cover - a factor of the stated rank has a non-zero diagonal
        raise np.linalg.LinAlgError(f"triangular solve failed (info {info}).")
    basis = np.zeros((n, n - rank))
    basis[pivots[:rank]] = -top
    basis[pivots[rank:], np.arange(n - rank)] = 1.0
    return np.linalg.qr(basis)[0]


def psd_pinv(build: Callable[[], np.ndarray]) -> np.ndarray:
    """Pseudo-inverse of a symmetric positive semi-definite float64 matrix.

    The same matrix as ``torch.linalg.pinv(G, hermitian=True)`` (eigenvalues below ``n * eps``
    times the largest diagonal entry count as zero) at a fraction of its cost and memory: a
    Cholesky factorisation and inversion in the matrix's own storage when it is positive
    definite (about ``n^3`` flops instead of an eigendecomposition's ``9 n^3``, and no second
    ``n x n`` array). Otherwise a pivoted Cholesky factorisation gives an orthonormal basis
    ``Q`` of the null space, and the pseudo-inverse is the inverse of the positive definite
    ``G + Q Q^T`` minus ``Q Q^T``.

    Parameters
    ----------
    build
        Returns ``G`` as a new C- or Fortran-contiguous float64 array, which is overwritten;
        called once when ``G`` is positive definite, three times otherwise (so that only one
        ``n x n`` array is held at a time).

    Returns
    -------
    The pseudo-inverse (in the storage of the last array ``build`` returned).

    Examples
    --------
    >>> g = np.array([[2.0, 2.0], [2.0, 2.0]])
    >>> psd_pinv(lambda: g.copy())
    array([[0.125, 0.125],
           [0.125, 0.125]])
    """
    work = _fortran(build())
    n = work.shape[0]
    if n == 0:
        return work
    tol = n * np.finfo(np.float64).eps * max(float(np.abs(np.diagonal(work)).max()), 1e-300)
    inverse = _inverse_pd_(work, tol)
    if inverse is not None:
        return inverse
    del work, inverse
    factor, pivots, rank, _ = lapack.dpstrf(_fortran(build()), tol=tol, lower=1, overwrite_a=1)
    if rank == 0:
        return np.zeros((n, n))
    null = _null_basis(factor, pivots - 1, rank)
    del factor
    work = _add_outer_(_fortran(build()), null, 1.0)
    inverse = _inverse_pd_(work, 0.0)
    if inverse is None:  # pragma: no cover - G + Q Q^T is positive definite
        raise np.linalg.LinAlgError("pseudo-inverse failed: G + Q Q^T is not positive definite.")
    return _add_outer_(inverse, null, -1.0)


def _add_outer_(matrix: np.ndarray, basis: np.ndarray, sign: float) -> np.ndarray:
    """``matrix += sign * basis @ basis.T`` in place, by blocks of rows (no ``n x n`` copy)."""
    for start in range(0, matrix.shape[0], _BLOCK):
        stop = min(start + _BLOCK, matrix.shape[0])
        matrix[start:stop] += sign * (basis[start:stop] @ basis.T)
    return matrix

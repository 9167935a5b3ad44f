"""Input checks that run before any expensive work, so bad data fail early and loudly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy import sparse

_CHUNK = 10_000
_VALUES_CHUNK = 2**24


def _value_chunks(X):
    """Yield the stored values of a dense, sparse or backed matrix, chunk by chunk."""
    if sp.issparse(X):
        # in slices, so that the checks' temporaries stay small next to a large matrix
        data = np.asarray(X.data)
        for start in range(0, max(data.size, 1), _VALUES_CHUNK):
            yield data[start : start + _VALUES_CHUNK]
        return
    if isinstance(X, np.ndarray):
        yield X
        return
    n = X.shape[0]
    for start in range(0, n, _CHUNK):
        block = X[start : start + _CHUNK]
        if sp.issparse(block):
            yield np.asarray(block.data)
        else:
            yield np.asarray(block)


def row_sums(X) -> np.ndarray:
    """Per-row totals of a dense, sparse or backed matrix, read chunk by chunk when backed.

    Parameters
    ----------
    X
        Dense array, SciPy sparse matrix, or a backed (on-disk) dense/CSR matrix.

    Returns
    -------
    Float64 array with one total per row.

    Examples
    --------
    >>> row_sums(np.array([[1, 2], [0, 3]]))
    array([3., 3.])
    """
    if sp.issparse(X) or isinstance(X, np.ndarray):
        return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    n = X.shape[0]
    totals = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        block = X[start : start + _CHUNK]
        totals[start : start + block.shape[0]] = np.asarray(block.sum(axis=1)).ravel()
    return totals


def check_counts(X, what: str, require_integer: bool = True) -> None:
    """Raise a ``ValueError`` unless ``X`` holds finite, non-negative (integer) counts.

    Parameters
    ----------
    X
        Dense, sparse or backed matrix.
    what
        How to name the matrix in the error (e.g. ``"adata.layers['counts']"``).
    require_integer
        Also require whole numbers.
    """
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(X.shape)}); nothing to train on.")
    for values in _value_chunks(X):
        if values.size == 0:
            continue
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(
            values.dtype, np.complexfloating
        ):
            raise ValueError(f"{what} has non-numeric dtype {values.dtype}; counts are required.")
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            raise ValueError(
                f"{what} contains {n_bad} NaN or infinite values; counts are required."
            )
        if np.any(values < 0):
            raise ValueError(
                f"{what} contains negative values (min {values.min():g}); raw counts are "
                "required, not scaled or log-normalised data."
            )
        if require_integer and np.issubdtype(values.dtype, np.floating):
            frac = values != np.round(values)
            if np.any(frac):
                example = values[frac][0]
                raise ValueError(
                    f"{what} contains non-integer values (e.g. {example:g}); raw counts are "
                    "required. Pass the layer holding counts with `layer=`."
                )


def check_obs_keys(obs, keys: dict[str, str | list[str] | None], where: str) -> None:
    """Raise a ``KeyError`` naming every requested column missing from ``obs``."""
    for arg, value in keys.items():
        if value is None:
            continue
        for col in [value] if isinstance(value, str) else list(value):
            if col not in obs.columns:
                available = ", ".join(map(str, list(obs.columns)[:10])) or "none"
                raise KeyError(
                    f"{arg}={col!r} is not a column of {where}.obs (columns: {available})."
                )


def check_layer(adata, layer: str | None, where: str) -> None:
    """Raise a ``KeyError`` if ``layer`` is not in ``adata.layers``."""
    if layer is not None and layer not in adata.layers:
        available = ", ".join(adata.layers.keys()) or "none"
        raise KeyError(f"layer {layer!r} is not in {where}.layers (layers: {available}).")


def get_matrix(adata, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``."""
    return adata.X if layer is None else adata.layers[layer]


def to_bool_values(
    values: np.ndarray | sparse.spmatrix | sparse.sparray,
    column_names: Sequence[str],
    what: str,
) -> np.ndarray | sparse.csc_matrix:
    """Check that ``values`` are boolean or 0/1 and return them as booleans.

    Dense input gives a dense boolean array, sparse input a sparse CSC boolean matrix.
    """
    if sparse.issparse(values):
        matrix = sparse.csc_matrix(values)
        data = matrix.data
    else:
        matrix = None
        data = np.asarray(values)
    if data.dtype != bool:
        if data.dtype.kind not in "biuf":
            try:
                data = data.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(
                    f"{what} must hold booleans or 0/1 values; found non-numeric values "
                    f"(dtype {data.dtype})"
                ) from None
        is_one = data == 1
        bad = ~(is_one | (data == 0))
        if bad.any():
            position = np.unravel_index(np.flatnonzero(bad)[0], bad.shape)
            if matrix is not None:
                column = int(np.searchsorted(matrix.indptr, position[0], side="right") - 1)
            else:
                column = int(position[-1]) if data.ndim == 2 else 0
            value = data[position].item()
            problem = "a missing value (NaN)" if np.isnan(value) else f"the value {value!r}"
            raise ValueError(
                f"{what} must hold booleans or 0/1 values; {int(bad.sum())} of {bad.size} "
                f"{'stored ' if matrix is not None else ''}entries do not, "
                f"e.g. {problem} in column {str(column_names[column])!r}"
            )
        data = is_one
    if matrix is not None:
        matrix = sparse.csc_matrix((data, matrix.indices, matrix.indptr), shape=matrix.shape)
        matrix.eliminate_zeros()
        return matrix
    return data

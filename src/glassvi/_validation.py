"""Input checks that run before any expensive work, so bad data fail early and loudly."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

_CHUNK = 10_000


def _value_chunks(X):
    """Yield the stored values of a dense, sparse or backed matrix, chunk by chunk."""
    if sp.issparse(X):
        yield np.asarray(X.data)
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
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
            raise ValueError(f"{what} has non-numeric dtype {values.dtype}; counts are required.")
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            raise ValueError(f"{what} contains {n_bad} NaN or infinite values; counts are required.")
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

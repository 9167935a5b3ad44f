"""Input checks and small numerical helpers shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse


def to_array(
    x: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype: type | None = np.float64,
    allow_nan: bool = False,
) -> np.ndarray:
    """Convert array-like (numpy, pandas, scipy sparse, torch, list) to a checked numpy array."""
    if x is None:
        raise ValueError(f"{name} is None")
    if sparse.issparse(x):
        x = x.toarray()
    elif isinstance(x, pd.DataFrame | pd.Series):
        x = x.to_numpy()
    elif hasattr(x, "detach") and hasattr(x, "cpu"):
        # torch tensors, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} could not be converted to a numeric array: {err}") from err
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got an array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not allow_nan and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite values")
    return arr


def to_bool(x: Any, name: str, *, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Convert a mask to a boolean array, refusing values other than 0/1/True/False."""
    arr = to_array(x, name, ndim=ndim, dtype=None)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be boolean, got dtype {arr.dtype}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean (only 0/1 or True/False values)")
    return arr.astype(bool)


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise a ValueError naming both arrays when their shapes differ."""
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}")


def align_frames(ref: Any, other: Any, name_ref: str, name_other: str) -> Any:
    """Reorder ``other`` to the index (and columns) of ``ref`` when both are pandas objects.

    Arrays and mixed inputs are returned unchanged and are matched by position.
    """
    if isinstance(ref, pd.DataFrame) and isinstance(other, pd.DataFrame):
        missing_rows = ref.index.difference(other.index)
        if len(missing_rows):
            raise KeyError(
                f"{len(missing_rows)} rows of {name_ref} are missing from {name_other}, "
                f"e.g. {list(missing_rows[:5])}"
            )
        missing_cols = ref.columns.difference(other.columns)
        if len(missing_cols):
            raise KeyError(
                f"{len(missing_cols)} columns of {name_ref} are missing from {name_other}, "
                f"e.g. {list(missing_cols[:5])}"
            )
        return other.loc[ref.index, ref.columns]
    if isinstance(ref, pd.Series) and isinstance(other, pd.Series):
        missing = ref.index.difference(other.index)
        if len(missing):
            raise KeyError(
                f"{len(missing)} entries of {name_ref} are missing from {name_other}, "
                f"e.g. {list(missing[:5])}"
            )
        return other.loc[ref.index]
    return other


def column_names(x: Any, n: int) -> pd.Index:
    """Column labels of a DataFrame, or ``0..n-1`` for arrays."""
    if isinstance(x, pd.DataFrame):
        return pd.Index(x.columns)
    return pd.RangeIndex(n)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns of two 2-D arrays, NaN for constant columns."""
    constant = (a == a[:1]).all(axis=0) | (b == b[:1]).all(axis=0)
    ac = a - a.mean(axis=0)
    bc = b - b.mean(axis=0)
    num = (ac * bc).sum(axis=0)
    den = np.sqrt((ac * ac).sum(axis=0) * (bc * bc).sum(axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    r = np.clip(r, -1.0, 1.0)
    r[constant | (den == 0)] = np.nan
    return r


def check_k(k: int, n: int, what: str = "features") -> int:
    """Check that ``k`` is a positive integer no larger than ``n``."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of {what} ({n})")
    return int(k)

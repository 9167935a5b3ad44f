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


#: setup arguments whose obs columns hold categories, and those holding numbers
CATEGORICAL_KEYS = ("batch_key", "labels_key", "categorical_covariate_keys")
CONTINUOUS_KEYS = ("continuous_covariate_keys", "size_factor_key")


def _columns(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _value_kind(value) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool | np.bool_):
        return "boolean"
    if isinstance(value, int | float | np.number):
        return "number"
    return type(value).__name__


def _check_categorical_column(
    series, arg: str, col: str, where: str, allow_missing: bool = False
) -> None:
    import pandas as pd

    name = f"{arg}={col!r} ({where}.obs[{col!r}])"
    n_missing = int(series.isna().sum())
    if n_missing and not allow_missing:
        if arg == "labels_key":
            fix = (
                "mark unlabelled cells with the unlabeled_category (default 'Unknown') instead, "
                f"e.g. obs[{col!r}] = obs[{col!r}].astype(object).fillna('Unknown')"
            )
        else:
            fix = f"fill them or keep the cells with a value, e.g. adata[obs[{col!r}].notna()]"
        raise ValueError(
            f"{name} has no value (NaN) for {n_missing} of {len(series)} cells; {fix}."
        )
    series = series.dropna()
    if isinstance(series.dtype, pd.CategoricalDtype):
        values = series.cat.categories[series.cat.codes.unique()]
    else:
        values = pd.unique(series.to_numpy())
    kinds = {_value_kind(v) for v in values}
    if kinds - {"string", "number", "boolean"}:
        odd = sorted(kinds - {"string", "number", "boolean"})
        raise ValueError(
            f"{name} holds {', '.join(odd)} values; categories must be strings, e.g. "
            f"obs[{col!r}] = obs[{col!r}].astype(str)."
        )
    if len(kinds) > 1:
        raise ValueError(
            f"{name} mixes {' and '.join(sorted(kinds))} values; make them one kind, e.g. "
            f"obs[{col!r}] = obs[{col!r}].astype(str)."
        )
    if arg == "labels_key" and kinds and kinds != {"string"}:
        kind = kinds.pop()
        raise ValueError(
            f"{name} holds {kind} values; cell labels must be strings (the unlabelled category "
            f"is one), e.g. obs[{col!r}] = obs[{col!r}].astype(str)."
        )


def _check_continuous_column(series, arg: str, col: str, where: str) -> None:
    import pandas as pd

    name = f"{arg}={col!r} ({where}.obs[{col!r}])"
    if isinstance(series.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        example = series.dropna().iloc[0] if series.notna().any() else None
        raise ValueError(
            f"{name} must hold numbers, found dtype {series.dtype} (e.g. {example!r})."
        )
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} NaN or infinite values of {len(values)}; it must be "
            "finite for every cell."
        )
    if arg == "size_factor_key" and np.any(values <= 0):
        n_bad = int(np.sum(values <= 0))
        raise ValueError(
            f"{name} has {n_bad} values <= 0 (min {values.min():g}); size factors must be "
            "greater than 0."
        )


def check_obs_values(
    obs,
    keys: dict[str, str | list[str] | None],
    where: str,
    allow_missing_labels: bool = False,
) -> None:
    """Raise a one-line ``ValueError`` naming the first registered ``obs`` column that is unusable.

    Categorical columns (``batch_key``, ``labels_key``, ``categorical_covariate_keys``) must
    have a value in every cell and values of one kind (strings, numbers or booleans; cell
    labels must be strings). Continuous columns (``continuous_covariate_keys``,
    ``size_factor_key``) must be numeric and finite, and size factors greater than 0.

    Parameters
    ----------
    obs
        The ``.obs`` DataFrame holding the columns.
    keys
        Setup argument -> column name(s); ``None`` entries and unknown arguments are skipped.
    where
        How to name the container in the error (e.g. ``"adata"`` or ``"mdata['rna']"``).
    allow_missing_labels
        Accept NaN labels (query data, whose unlabelled cells scvi-tools marks itself).

    Examples
    --------
    >>> obs = pd.DataFrame({"batch": ["a", None]})
    >>> check_obs_values(obs, {"batch_key": "batch"}, "adata")
    Traceback (most recent call last):
    ...
    ValueError: batch_key='batch' (adata.obs['batch']) has no value (NaN) for 1 of 2 cells; ...
    """
    for arg, value in keys.items():
        for col in _columns(value):
            if col not in obs.columns:
                continue  # check_obs_keys names missing columns
            if arg in CATEGORICAL_KEYS:
                allow = allow_missing_labels and arg == "labels_key"
                _check_categorical_column(obs[col], arg, col, where, allow_missing=allow)
            elif arg in CONTINUOUS_KEYS:
                _check_continuous_column(obs[col], arg, col, where)


def check_batch_size(batch_size, allow_none: bool = True) -> int | None:
    """Return ``batch_size`` as an int, or raise a ``ValueError`` unless it is at least 1.

    Parameters
    ----------
    batch_size
        Cells per minibatch.
    allow_none
        Accept ``None`` (meaning the default) and return it unchanged.

    Examples
    --------
    >>> check_batch_size(64)
    64
    """
    if batch_size is None and allow_none:
        return None
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer of at least 1, got {batch_size!r}.")
    return int(batch_size)


class RestoreOnError:
    """Context manager that removes what a failed registration added to an AnnData/MuData.

    scvi-tools writes ``_scvi_*`` columns to ``.obs`` and keys to ``.uns`` while it registers
    fields; if a later field fails, those writes would stay. On an exception, every ``obs``
    column, ``obsm`` and ``uns`` key that was not there before is removed again (for MuData, in
    the MuData and in each of its modalities).

    Examples
    --------
    >>> with RestoreOnError(adata):
    ...     manager.register_fields(adata)
    """

    def __init__(self, data):
        self.containers = [data] + list(getattr(data, "mod", {}).values())

    def __enter__(self):
        self.before = [
            (set(c.obs.columns), set(c.obsm.keys()), set(c.uns.keys())) for c in self.containers
        ]
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            return False
        for container, (obs, obsm, uns) in zip(self.containers, self.before):
            added = [c for c in container.obs.columns if c not in obs]
            if added:
                container.obs.drop(columns=added, inplace=True)
            for key in [k for k in container.obsm.keys() if k not in obsm]:
                del container.obsm[key]
            for key in [k for k in container.uns.keys() if k not in uns]:
                del container.uns[key]
        return False

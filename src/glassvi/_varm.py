"""Features x columns tables in ``.varm`` stored as plain arrays, their column names in ``.uns``.

h5ad writes the columns of a DataFrame in ``.varm`` as keys of an h5 group, and h5 keys may not
hold a "/" (anndata warns now and will refuse it), yet class names such as "CD4+/CD25 T Reg"
and gene-set names such as "GO:0000082 G1/S transition of mitotic cell cycle" do. So glassvi
writes every table it keeps in ``.varm`` as a plain array, as ``.obsm`` entries are, and keeps
the column names in a record in ``.uns``:

- a program mask ``varm[key]`` (``glassvi.pp``): ``uns[key]["names"]``;
- the decoder weights of ``explain()`` and its attribution tables: the record ``.uns[prefix]``
  or ``.uns[key]`` lists the entries it describes in ``varm_keys`` (field -> varm key), and
  :data:`COLUMN_FIELDS` says which of its fields names each entry's columns (``columns``;
  ``group_columns`` for the per-group entries ``varm[key + "_by_<groupby>"]``).

Entries written by earlier versions (DataFrames) are read as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: the ``varm_keys`` field of a record -> the record field holding that entry's column names
COLUMN_FIELDS = {
    "weights": "columns",
    "mean": "columns",
    "mean_abs": "columns",
    "group_mean": "group_columns",
    "group_mean_abs": "group_columns",
}
#: field of a program mask's record ``uns[key]`` naming the mask's columns
MASK_NAMES = "names"


def _names(values: Any, n: int) -> list[str] | None:
    names = [str(c) for c in values]
    return names if len(names) == n else None


def stored_columns(uns: Mapping, key: str, n: int) -> list[str] | None:
    """Column names of ``varm[key]`` recorded in ``uns`` (``None`` when no record has them).

    Parameters
    ----------
    uns
        The ``.uns`` of the AnnData holding the entry, or of its MuData.
    key
        The ``.varm`` key.
    n
        Number of columns of the entry; a list of another length is not its names.

    Returns
    -------
    The names, or ``None``.

    Examples
    --------
    >>> uns = {"k": {"varm_keys": {"mean": "k", "mean_abs": "k_abs"}, "columns": ["a/b", "c"]}}
    >>> stored_columns(uns, "k_abs", 2)
    ['a/b', 'c']
    >>> stored_columns({"programs": {"names": ["G1/S transition"]}}, "programs", 1)
    ['G1/S transition']
    """
    for record in uns.values():
        if not isinstance(record, Mapping):
            continue
        varm_keys = record.get("varm_keys")
        if not isinstance(varm_keys, Mapping):
            continue
        for field, entry in varm_keys.items():
            names_field = COLUMN_FIELDS.get(str(field))
            if str(entry) != key or names_field is None or names_field not in record:
                continue
            names = _names(record[names_field], n)
            if names is not None:
                return names
    record = uns.get(key)
    if isinstance(record, Mapping) and MASK_NAMES in record:
        names = _names(record[MASK_NAMES], n)
        if names is not None:
            return names
    for record in uns.values():  # decoder weights recorded without varm_keys
        if isinstance(record, Mapping) and record.get("weights_key") == key:
            names = _names(record.get("columns", []), n)
            if names is not None:
                return names
    return None


def entry_columns(data: Any, container: Any, key: str) -> list[str] | None:
    """Column names of ``container.varm[key]``: a DataFrame's columns or the recorded names.

    The records are looked up in ``container.uns``, then in ``data.uns`` (a MuData keeps the
    records of ``explain()`` in its own ``.uns``, the masks' in each modality's).

    Examples
    --------
    >>> entry_columns(adata, adata, "programs")  # doctest: +SKIP
    ['GO:0000082 G1/S transition of mitotic cell cycle', ...]
    """
    values = container.varm[key]
    if isinstance(values, pd.DataFrame):
        return [str(c) for c in values.columns]
    n = np.shape(values)[1] if np.ndim(values) == 2 else 0
    if not n:
        return None
    names = stored_columns(container.uns, key, n)
    if names is None and data is not container:
        names = stored_columns(data.uns, key, n)
    return names


def entry_frame(data: Any, container: Any, key: str) -> pd.DataFrame | None:
    """``container.varm[key]`` as a named DataFrame (``None`` when its names are not recorded).

    Examples
    --------
    >>> entry_frame(adata, adata, "programvi_weights")["G1/S transition"]  # doctest: +SKIP
    """
    values = container.varm[key]
    if isinstance(values, pd.DataFrame):
        return values
    names = entry_columns(data, container, key)
    if names is None:
        return None
    return as_frame(values, container.var_names, names)


def as_frame(values: Any, index: pd.Index, columns: list[str] | None) -> pd.DataFrame:
    """A ``.varm`` entry as a DataFrame indexed by ``index`` (a DataFrame is returned as is).

    Without column names the columns are numbered ``"0"``, ``"1"``, ...

    Examples
    --------
    >>> as_frame(np.ones((2, 1)), pd.Index(["g1", "g2"]), ["a/b"]).columns.tolist()
    ['a/b']
    """
    if isinstance(values, pd.DataFrame):
        return values
    values = np.asarray(values.toarray() if hasattr(values, "toarray") else values)
    if values.ndim != 2:
        raise ValueError(f"a .varm entry must be two-dimensional, got shape {values.shape}.")
    if columns is None:
        columns = [str(i) for i in range(values.shape[1])]
    return pd.DataFrame(values, index=index, columns=columns)


def has_slash(names: Any) -> list[str]:
    """The names holding a "/", which h5ad cannot write as the keys of a DataFrame's columns.

    Examples
    --------
    >>> has_slash(["G1/S transition", "apoptosis"])
    ['G1/S transition']
    """
    return [str(n) for n in names if "/" in str(n)]

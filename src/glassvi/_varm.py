"""Features x columns tables in ``.varm`` stored as plain arrays, their column names in ``.uns``.

h5ad writes the columns of a DataFrame in ``.varm`` as keys of an h5 group, and h5 keys may not
hold a "/" (anndata warns now and will refuse it), yet class names such as "CD4+/CD25 T Reg"
do. So glassvi writes its per-target attribution tables as plain float arrays, as ``.obsm``
entries are, and keeps the column names in the record ``.uns[key]`` that describes them:

- ``columns`` for ``varm[key]`` and ``varm[key + "_abs"]``;
- ``group_columns`` for the per-group entries ``varm[key + "_by_<groupby>"]`` (and ``_abs``).

The record lists the entries it describes in ``varm_keys`` (field -> varm key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

#: the ``varm_keys`` field of a record -> the record field holding that entry's column names
COLUMN_FIELDS = {
    "mean": "columns",
    "mean_abs": "columns",
    "group_mean": "group_columns",
    "group_mean_abs": "group_columns",
}


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
            names = [str(c) for c in record[names_field]]
            if len(names) == n:
                return names
    return None


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

"""Helpers shared by the pp functions: input checks, mask building and writing to AnnData."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

logger = logging.getLogger(__name__)


def check_anndata(adata: Any, argument: str = "adata", modality: str = "rna") -> None:
    """Raise a TypeError unless ``adata`` is an AnnData (a MuData modality is one)."""
    if isinstance(adata, AnnData):
        return
    if type(adata).__name__ == "MuData":
        raise TypeError(
            f"`{argument}` is a MuData; pass one modality instead, e.g. mdata['{modality}']"
        )
    raise TypeError(f"`{argument}` must be an AnnData, got {type(adata).__name__}")


def examples(values: Sequence[Any] | np.ndarray | pd.Index, n: int = 5) -> str:
    """Format the first ``n`` values for an error message."""
    values = list(values[:n])
    return ", ".join(repr(str(value)) for value in values)


def dense_columns(membership: sparse.spmatrix, columns: np.ndarray) -> np.ndarray:
    """Densify the chosen ``columns`` of a sparse membership matrix as booleans.

    Going through the nonzero coordinates avoids a dense integer intermediate, which for
    20,000 genes x 5,000 programs would take several times the memory of the result.
    """
    membership = sparse.csc_matrix(membership)[:, columns]
    membership.eliminate_zeros()
    rows, cols = membership.nonzero()
    dense = np.zeros(membership.shape, dtype=bool)
    dense[rows, cols] = True
    return dense


def write_varm_mask(
    adata: AnnData, key_added: str, mask: pd.DataFrame, provenance: dict[str, Any]
) -> None:
    """Store ``mask`` in ``adata.varm``, ``provenance`` in ``adata.uns``; warn on overwrite.

    The mask is stored as a plain boolean array, its program names in ``provenance["names"]``:
    h5ad would write a DataFrame's columns as h5 keys, which may not hold the "/" of names
    such as "GO:0000082 G1/S transition of mitotic cell cycle".
    """
    existing = [
        f"adata.{attr}[{key_added!r}]"
        for attr in ("varm", "uns")
        if key_added in getattr(adata, attr)
    ]
    if existing:
        warnings.warn(f"overwriting existing {' and '.join(existing)}", UserWarning, stacklevel=3)
    adata.varm[key_added] = np.ascontiguousarray(mask.to_numpy(), dtype=bool)
    adata.uns[key_added] = {**provenance, "names": np.asarray(mask.columns, dtype=object)}
    logger.info(
        "added adata.varm[%r] (%d features x %d programs, boolean) and adata.uns[%r]",
        key_added,
        mask.shape[0],
        mask.shape[1],
        key_added,
    )


def h5ad_safe(params: dict[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values, which h5ad cannot store."""
    return {key: value for key, value in params.items() if value is not None}

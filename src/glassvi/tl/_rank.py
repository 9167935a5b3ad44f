"""Rank features by attributions already stored in the AnnData/MuData."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import _keys

logger = logging.getLogger(__name__)


def _containers(adata, key: str, modality: str | None) -> list[tuple[str | None, AnnData]]:
    if isinstance(adata, MuData):
        if modality is not None:
            if modality not in adata.mod:
                raise KeyError(f"modality {modality!r} not in the MuData ({list(adata.mod)}).")
            found = [(modality, adata[modality])] if key in adata[modality].varm else []
        else:
            found = [(m, adata[m]) for m in adata.mod if key in adata[m].varm]
        if not found:
            where = f"mdata[{modality!r}].varm" if modality else "the varm of any modality"
            raise KeyError(f"{key!r} is not in {where}.")
        return found
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData or MuData, got {type(adata).__name__}.")
    if modality is not None:
        raise ValueError("modality is only meaningful for a MuData.")
    if key not in adata.varm:
        raise KeyError(f"{key!r} is not in .varm (keys: {list(adata.varm.keys())}).")
    return [(None, adata)]


def rank_features(
    adata: AnnData | MuData,
    key: str,
    group: str | tuple[str, str],
    n: int | None = None,
    modality: str | None = None,
    absolute: bool = False,
) -> pd.DataFrame:
    """Rank features by one column of an attribution (or loadings) entry in ``.varm``.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modalities hold the entry in their ``.varm``.
    key
        ``.varm`` key, e.g. ``"linearvi_integrated_gradients_labels"`` (mean signed attribution)
        or ``"linearvi_integrated_gradients_labels_abs"`` (mean absolute attribution).
    group
        Column to rank by: a class (``target="labels"``), a latent unit (``target="latent"``),
        or for per-group entries (``..._by_<groupby>``) the pair ``(group, target)`` or the
        column name ``"<group>|<target>"``.
    n
        Keep the ``n`` best features; all by default.
    modality
        For a MuData: rank the features of this modality only (default: every modality that
        holds ``key``, ranked together).
    absolute
        Rank by the absolute value of the score (largest effect of either sign first).

    Returns
    -------
    DataFrame with columns ``feature``, ``score`` and ``rank`` (1 for the best feature), plus
    ``modality`` for a MuData, best first. Features with a missing score are left out (logged).

    Examples
    --------
    >>> model.explain(method="integrated_gradients", target="labels")
    >>> glassvi.tl.rank_features(adata, "linearvi_integrated_gradients_labels", "B cells", n=10)
    """
    if isinstance(group, tuple):
        group = _keys.GROUP_SEP.join(map(str, group))
    if n is not None and (not isinstance(n, int | np.integer) or n < 1):
        raise ValueError(f"n must be a positive integer or None, got {n!r}.")
    frames = []
    for mod, cont in _containers(adata, key, modality):
        values = cont.varm[key]
        if not isinstance(values, pd.DataFrame):
            raise TypeError(f".varm[{key!r}] is not a DataFrame with named columns.")
        if group not in values.columns:
            raise KeyError(
                f"{group!r} is not a column of .varm[{key!r}] (columns: {list(values.columns)})."
            )
        frame = pd.DataFrame(
            {"feature": values.index.astype(str), "score": values[group].to_numpy(float)}
        )
        if mod is not None:
            frame["modality"] = mod
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    missing = int(table["score"].isna().sum())
    if missing:
        logger.warning("rank_features: %d features without a score are left out.", missing)
        table = table.dropna(subset=["score"])
    order = table["score"].abs() if absolute else table["score"]
    table = table.iloc[np.argsort(-order.to_numpy(), kind="stable")].reset_index(drop=True)
    if n is not None:
        table = table.head(n)
    table.insert(2, "rank", np.arange(1, len(table) + 1))
    return table

"""Rank features by attributions already stored in the AnnData/MuData, in scanpy's layout.

The computation (:func:`rank_table`) works on a DataFrame features x groups; the thin layer
:func:`rank_features` reads ``.varm``, writes ``.uns[key_added]`` in the layout of
:func:`scanpy.tl.rank_genes_groups` and logs what it added.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from .. import _keys, _varm

logger = logging.getLogger(__name__)

#: what each ranking orders by
DIRECTIONS = ("for", "against")
#: columns scanpy's getters expect besides ``names`` and ``scores``; attributions have no test
_NO_TEST_FIELDS = ("logfoldchanges", "pvals", "pvals_adj")


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


def _frame(adata, cont: AnnData, key: str) -> pd.DataFrame:
    """``cont.varm[key]`` as a DataFrame, its column names from ``cont.uns`` or ``adata.uns``."""
    frame = _varm.entry_frame(adata, cont, key)
    if frame is None:
        raise TypeError(
            f".varm[{key!r}] is an array whose column names are not recorded in .uns "
            "(glassvi records them in uns[key]['columns'], uns[prefix]['columns'] or, for "
            "program masks, uns[key]['names'])."
        )
    return frame


def varm_df(adata: AnnData | MuData, key: str, *, modality: str | None = None) -> pd.DataFrame:
    """A ``.varm`` entry as a DataFrame: features x columns, with its column names.

    glassvi writes every features x columns table to ``.varm`` as a plain array (h5ad
    cannot store column names such as ``"CD4+/CD25 T Reg"`` or ``"G1/S transition"`` as
    keys) and keeps the column names in ``.uns``:

    - program masks (``glassvi.pp``): ``uns[key]["names"]``;
    - decoder weights (``explain()``): ``uns[prefix]["columns"]``;
    - attribution tables: ``uns[key]["columns"]`` (``group_columns`` for per-group entries).

    This returns the table with its names; a DataFrame entry (as written by earlier
    versions, or put there by the user) is returned as stored.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modality holds ``varm[key]``.
    key
        ``.varm`` key, e.g. ``"programs"``, ``"programvi_weights"``,
        ``"linearvi_integrated_gradients_labels"`` or its ``"_abs"`` companion.
    modality
        For a MuData: the modality to read; by default the first one holding ``key``.

    Returns
    -------
    pandas.DataFrame
        Indexed by the ``var_names`` of the AnnData (modality) holding the entry.

    Examples
    --------
    >>> model.explain(method="integrated_gradients", target="labels")
    >>> table = glassvi.tl.varm_df(adata, "linearvi_integrated_gradients_labels")
    >>> table["B cells"].nlargest(10)  # the strongest evidence for the class
    >>> mask = glassvi.tl.varm_df(adata, "programs")  # genes x programs, boolean
    >>> weights = glassvi.tl.varm_df(mdata, "programvi_weights", modality="atac")
    """
    mod, cont = _containers(adata, key, modality)[0]
    return _frame(adata, cont, key)


def rank_table(
    scores: pd.DataFrame,
    groups: Sequence[str] | None = None,
    *,
    direction: Literal["for", "against"] = "for",
    absolute: bool = False,
    n_top: int | None = None,
) -> pd.DataFrame:
    """Rank the rows (features) of a features x groups table, group by group.

    Parameters
    ----------
    scores
        Features x groups of signed scores (e.g. mean attributions).
    groups
        Columns to rank; all by default.
    direction
        ``"for"``: largest positive score first (evidence for the group). ``"against"``:
        most negative score first (evidence against the group).
    absolute
        Rank by ``|score|`` instead (largest effect of either sign first); ``direction`` must
        then be ``"for"``.
    n_top
        Keep the ``n_top`` best features of every group; all by default.

    Returns
    -------
    pandas.DataFrame
        Long table with columns ``group``, ``names``, ``scores`` (the signed score, whatever
        the ordering) and ``rank`` (1 for the best feature), best first within each group.
        Missing scores rank last.

    Examples
    --------
    >>> table = pd.DataFrame({"B": [2.0, -3.0, 1.0]}, index=["MS4A1", "CD3E", "CD79A"])
    >>> rank_table(table)["names"].tolist()
    ['MS4A1', 'CD79A', 'CD3E']
    >>> rank_table(table, direction="against", n_top=1)["names"].tolist()
    ['CD3E']
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
    if absolute and direction != "for":
        raise ValueError("absolute=True ranks by |score|; leave direction at 'for'.")
    if n_top is not None and (
        isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1
    ):
        raise ValueError(f"n_top must be a positive integer or None, got {n_top!r}.")
    groups = list(scores.columns) if groups is None else list(groups)
    missing = [g for g in groups if g not in scores.columns]
    if missing:
        raise KeyError(
            f"{missing[0]!r} is not a column of the scores (columns: {list(scores.columns)})."
        )
    names = scores.index.astype(str).to_numpy()
    frames = []
    for group in groups:
        values = scores[group].to_numpy(dtype=float)
        order_by = np.abs(values) if absolute else (values if direction == "for" else -values)
        # missing scores rank last; the stable sort keeps feature order among ties
        order = np.argsort(np.where(np.isnan(order_by), np.inf, -order_by), kind="stable")
        if n_top is not None:
            order = order[:n_top]
        frames.append(
            pd.DataFrame(
                {
                    "group": str(group),
                    "names": names[order],
                    "scores": values[order],
                    "rank": np.arange(1, order.size + 1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _structured(table: pd.DataFrame, groups: Sequence[str], column: str, dtype) -> np.recarray:
    columns = [table.loc[table["group"] == g, column].to_numpy() for g in groups]
    if dtype is str:
        width = max(1, max((len(v) for c in columns for v in c), default=1))
        dtype = f"U{width}"
    return np.rec.fromarrays(
        [c.astype(dtype) for c in columns], dtype=[(str(g), dtype) for g in groups]
    )


def rank_features(
    adata: AnnData | MuData,
    key: str,
    group: str | tuple[str, str] | Sequence[str] | None = None,
    *,
    absolute: bool = False,
    direction: Literal["for", "against"] = "for",
    n_top: int | None = None,
    key_added: str | None = None,
    groupby: str | None = None,
    modality: str | None = None,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Rank features by an attribution (or loadings) entry of ``.varm``, in scanpy's layout.

    Writes ``.uns[key_added]`` in the layout of :func:`scanpy.tl.rank_genes_groups`, so
    :func:`scanpy.get.rank_genes_groups_df` (``key=key_added``) and the
    ``scanpy.pl.rank_genes_groups*`` plots work on it.

    Parameters
    ----------
    adata
        AnnData, or MuData whose modalities hold the entry in their ``.varm``.
    key
        ``.varm`` key, e.g. ``"linearvi_integrated_gradients_labels"`` (mean signed
        attribution of each class) or a loadings entry.
    group
        Column(s) to rank: a class (``target="labels"``), a latent unit (``target="latent"``),
        for per-group entries (``..._by_<groupby>``) the pair ``(group, target)`` or the column
        name ``"<group>|<target>"``; a list of columns; ``None`` (default): every column.
    absolute
        Rank by ``|score|`` (largest effect of either sign first). For signed attributions
        this mixes evidence for and against a class; the default ranks by signed evidence.
    direction
        ``"for"`` (default): features with the largest positive score first, the evidence
        *for* each class. ``"against"``: the most negative first, the evidence against it.
    n_top
        Number of features kept per group; all by default.
    key_added
        ``.uns`` key written; default ``"rank_features"`` (``"rank_features_against"`` for
        ``direction="against"``, ``"rank_features_abs"`` for ``absolute=True``).
    groupby
        ``.obs`` column whose categories are the groups, recorded as ``params["groupby"]``
        for scanpy's plots; defaults to the labels key recorded by ``explain`` for
        ``target="labels"``, else to the target name.
    modality
        For a MuData: rank this modality's features and write to ``mdata[modality].uns``
        (where scanpy's plots find the expression). By default the features of every
        modality holding ``key`` are ranked together and written to ``mdata.uns``.
    inplace
        Write ``.uns[key_added]`` (default), or return the ranking without writing.

    Returns
    -------
    ``None`` when ``inplace=True``; else a DataFrame with columns ``group``, ``names``,
    ``scores`` (the signed values of ``varm[key]``), ``rank`` (1 = best) and, for a
    MuData ranked over several modalities, ``modality``.

    Notes
    -----
    ``.uns[key_added]`` holds structured arrays with one field per group: ``names`` (best
    first), ``scores`` (the signed entry of ``varm[key]``, whatever the ordering, so
    ``direction="against"`` lists negative scores), and ``logfoldchanges``, ``pvals`` and
    ``pvals_adj`` filled with NaN (attributions come with no test; scanpy's getter expects
    the fields). ``params`` holds ``groupby``, ``reference`` (``"rest"``), ``method`` (the
    attribution method, or ``"varm"``), ``use_raw`` (False), ``layer``, and glassvi's
    ``key``, ``direction`` and ``absolute``.

    Examples
    --------
    >>> model.explain(method="integrated_gradients", target="labels")
    >>> glassvi.tl.rank_features(adata, "linearvi_integrated_gradients_labels", n_top=50)
    >>> sc.get.rank_genes_groups_df(adata, "B cells", key="rank_features").head()
    >>> sc.pl.rank_genes_groups(adata, key="rank_features")
    >>> glassvi.tl.rank_features(
    ...     adata, "linearvi_integrated_gradients_labels", direction="against", n_top=50
    ... )  # written to .uns["rank_features_against"]
    """
    if isinstance(group, tuple):
        group = _keys.GROUP_SEP.join(map(str, group))
    groups = [group] if isinstance(group, str) else group
    containers = _containers(adata, key, modality)
    frames = []
    for mod, cont in containers:
        values = _frame(adata, cont, key)
        if groups is not None:
            absent = [g for g in groups if g not in values.columns]
            if absent:
                raise KeyError(
                    f"{absent[0]!r} is not a column of .varm[{key!r}] "
                    f"(columns: {list(values.columns)})."
                )
        frame = values.copy()
        frame.columns = frame.columns.astype(str)
        frames.append((mod, frame))
    together = len(frames) > 1
    if together:
        scores = pd.concat([f for _, f in frames])
        modality_of = pd.Series(
            np.concatenate([[m] * len(f) for m, f in frames]), index=scores.index.astype(str)
        )
    else:
        scores = frames[0][1]
    table = rank_table(scores, groups, direction=direction, absolute=absolute, n_top=n_top)
    n_missing = int(table["scores"].isna().sum())
    if n_missing:
        logger.warning(
            "rank_features: %d scores of %s are missing; those features rank last.",
            n_missing,
            key,
        )
    if together:
        table["modality"] = modality_of.loc[table["names"]].to_numpy()
    if not inplace:
        return table

    group_names = list(dict.fromkeys(table["group"]))
    target = adata[modality] if isinstance(adata, MuData) and modality is not None else adata
    meta = adata.uns.get(key, {}) if isinstance(adata.uns.get(key), dict) else {}
    if groupby is None:
        groupby = meta.get("labels_key") or meta.get("target") or key
    if key_added is None:
        key_added = _keys.rank_features(direction, absolute)
    nan = table.assign(nan=np.nan)
    result = {
        "params": {
            "groupby": str(groupby),
            "reference": "rest",
            "method": str(meta.get("method", "varm")),
            "use_raw": False,
            "layer": "None",
            "corr_method": "None",
            "key": key,
            "direction": direction,
            "absolute": bool(absolute),
        },
        "names": _structured(table, group_names, "names", str),
        "scores": _structured(table, group_names, "scores", np.float32),
    }
    for field in _NO_TEST_FIELDS:
        result[field] = _structured(nan, group_names, "nan", np.float32)
    if together:
        result["modality"] = _structured(table, group_names, "modality", str)
    if key_added in target.uns:
        logger.warning("rank_features: overwriting .uns[%r].", key_added)
    target.uns[key_added] = result
    logger.info("added .uns[%r] (%d groups)", key_added, len(group_names))
    return None

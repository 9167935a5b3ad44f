"""Turn aggregated attributions into the ``.varm``/``.obsm``/``.uns`` entries that are written."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import _keys
from .._keys import GROUP_SEP, group_columns
from ._engine import AttributionResult
from ._protocol import ExplainableModel

logger = logging.getLogger(__name__)


def convergence_stats(result: AttributionResult) -> dict:
    """Summary of the completeness gap ``sum(attributions) - (f(x) - f(baseline))``."""
    if result.delta is None:
        return {}
    delta = np.abs(result.delta[np.isfinite(result.delta)])
    gap = np.abs(result.output_gap[np.isfinite(result.output_gap)])
    if delta.size == 0:
        return {}
    mean_gap = float(gap.mean()) if gap.size else float("nan")
    return {
        "mean_abs_delta": float(delta.mean()),
        "max_abs_delta": float(delta.max()),
        "mean_abs_output_difference": mean_gap,
        "relative_delta": float(delta.mean() / mean_gap) if mean_gap > 0 else float("nan"),
    }


def attribution_results(
    result: AttributionResult,
    *,
    key: str,
    var_names: Mapping[str, pd.Index],
    obs_names: pd.Index,
    explained: np.ndarray,
    target_columns: Sequence[str],
    cell_columns: Sequence[str],
    groupby: str | None,
    group_names: Sequence[str] | None,
    meta: dict,
) -> dict:
    """Results dict (``{"obsm", "varm", "uns"}``) of one attribution run.

    Parameters
    ----------
    result
        Output of :func:`~glassvi.explain.attribute`.
    key
        Key of the entries, e.g. ``"linearvi_integrated_gradients_labels"``.
    var_names
        Per modality (in input order), the feature names.
    obs_names
        Cell names of the AnnData/MuData the cell-level entry is written to.
    explained
        Positions (in ``obs_names``) of the explained cells, in the order of ``result``.
    target_columns
        Names of the targets (latent units, classes or outputs).
    cell_columns
        Column names of the cell-level entry.
    groupby, group_names
        The ``obs`` column and its categories, or ``None``.
    meta
        Extra ``.uns`` fields (method, target, baseline, ...).

    Returns
    -------
    dict with ``"obsm"`` ``{key: array}`` (cells x ``cell_columns``), ``"varm"``
    ``{modality: {key: array, key + "_abs": array, ...}}`` (features x ``target_columns``; the
    per-group entries features x ``uns[key]["group_columns"]``) and ``"uns"`` ``{key: dict}``.

    Examples
    --------
    >>> results = attribution_results(res, key="linearvi_saliency_latent", ...)
    >>> results["varm"]["rna"]["linearvi_saliency_latent"].shape  # genes x factors
    >>> results["uns"]["linearvi_saliency_latent"]["columns"]  # the factors' names
    """
    varm: dict[str, dict[str, np.ndarray]] = {}
    keys = {"mean": key, "mean_abs": _keys.absolute(key)}
    by_key = _keys.by_group(key, groupby) if groupby is not None else None
    if by_key is not None:
        keys.update({"group_mean": by_key, "group_mean_abs": _keys.absolute(by_key)})
    # plain features x columns arrays, like obsm: h5ad would store DataFrame columns as h5 keys,
    # which may not hold the "/" of class names; the names are in uns[key] (see glassvi._varm)
    for m, role in enumerate(var_names):
        entries = {
            key: np.asarray(result.mean[m][0].T, dtype=np.float32),
            _keys.absolute(key): np.asarray(result.mean_abs[m][0].T, dtype=np.float32),
        }
        if by_key is not None:
            for entry, arr in (
                (by_key, result.mean[m]),
                (keys["group_mean_abs"], result.mean_abs[m]),
            ):
                entries[entry] = np.asarray(arr[1:].reshape(-1, arr.shape[-1]).T, np.float32)
        varm[role] = entries
    cells = np.full((len(obs_names), len(cell_columns)), np.nan, dtype=np.float32)
    cells[explained] = result.cell_scores
    # a plain array (scanpy's convention); the column names are in uns[key]["cell_columns"]
    obsm = {key: cells}
    empty = [t for t, c in zip(target_columns, result.counts[0]) if c == 0]
    if empty:
        logger.warning(
            "%d of %d targets have no explained cell (their means are NaN): %s",
            len(empty),
            len(target_columns),
            ", ".join(map(str, empty)),
        )
    uns = {
        **meta,
        "columns": [str(c) for c in target_columns],
        "cell_columns": [str(c) for c in cell_columns],
        "n_cells": int(len(explained)),
        "n_cells_per_target": [int(c) for c in result.counts[0]],
        "varm_keys": dict(keys),
        "obsm_key": key,
        "convergence": convergence_stats(result),
    }
    if by_key is not None:
        uns["groupby"] = groupby
        uns["groups"] = [str(g) for g in group_names]
        uns["group_separator"] = GROUP_SEP
        uns["group_columns"] = group_columns(group_names, target_columns)
        uns["n_cells_per_group_target"] = result.counts[1:].astype(int).tolist()
    return {"obsm": obsm, "varm": varm, "uns": {key: uns}}


def _in_feature_order(value, model_names: pd.Index, var_names: pd.Index):
    """A features x columns result, computed in the model's order, in the order of ``var_names``.

    Data whose features were matched by name may list them in another order (or hold extra
    ones, which get NaN).
    """
    if isinstance(value, pd.DataFrame):
        return value if value.index.equals(var_names) else value.reindex(var_names)
    if model_names.equals(var_names):
        return value
    rows = pd.Index(model_names).get_indexer(var_names)
    value = np.asarray(value)
    # float results keep their precision; anything else widens to hold the NaN of extra rows
    dtype = value.dtype if value.dtype.kind == "f" else np.float64
    out = np.full((len(var_names), *value.shape[1:]), np.nan, dtype=dtype)
    out[rows >= 0] = value[rows[rows >= 0]]
    return out


def write_results(model: ExplainableModel, adata, results: dict, stacklevel: int = 3) -> None:
    """Write a results dict into the (Mu)Data, warning before overwriting keys.

    Cell-level entries go to ``adata.obsm``, feature-level entries to the ``varm`` of the
    AnnData (or MuData modality) holding each modality's features, metadata to ``adata.uns``.

    Parameters
    ----------
    model
        The model the results are of (it maps modality roles to MuData modalities).
    adata
        AnnData or MuData to write into.
    results
        ``{"obsm": {key: value}, "varm": {modality: {key: value}}, "uns": {key: value}}``.
    stacklevel
        Stack level of the overwrite warnings.

    Examples
    --------
    >>> write_results(model, adata, {"obsm": {}, "varm": {}, "uns": {"my_key": {}}})
    """
    targets = [(adata.obsm, k, "obsm") for k in results["obsm"]]
    for role, entries in results["varm"].items():
        cont = model._container(adata, role)
        mod = model._modality_names.get(role)
        where = f"mdata[{mod!r}].varm" if mod is not None else "varm"
        targets += [(cont.varm, k, where) for k in entries]
    targets += [(adata.uns, k, "uns") for k in results["uns"]]
    for store, key, where in targets:
        if key in store:
            warnings.warn(
                f"Overwriting existing .{where}[{key!r}].", UserWarning, stacklevel=stacklevel
            )
    for key, value in results["obsm"].items():
        adata.obsm[key] = value
    for role, entries in results["varm"].items():
        cont = model._container(adata, role)
        for key, value in entries.items():
            cont.varm[key] = _in_feature_order(value, model._var_names(role), cont.var_names)
    for key, value in results["uns"].items():
        adata.uns[key] = value
    written = list(results["obsm"]) + [k for e in results["varm"].values() for k in e]
    logger.info("added keys %s", ", ".join(written))

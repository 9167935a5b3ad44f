"""Inputs of an attribution run read from the (Mu)Data: cells, groups, baselines, minibatches."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.utils import track

from ._engine import AttributionBatch
from ._methods import METHODS
from ._protocol import ExplainableModel

logger = logging.getLogger(__name__)

#: named baselines
BASELINES = ("zeros", "mean", "background")


def _dense_rows(X, rows: np.ndarray) -> np.ndarray:
    sub = X[rows]
    sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
    return sub.astype(np.float32)


def _column_mean(X, binarise: bool) -> np.ndarray:
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if binarise:
            X = X.copy()
            X.data = (X.data > 0).astype(np.float32)
        return np.asarray(X.mean(axis=0)).ravel().astype(np.float32)
    X = np.asarray(X)
    return np.asarray((X > 0).mean(axis=0) if binarise else X.mean(axis=0), dtype=np.float32)


def check_same_features(model: ExplainableModel, adata) -> None:
    """Raise when ``adata``'s features differ from the training data's (names or order)."""
    if adata is model.adata:
        return
    for role in model.modalities:
        ref = model._var_names(role)
        got = model._var_names(role, adata)
        if len(got) != len(ref) or not got.equals(ref):
            raise ValueError(
                f"The features of {role} in adata do not match the model's ({len(got)} vs "
                f"{len(ref)} features, or in another order); subset and order them like "
                "the training data."
            )


def cell_groups(adata, groupby: str | None) -> tuple[np.ndarray | None, list]:
    """Group code of every cell (-1: no group) and the group names of ``obs[groupby]``."""
    if groupby is None:
        return None, []
    if groupby not in adata.obs:
        raise KeyError(
            f"groupby={groupby!r} is not a column of .obs (columns: {list(adata.obs.columns)})."
        )
    cats = pd.Categorical(adata.obs[groupby])
    codes = np.asarray(cats.codes, dtype=np.int64)
    n_missing = int((codes < 0).sum())
    if n_missing:
        logger.warning(
            "%d cells have no %s value; they count towards the overall means only.",
            n_missing,
            groupby,
        )
    return codes, [str(c) for c in cats.categories]


def cell_indices(adata, indices) -> np.ndarray:
    """Positions of the cells to explain, from positions or a boolean mask (all by default)."""
    if indices is None:
        return np.arange(adata.n_obs)
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (adata.n_obs,):
            raise ValueError(f"A boolean indices mask must have {adata.n_obs} entries.")
        idx = np.flatnonzero(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError("indices must be integer positions or a boolean mask of cells.")
    if idx.size == 0:
        raise ValueError("indices selects no cells.")
    if idx.min() < -adata.n_obs or idx.max() >= adata.n_obs:
        raise ValueError(f"indices out of range for {adata.n_obs} cells.")
    idx = np.where(idx < 0, idx + adata.n_obs, idx)
    if np.unique(idx).size != idx.size:
        raise ValueError("indices contains repeated cells.")
    return idx


def _registry_matrix(model: ExplainableModel, adata, role: str):
    manager = model.get_anndata_manager(adata, required=True)
    return manager.get_from_registry(model.module.registry_keys[role])


def baseline_rows(
    model: ExplainableModel,
    adata,
    method: str,
    baseline,
    n_background: int,
    seed: int,
    default: str | None = None,
) -> tuple[tuple[torch.Tensor, ...] | None, str]:
    """One baseline tensor per modality (one row, or a background sample) and its name.

    ``default`` replaces the method's default baseline when ``baseline`` is ``None``.
    """
    spec = METHODS[method]
    roles = model.modalities
    module = model.module
    if baseline is None:
        baseline = default or spec.default_baseline
    elif spec.default_baseline is None:
        logger.warning("method=%r uses no baseline; baseline=%r is ignored.", method, baseline)
        baseline = None
    if baseline is None:
        return None, "none"
    binarise = {r: module.likelihoods[r] == "bernoulli" for r in roles}
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(
                f"Unknown baseline {baseline!r}; choose from {', '.join(BASELINES)} or pass "
                "arrays (one per modality)."
            )
        if baseline == "zeros":
            rows = {r: np.zeros((1, module.n_features[r]), np.float32) for r in roles}
        elif baseline == "mean":
            rows = {
                r: _column_mean(_registry_matrix(model, adata, r), binarise[r])[None]
                for r in roles
            }
        else:
            if n_background < 2:
                raise ValueError(f"n_background must be at least 2, got {n_background}.")
            rng = np.random.default_rng(seed)
            pick = np.sort(
                rng.choice(adata.n_obs, size=min(n_background, adata.n_obs), replace=False)
            )
            rows = {}
            for r in roles:
                block = _dense_rows(_registry_matrix(model, adata, r), pick)
                rows[r] = (block > 0).astype(np.float32) if binarise[r] else block
        name = baseline
    else:
        given = baseline if isinstance(baseline, Mapping) else {roles[0]: baseline}
        if len(roles) > 1 and not isinstance(baseline, Mapping):
            raise ValueError(f"Pass one baseline array per modality as a dict over {roles}.")
        missing = set(roles) - set(given)
        if missing:
            raise ValueError(f"baseline lacks modalities {sorted(missing)}.")
        rows = {}
        for r in roles:
            arr = np.asarray(given[r], dtype=np.float32)
            arr = arr[None] if arr.ndim == 1 else arr
            if arr.ndim != 2 or arr.shape[1] != module.n_features[r]:
                raise ValueError(
                    f"baseline for {r} must have {module.n_features[r]} columns, got "
                    f"shape {arr.shape}."
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"baseline for {r} has non-finite values.")
            rows[r] = arr
        name = "custom"
    n_rows = {a.shape[0] for a in rows.values()}
    if len(n_rows) != 1:
        raise ValueError("Baseline arrays of all modalities must have the same number of rows.")
    if spec.needs_background and n_rows.pop() < 2:
        raise ValueError(
            f"method={method!r} needs a baseline distribution: baseline='background' or "
            "arrays with several rows."
        )
    return tuple(torch.as_tensor(rows[r], device=model.device) for r in roles), name


def attribution_batches(
    model: ExplainableModel,
    adata,
    explained: np.ndarray,
    group_codes: np.ndarray | None,
    batch_size: int,
    progress_bar: bool,
    description: str,
    with_labels: bool = False,
) -> Iterator[AttributionBatch]:
    """Minibatches of the explained cells: encoder inputs, covariates, positions, groups.

    With ``with_labels``, every batch carries the annotated class of its cells in the label
    head's order (-1 for cells of the unlabelled category).
    """
    module = model.module
    device = model.device
    loader = model._make_data_loader(
        adata=adata, indices=explained, batch_size=batch_size, shuffle=False
    )
    start = 0
    for tensors in track(loader, description=description, disable=not progress_bar):
        inputs = []
        for role in module.modalities:
            x = tensors[module.registry_keys[role]].to(device=device, dtype=torch.float32)
            if module.likelihoods[role] == "bernoulli":
                x = (x > 0).to(torch.float32)
            inputs.append(x)
        n = inputs[0].shape[0]
        covariates = tuple(
            v.to(device) if v is not None else None
            for v in (
                tensors.get(REGISTRY_KEYS.BATCH_KEY),
                tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
                tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            )
        )
        positions = np.arange(start, start + n)
        groups = None
        if group_codes is not None:
            groups = torch.as_tensor(group_codes[explained[positions]], device=device)
        start += n
        labels = None
        codes = tensors.get(REGISTRY_KEYS.LABELS_KEY) if with_labels else None
        if codes is not None:
            # the unlabelled category is coded after the classes of the head
            codes = codes.reshape(-1).long().to(device)
            labels = torch.where(codes < module.n_labels, codes, torch.full_like(codes, -1))
        yield AttributionBatch(tuple(inputs), covariates, positions, groups, labels)


def cell_masks(model: ExplainableModel, target_kind: str) -> list[torch.Tensor | None] | None:
    """Per modality, the decoder's features x units mask (``target="latent"`` only)."""
    if target_kind != "latent":
        return None
    masks = [getattr(model.module.decoders[r], "mask", None) for r in model.modalities]
    n_hidden = getattr(model.module, "n_decoys", 0)  # ProgramVAE's hidden decoy programs
    if n_hidden:
        masks = [None if m is None else m[:, : m.shape[1] - n_hidden] for m in masks]
    n_denovo = getattr(model.module, "n_denovo", 0)
    if n_denovo:
        # de novo units follow the programs and may use every feature
        masks = [
            None if m is None else torch.cat([m, m.new_ones(m.shape[0], n_denovo)], dim=1)
            for m in masks
        ]
    if all(m is None for m in masks):
        return None
    return masks

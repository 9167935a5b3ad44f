"""Model-side post-hoc attributions: validate, read the (Mu)Data, run the engine, shape results."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.utils import track

from ..explain import (
    ATTRIBUTION_METHODS,
    DEFAULT_BASELINE,
    TARGETS,
    TargetModel,
    attribute,
    attribution_results,
)
from ..explain._engine import AttributionBatch
from ..explain._targets import target_label

logger = logging.getLogger(__name__)

#: named baselines
BASELINES = ("zeros", "mean", "background")
#: per-cell results larger than this (bytes) need ``indices=``
_MAX_PER_CELL_BYTES = 2 * 1024**3


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


class AttributionMixin:
    """Post-hoc attributions (captum, shap) for glassvi models; used by ``explain``."""

    # ------------------------------------------------------------------------- validation
    def _check_same_features(self, adata) -> None:
        if adata is self.adata:
            return
        for role in self.modalities:
            ref = self._var_names(role)
            got = self._var_names(role, adata)
            if len(got) != len(ref) or not got.equals(ref):
                raise ValueError(
                    f"The features of {role} in adata do not match the model's ({len(got)} vs "
                    f"{len(ref)} features, or in another order); subset and order them like "
                    "the training data."
                )

    def _explain_targets(self, target) -> tuple[str, list[str]]:
        if callable(target):
            return target_label(target), []
        if not isinstance(target, str) or target not in TARGETS:
            raise ValueError(
                f"Unknown explain target {target!r}; choose from {', '.join(TARGETS)} or a "
                "callable of the latent posterior mean."
            )
        if target == "labels":
            self._check_classifier()
            return target, self._label_names()
        return target, list(self._latent_names())

    def _explain_groups(self, adata, groupby: str | None) -> tuple[np.ndarray | None, list]:
        if groupby is None:
            return None, []
        if groupby not in adata.obs:
            raise KeyError(
                f"groupby={groupby!r} is not a column of .obs "
                f"(columns: {list(adata.obs.columns)})."
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

    def _explain_indices(self, adata, indices) -> np.ndarray:
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

    # ------------------------------------------------------------------------- inputs
    def _registry_matrix(self, adata, role: str):
        manager = self.get_anndata_manager(adata, required=True)
        return manager.get_from_registry(self.module.registry_keys[role])

    def _explain_baseline(
        self, adata, method: str, baseline, n_background: int, seed: int
    ) -> tuple[tuple[torch.Tensor, ...] | None, str]:
        roles = self.modalities
        device = self.device
        if baseline is None:
            baseline = DEFAULT_BASELINE[method]
        elif DEFAULT_BASELINE[method] is None:
            logger.warning("method=%r uses no baseline; baseline=%r is ignored.", method, baseline)
            baseline = None
        if baseline is None:
            return None, "none"
        binarise = {r: self.module.likelihoods[r] == "bernoulli" for r in roles}
        if isinstance(baseline, str):
            if baseline not in BASELINES:
                raise ValueError(
                    f"Unknown baseline {baseline!r}; choose from {', '.join(BASELINES)} or pass "
                    "arrays (one per modality)."
                )
            if baseline == "zeros":
                rows = {r: np.zeros((1, self.module.n_features[r]), np.float32) for r in roles}
            elif baseline == "mean":
                rows = {
                    r: _column_mean(self._registry_matrix(adata, r), binarise[r])[None]
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
                    block = _dense_rows(self._registry_matrix(adata, r), pick)
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
                if arr.ndim != 2 or arr.shape[1] != self.module.n_features[r]:
                    raise ValueError(
                        f"baseline for {r} must have {self.module.n_features[r]} columns, got "
                        f"shape {arr.shape}."
                    )
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"baseline for {r} has non-finite values.")
                rows[r] = arr
            name = "custom"
        n_rows = {a.shape[0] for a in rows.values()}
        if len(n_rows) != 1:
            raise ValueError(
                "Baseline arrays of all modalities must have the same number of rows."
            )
        if method == "deeplift_shap" and n_rows.pop() < 2:
            raise ValueError(
                "method='deeplift_shap' needs a baseline distribution: baseline='background' or "
                "arrays with several rows."
            )
        return tuple(torch.as_tensor(rows[r], device=device) for r in roles), name

    def _attribution_batches(
        self,
        adata,
        explained: np.ndarray,
        group_codes: np.ndarray | None,
        batch_size: int,
        progress_bar: bool,
        description: str,
    ) -> Iterator[AttributionBatch]:
        module = self.module
        device = self.device
        loader = self._make_data_loader(
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
            yield AttributionBatch(tuple(inputs), covariates, positions, groups)

    def _cell_masks(self, target_kind: str) -> list[torch.Tensor | None] | None:
        if target_kind != "latent":
            return None
        masks = [getattr(self.module.decoders[r], "mask", None) for r in self.modalities]
        if all(m is None for m in masks):
            return None
        return masks

    # ------------------------------------------------------------------------- run
    def _attribution_explain(
        self,
        adata,
        method: str,
        target: str | Callable,
        *,
        key_added: str | None,
        inplace: bool,
        batch_size: int | None,
        indices: Sequence[int] | np.ndarray | None,
        baseline: Any,
        n_steps: int,
        n_samples: int,
        n_background: int,
        groupby: str | None,
        return_per_cell: bool,
        seed: int,
        progress_bar: bool,
    ) -> dict | None:
        # every check runs before any attribution is computed
        if method not in ATTRIBUTION_METHODS:
            raise ValueError(
                f"Unknown explain method {method!r}; choose from 'weights', "
                f"{', '.join(map(repr, ATTRIBUTION_METHODS))}."
            )
        target_name, columns = self._explain_targets(target)
        for name, value in (("n_steps", n_steps), ("n_samples", n_samples)):
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        batch_size = 128 if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        self._check_same_features(adata)
        group_codes, group_names = self._explain_groups(adata, groupby)
        explained = self._explain_indices(adata, indices)
        baseline_rows, baseline_name = self._explain_baseline(
            adata, method, baseline, n_background, seed
        )
        model = TargetModel(self.module, target)
        was_training = self.module.training
        # gradients flow to the inputs only; frozen weights keep autograd from tracking them
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        self.module.eval()
        for p in trainable:
            p.requires_grad_(False)
        try:
            if callable(target):
                probe = tuple(
                    torch.zeros(2, self.module.n_features[r], device=self.device)
                    for r in self.modalities
                )
                batch0 = torch.zeros(2, 1, dtype=torch.long, device=self.device)
                cats = (
                    torch.zeros(2, len(self.module.n_cats_per_cov), device=self.device)
                    if self.module.n_cats_per_cov
                    else None
                )
                conts = (
                    torch.zeros(2, self.module.n_continuous_cov, device=self.device)
                    if self.module.n_continuous_cov
                    else None
                )
                with torch.no_grad():
                    n_out = model(*probe, batch0, cats, conts).shape[1]
                columns = [target_name] if n_out == 1 else [f"output_{j}" for j in range(n_out)]
            n_per_cell = 1 if target_name == "labels" else len(columns)
            if return_per_cell:
                n_bytes = 4 * explained.size * sum(self.module.n_features.values()) * n_per_cell
                if n_bytes > _MAX_PER_CELL_BYTES:
                    raise ValueError(
                        f"return_per_cell would hold {n_bytes / 1024**3:.1f} GiB; pass indices= "
                        "to explain a subset of cells."
                    )
            batches = self._attribution_batches(
                adata,
                explained,
                group_codes,
                batch_size,
                progress_bar,
                f"{method} ({target_name})",
            )
            result = attribute(
                model,
                batches,
                method,
                n_cells=explained.size,
                n_targets=len(columns),
                n_groups=len(group_names),
                baseline=baseline_rows,
                n_steps=n_steps,
                n_samples=n_samples,
                cell_masks=self._cell_masks(target_name),
                return_per_cell=return_per_cell,
                seed=seed,
            )
        finally:
            self.module.train(was_training)
            for p in trainable:
                p.requires_grad_(True)

        key = f"{key_added or self._prefix}_{method}_{target_name}"
        if target_name == "labels":
            cell_columns = list(self._latent_names())
            cell_definition = (
                "contribution z_k * W[c, k] of each latent unit to the logit of the predicted "
                "class c"
            )
        elif target_name == "latent" and self._cell_masks(target_name) is not None:
            cell_columns = columns
            cell_definition = "sum of |attribution| over the features annotated to each unit"
        else:
            cell_columns = columns
            cell_definition = "sum of |attribution| over all features, per target"
        meta = {
            "model": type(self).__name__,
            "method": method,
            "target": target_name,
            "baseline": baseline_name,
            "n_background": int(baseline_rows[0].shape[0]) if baseline_name == "background" else 0,
            "n_steps": int(n_steps) if method == "integrated_gradients" else 0,
            "n_samples": int(n_samples) if method in ("gradient_shap", "shap") else 0,
            "input": "counts (binarised accessibility for Bernoulli modalities)",
            "obsm_definition": cell_definition,
            "modalities": {r: (self._modality_names.get(r) or "") for r in self.modalities},
        }
        results = attribution_results(
            result,
            key=key,
            var_names={r: self._container(adata, r).var_names for r in self.modalities},
            obs_names=adata.obs_names,
            explained=explained,
            target_columns=columns,
            cell_columns=cell_columns,
            groupby=groupby,
            group_names=group_names,
            meta=meta,
        )
        per_cell = None
        if return_per_cell:
            per_cell = {
                "attributions": dict(zip(self.modalities, result.per_cell)),
                "obs_names": adata.obs_names[explained],
                "columns": columns,
                "delta": result.delta,
            }
            if result.predicted is not None:
                per_cell["predicted"] = np.asarray(columns, dtype=object)[result.predicted]
        conv = results["uns"][key]["convergence"]
        if conv and not math.isnan(conv.get("relative_delta", float("nan"))):
            logger.info(
                "%s: mean |delta| %.3g (%.2g of the mean |output difference|)",
                method,
                conv["mean_abs_delta"],
                conv["relative_delta"],
            )
        if not inplace:
            if per_cell is not None:
                results["per_cell"] = per_cell
            return results
        self._write_results(adata, results)
        return per_cell

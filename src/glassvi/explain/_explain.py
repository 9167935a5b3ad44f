"""The explain job: validate, read the (Mu)Data, run the engine, shape and write the results.

:func:`explain_model` is what ``model.explain(...)`` runs; it sees the model only through
:class:`~glassvi.explain.ExplainableModel`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scvi import REGISTRY_KEYS

from .. import _keys
from .._validation import check_batch_size
from ._engine import attribute, baseline_draws
from ._inputs import (
    attribution_batches,
    baseline_rows,
    cell_groups,
    cell_indices,
    cell_masks,
    check_same_features,
)
from ._methods import INTRINSIC, method_spec
from ._protocol import ExplainableModel
from ._targets import TargetModel, check_label_options, check_target
from ._write import attribution_results, write_results

logger = logging.getLogger(__name__)

#: per-cell results larger than this (bytes) need ``indices=``
_MAX_PER_CELL_BYTES = 2 * 1024**3
#: cells per minibatch of post-hoc attributions
_DEFAULT_BATCH_SIZE = 128


def explain_model(
    model: ExplainableModel,
    adata=None,
    method: str = INTRINSIC,
    *,
    target: str | Callable = "latent",
    key_added: str | None = None,
    inplace: bool = True,
    batch_size: int | None = None,
    indices: Sequence[int] | np.ndarray | None = None,
    baseline: str | np.ndarray | Mapping[str, np.ndarray] | None = None,
    n_steps: int = 50,
    n_samples: int | None = None,
    n_background: int | None = None,
    groupby: str | None = None,
    return_per_cell: bool = False,
    seed: int = 0,
    progress_bar: bool = True,
    label_contrast: str = "rest",
    label_target: str = "annotated",
    above_baseline: bool | None = None,
) -> dict | None:
    """Explain a model and write the explanation into the AnnData/MuData.

    This is the body of :meth:`glassvi.model.LinearVI.explain` (and ProgramVI's); see there
    for the keys written.

    Parameters
    ----------
    model
        A trained model (see :class:`ExplainableModel`).
    adata
        Data set up like the training data; defaults to the training data.
    method
        ``"weights"`` (intrinsic) or a name in :data:`METHODS`.
    target
        ``"latent"``, ``"labels"`` or a callable of the latent posterior mean.
    key_added
        Prefix of the keys written; defaults to the model's name.
    inplace
        Write into ``adata`` or return the results.
    batch_size
        Cells per minibatch (128 by default for attributions).
    indices
        Positions (or a boolean mask) of the cells to explain.
    baseline
        ``"zeros"``, ``"mean"``, ``"background"`` or arrays (one per modality); ``None``: the
        method's default in :data:`METHODS`.
    n_steps
        Integration steps of integrated gradients.
    n_samples
        Random samples per cell of the sampling methods; ``None``: the method's default.
    n_background
        Background cells of ``baseline="background"``; ``None``: the method's default.
    groupby
        ``.obs`` column: also store the means over each of its groups.
    return_per_cell
        Also return every explained cell's attributions.
    seed
        Seed of the background sample and of random draws.
    progress_bar
        Show a progress bar over minibatches.
    label_contrast
        ``target="labels"``: ``"rest"``, ``"mean"`` or ``"none"`` (see
        :func:`~glassvi.explain.label_margins`).
    label_target
        ``target="labels"``: explain each cell for its ``"annotated"`` class (predicted for
        unlabelled cells) or its ``"predicted"`` class.
    above_baseline
        Keep each feature's attribution only where the cell's value is above its baseline's;
        ``None``: for ``target="labels"`` with a method pairing each cell with one baseline.

    Returns
    -------
    As :meth:`glassvi.model.LinearVI.explain`: ``None`` (or the per-cell dict) when
    ``inplace=True``, else the results dict.

    Examples
    --------
    >>> explain_model(model, method="saliency", target="labels")
    """
    arguments = dict(locals())  # the parameters, passed on unchanged to the post-hoc path
    if method == INTRINSIC:
        _check_intrinsic_arguments(
            target=target,
            indices=indices,
            baseline=baseline,
            groupby=groupby,
            return_per_cell=return_per_cell,
        )
        batch_size = check_batch_size(batch_size)
        model._check_if_trained(warn=True)
        # computed on the data in the model's feature order, written to the object passed in
        destination = model.adata if adata is None else adata
        adata = model._validate_anndata(adata)
        key_added = key_added or model._prefix
        with torch.inference_mode():
            results = intrinsic_results(model, adata, key_added, batch_size)
        if not inplace:
            return results
        write_results(model, destination, results, stacklevel=4)
        return None
    return _attribution_explain(**arguments)


_INTRINSIC_DEFAULTS = {
    "target": "latent",
    "indices": None,
    "baseline": None,
    "groupby": None,
    "return_per_cell": False,
}


def _check_intrinsic_arguments(**given) -> None:
    """Refuse arguments of post-hoc methods given to ``method="weights"``."""
    ignored = []
    for name, value in given.items():
        default = _INTRINSIC_DEFAULTS[name]
        same = value is default or (
            default is not None and isinstance(value, type(default)) and value == default
        )
        if not same:
            ignored.append(name)
    if ignored:
        raise ValueError(
            f"method={INTRINSIC!r} writes the decoder weights and the posterior-mean latent of "
            f"every cell; {', '.join(ignored)} only apply to post-hoc methods (e.g. "
            "method='integrated_gradients')."
        )


def intrinsic_results(model: ExplainableModel, adata, key_added: str, batch_size) -> dict:
    """Results dict of the intrinsic explanation: latent representation and decoder weights.

    Parameters
    ----------
    model
        A trained model.
    adata
        Validated data set up like the training data.
    key_added
        Prefix of the keys.
    batch_size
        Minibatch size of the encoder.

    Returns
    -------
    ``{"obsm": {...}, "varm": {modality: {...}}, "uns": {key_added: {...}}}``.

    Examples
    --------
    >>> results = intrinsic_results(model, adata, "linearvi", None)
    """
    latent = model.get_latent_representation(adata, batch_size=batch_size)
    columns = model._latent_names()
    latent_key = _keys.latent(key_added)
    # a plain array, as scanpy and scvi-tools store embeddings; the column names are in
    # uns[key_added]["columns"]
    obsm = {latent_key: np.asarray(latent, dtype=np.float32)}
    weights_key = _keys.weights(key_added, model._weights_suffix)
    # plain features x columns arrays, as the attribution tables: h5ad would store DataFrame
    # columns as h5 keys, which may not hold the "/" of program names (see glassvi._varm)
    varm = {
        role: {weights_key: np.asarray(model.module.loadings(role).cpu().numpy(), np.float32)}
        for role in model.modalities
    }
    uns = {
        "model": type(model).__name__,
        "method": INTRINSIC,
        "latent_key": latent_key,
        "weights_key": weights_key,
        "columns": list(columns),
        "varm_keys": {"weights": weights_key},
        "modalities": {role: (model._modality_names.get(role) or "") for role in model.modalities},
        "params": {
            "n_latent": int(model.module.n_latent),
            "likelihoods": dict(model.module.likelihoods),
            "posterior": "mean",
        },
    }
    extras = dict(model._intrinsic_extras(adata, batch_size))
    uns["params"].update(extras.pop("params", {}))
    uns.update(extras)
    return {"obsm": obsm, "varm": varm, "uns": {key_added: uns}}


#: what ``.varm[key]`` column ``c`` holds for ``target="labels"``, per ``label_contrast``
_LABEL_VARM_DEFINITION = {
    "rest": "mean attribution, over the cells explained for class c, of the log-odds "
    "logit_c - logsumexp(other logits): evidence for c against the other classes",
    "mean": "mean attribution, over the cells explained for class c, of logit_c - mean of "
    "the other logits",
    "none": "mean attribution, over the cells explained for class c, of the logit of c",
}
#: added to the definition with ``above_baseline``
_ABOVE_BASELINE = (
    "; each feature counted only where the cell's value is above its baseline's (the evidence "
    "the cell's own expression carries)"
)
#: what ``.obsm[key]`` holds for ``target="labels"``, per ``label_contrast``
_LABEL_CELL_DEFINITION = {
    "rest": "contribution z_k * (W[c, k] - sum_j q_j W[j, k]) of each latent unit to the "
    "log-odds of the explained class c, q the softmax over the other classes (the local "
    "linear part; the log-odds is their sum + b_c - sum_j q_j b_j - entropy(q))",
    "mean": "contribution z_k * (W[c, k] - mean_j W[j, k]) of each latent unit to "
    "logit_c - mean of the other logits, j over the other classes (exact: the margin is "
    "their sum plus the same contrast of the biases)",
    "none": "contribution z_k * W[c, k] of each latent unit to the logit of the explained "
    "class c (exact: the logit is their sum plus the bias)",
}


def _labels_key(model: ExplainableModel) -> str:
    """The ``.obs`` column of the cell labels the model was set up with, or ``""``."""
    try:
        state = model.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    except (KeyError, AttributeError):
        return ""
    return str(state.get("original_key") or "")


def _target_columns(model: ExplainableModel, target) -> tuple[str, list[str]]:
    name = check_target(target)
    if callable(target):
        return name, []
    if target == "labels":
        model._check_classifier()
        return name, model._label_names()
    return name, list(model._latent_names())


def _callable_columns(model: ExplainableModel, target_model: TargetModel, name: str) -> list:
    """Output names of a callable target, from one probe forward pass."""
    module, device = model.module, model.device
    probe = tuple(torch.zeros(2, module.n_features[r], device=device) for r in model.modalities)
    batch0 = torch.zeros(2, 1, dtype=torch.long, device=device)
    cats = (
        torch.zeros(2, len(module.n_cats_per_cov), device=device)
        if module.n_cats_per_cov
        else None
    )
    conts = (
        torch.zeros(2, module.n_continuous_cov, device=device) if module.n_continuous_cov else None
    )
    with torch.no_grad():
        n_out = target_model(*probe, batch0, cats, conts).shape[1]
    return [name] if n_out == 1 else [f"output_{j}" for j in range(n_out)]


def _attribution_explain(
    model: ExplainableModel,
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
    n_samples: int | None,
    n_background: int | None,
    groupby: str | None,
    return_per_cell: bool,
    seed: int,
    progress_bar: bool,
    label_contrast: str = "rest",
    label_target: str = "annotated",
    above_baseline: bool | None = None,
) -> dict | None:
    # every check runs before any attribution is computed
    spec = method_spec(method)
    check_label_options(label_contrast, label_target)
    pairs = spec.backend == "captum" and spec.pairs_background and spec.default_baseline
    if above_baseline is None:
        above_baseline = bool(pairs) and target == "labels"
    elif above_baseline and not pairs:
        raise ValueError(
            f"above_baseline=True needs a method that compares each cell with one baseline "
            f"(integrated_gradients, deeplift); {method!r} does not."
        )
    n_samples = spec.n_samples if n_samples is None else n_samples
    n_background = spec.n_background if n_background is None else n_background
    target_name, columns = _target_columns(model, target)
    for name, value in (("n_steps", n_steps), ("n_samples", n_samples)):
        if value is None:  # the method draws no samples
            continue
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    batch_size = check_batch_size(batch_size) or _DEFAULT_BATCH_SIZE
    model._check_if_trained(warn=True)
    # computed on the data in the model's feature order, written to the object passed in
    destination = model.adata if adata is None else adata
    adata = model._validate_anndata(adata)
    check_same_features(model, adata)
    group_codes, group_names = cell_groups(adata, groupby)
    explained = cell_indices(adata, indices)
    labels = target_name == "labels"
    default = spec.label_baseline if labels else None
    rows, baseline_name = baseline_rows(
        model, adata, method, baseline, n_background, seed, default=default
    )
    module = model.module
    target_model = TargetModel(module, target, label_contrast=label_contrast)
    masks = cell_masks(model, target_name)
    was_training = module.training
    # gradients flow to the inputs only; frozen weights keep autograd from tracking them
    trainable = [p for p in module.parameters() if p.requires_grad]
    module.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        if callable(target):
            columns = _callable_columns(model, target_model, target_name)
        n_per_cell = 1 if target_name == "labels" else len(columns)
        if return_per_cell:
            n_bytes = 4 * explained.size * sum(module.n_features.values()) * n_per_cell
            if n_bytes > _MAX_PER_CELL_BYTES:
                raise ValueError(
                    f"return_per_cell would hold {n_bytes / 1024**3:.1f} GiB; pass indices= "
                    "to explain a subset of cells."
                )
        batches = attribution_batches(
            model,
            adata,
            explained,
            group_codes,
            batch_size,
            progress_bar,
            f"{method} ({target_name})",
            with_labels=labels and label_target == "annotated",
        )
        result = attribute(
            target_model,
            batches,
            method,
            n_cells=explained.size,
            n_targets=len(columns),
            n_groups=len(group_names),
            baseline=rows,
            n_steps=n_steps,
            n_samples=n_samples if n_samples is not None else 0,
            cell_masks=masks,
            return_per_cell=return_per_cell,
            seed=seed,
            above_baseline=bool(above_baseline),
        )
    finally:
        module.train(was_training)
        for p in trainable:
            p.requires_grad_(True)

    key = _keys.attribution(key_added or model._prefix, method, target_name)
    if labels:
        cell_columns = list(model._latent_names())
        cell_definition = _LABEL_CELL_DEFINITION[label_contrast]
    elif target_name == "latent" and masks is not None:
        cell_columns = columns
        cell_definition = "sum of |attribution| over the features annotated to each unit"
    else:
        cell_columns = columns
        cell_definition = "sum of |attribution| over all features, per target"
    meta = {
        "model": type(model).__name__,
        "method": method,
        "target": target_name,
        "baseline": baseline_name,
        "n_background": int(rows[0].shape[0]) if baseline_name == "background" else 0,
        "n_steps": int(n_steps) if spec.uses_n_steps else 0,
        "n_samples": int(n_samples) if spec.n_samples is not None else 0,
        "baselines_per_cell": baseline_draws(spec, rows, n_steps, n_samples or 0)[0]
        if rows is not None
        else 0,
        "input": "counts (binarised accessibility for Bernoulli modalities)",
        "above_baseline": bool(above_baseline) and rows is not None,
        "obsm_definition": cell_definition,
        "modalities": {r: (model._modality_names.get(r) or "") for r in model.modalities},
    }
    if labels:
        meta.update(
            label_contrast=label_contrast,
            label_target=label_target,
            labels_key=_labels_key(model),
            varm_definition=_LABEL_VARM_DEFINITION[label_contrast]
            + (_ABOVE_BASELINE if above_baseline and rows is not None else ""),
        )
    results = attribution_results(
        result,
        key=key,
        var_names={r: model._container(adata, r).var_names for r in model.modalities},
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
            "attributions": dict(zip(model.modalities, result.per_cell)),
            "obs_names": adata.obs_names[explained],
            "columns": columns,
            "delta": result.delta,
        }
        if result.predicted is not None:
            per_cell["predicted"] = np.asarray(columns, dtype=object)[result.predicted]
            per_cell["explained_class"] = np.asarray(columns, dtype=object)[result.classes]
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
    write_results(model, destination, results, stacklevel=4)
    return per_cell

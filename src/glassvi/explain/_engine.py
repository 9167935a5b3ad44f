"""Attribution engine: batched, streaming feature attributions of a target model.

Everything here works on tensors and arrays; reading from and writing to AnnData lives in the
model classes and in :mod:`glassvi.explain._write`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .._optional import require
from ._methods import METHODS, MethodSpec, method_spec
from ._rng import with_seeded_global_rngs
from ._targets import TargetModel, contrast_weights, label_margins

logger = logging.getLogger(__name__)

#: largest number of input values one integrated-gradients forward pass may hold
_MAX_ELEMENTS = 2**25


@dataclass
class AttributionBatch:
    """One minibatch of cells to explain.

    Attributes
    ----------
    inputs
        One tensor per modality (cells x features), on the model's device.
    covariates
        ``(batch_index, cat_covs, cont_covs)``, tensors or ``None``.
    positions
        Row of every cell in the cell-level results (0-based).
    groups
        Group code of every cell (``groupby``), or ``None``.
    labels
        Annotated class of every cell in the order of the label head (-1: unlabelled), or
        ``None``; ``target="labels"`` explains each labelled cell for this class.
    """

    inputs: tuple[torch.Tensor, ...]
    covariates: tuple
    positions: np.ndarray
    groups: torch.Tensor | None = None
    labels: torch.Tensor | None = None


@dataclass
class AttributionResult:
    """Aggregated attributions, one entry per modality.

    Attributes
    ----------
    mean, mean_abs
        Per modality: ``(1 + n_groups, n_targets, n_features)`` mean and mean absolute
        attribution; row 0 over all explained cells, row ``1 + g`` over the cells of group
        ``g``. NaN where no cell contributed.
    counts
        ``(1 + n_groups, n_targets)`` number of cells behind every mean.
    cell_scores
        ``(n_cells, n_columns)`` cell-level summary (see :func:`attribute`).
    predicted
        Predicted class of every cell (``target="labels"``), else ``None``.
    classes
        Class each cell was explained for (``target="labels"``): its annotated class where
        the batch carries one, else the predicted class; else ``None``.
    delta
        Convergence delta per explained cell and target (methods that report one), else None.
    output_gap
        ``f(x) - f(baseline)`` per explained cell and target, the quantity that integrated
        gradients' attributions sum to (completeness), else ``None``.
    per_cell
        Per modality: ``(n_cells, n_features, n_targets)`` attributions
        (``(n_cells, n_features)`` with ``target_mode="predicted"``) when asked for.

    Examples
    --------
    Returned by :func:`attribute`; the mean attribution of target 0 to the features of the
    first modality, over all explained cells:

    >>> result = attribute(target_model, batches, method="integrated_gradients")
    >>> result.mean[0][0, 0]
    """

    mean: list[np.ndarray]
    mean_abs: list[np.ndarray]
    counts: np.ndarray
    cell_scores: np.ndarray
    predicted: np.ndarray | None = None
    classes: np.ndarray | None = None
    delta: np.ndarray | None = None
    output_gap: np.ndarray | None = None
    per_cell: list[np.ndarray] | None = field(default=None)


class StreamingMeans:
    """Running sums of attributions and of their absolute values, per group and target.

    Parameters
    ----------
    sizes
        Number of features of each input.
    n_targets
        Number of targets.
    n_groups
        Number of cell groups (0 without ``groupby``).
    device
        Device of the running sums.

    Examples
    --------
    >>> acc = StreamingMeans([5], n_targets=2, n_groups=0, device="cpu")
    >>> acc.update((torch.ones(3, 5),), torch.tensor([0, 0, 1]), None)
    >>> acc.means()[0][0][:, 0]
    array([1., 1.])
    """

    def __init__(self, sizes: Sequence[int], n_targets: int, n_groups: int, device):
        device = torch.device(device)
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.n_targets = n_targets
        self.n_rows = (1 + n_groups) * n_targets
        self.sums = [torch.zeros(self.n_rows, n, device=device, dtype=self.dtype) for n in sizes]
        self.abs_sums = [torch.zeros_like(s) for s in self.sums]
        self.counts = torch.zeros(self.n_rows, device=device, dtype=self.dtype)

    def update(
        self,
        attributions: Sequence[torch.Tensor],
        target_index: torch.Tensor,
        groups: torch.Tensor | None,
    ) -> None:
        """Add the attributions of a batch; cell ``i`` counts towards ``target_index[i]``."""
        attributions = [a.to(self.dtype) for a in attributions]
        parts = [(target_index, attributions)]
        if groups is not None:
            # cells without a group (code -1) count towards the overall means only
            valid = groups >= 0
            row = (1 + groups[valid]) * self.n_targets + target_index[valid]
            parts.append((row, [a[valid] for a in attributions]))
        for row, attrs in parts:
            ones = torch.ones(row.shape[0], device=self.counts.device, dtype=self.dtype)
            self.counts.index_add_(0, row, ones)
            for s, a, attr in zip(self.sums, self.abs_sums, attrs):
                s.index_add_(0, row, attr)
                a.index_add_(0, row, attr.abs())

    def means(self) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Mean and mean absolute attributions, ``(1 + n_groups, n_targets, n_features)``."""
        counts = self.counts.cpu().numpy().reshape(-1, self.n_targets)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = [
                s.cpu().numpy().reshape(*counts.shape, -1) / counts[..., None] for s in self.sums
            ]
            mean_abs = [
                a.cpu().numpy().reshape(*counts.shape, -1) / counts[..., None]
                for a in self.abs_sums
            ]
        return mean, mean_abs, counts


# ------------------------------------------------------------------------------ baselines
def expand_baseline(
    baseline: Sequence[torch.Tensor] | None,
    n_cells: int,
    method: str,
    generator: torch.Generator,
) -> tuple[torch.Tensor, ...] | None:
    """Baselines of one batch for a captum method.

    A single-row baseline is broadcast to every cell. With several rows (a background sample),
    integrated gradients and DeepLIFT pair every cell with one background cell drawn at random
    (so the average over cells approximates the expectation over the background), while the
    SHAP-style methods take the whole sample as their baseline distribution.
    """
    if baseline is None:
        return None
    if not METHODS[method].pairs_background or baseline[0].shape[0] == 1:
        return tuple(baseline)
    draw = torch.randint(baseline[0].shape[0], (n_cells,), generator=generator)
    draw = draw.to(baseline[0].device)
    return tuple(b[draw] for b in baseline)


# ------------------------------------------------------------------------------ attribution


class SummedTarget(nn.Module):
    """The selected target of every row, summed over rows: ``sum_i f(x_i)[t_i]``.

    Called as ``forward(*inputs, target_index, *covariates)``. The encoder treats every cell
    on its own (layer norm, no batch statistics), so the gradient of this sum with respect to
    row ``i`` is the gradient of that row's own target, and one backward pass replaces one
    per output value.
    """

    def __init__(self, model: TargetModel):
        super().__init__()
        self.model = model

    def forward(self, *args) -> torch.Tensor:
        """Sum over rows of each row's target output, shape ``(1,)``."""
        k = self.model.n_inputs
        out = self.model(*args[:k], *args[k + 1 :])
        return out.gather(1, args[k].reshape(-1, 1)).sum().reshape(1)


def _captum_explainer(spec: MethodSpec, model: TargetModel):
    attr = require("captum.attr", f"attribution with {spec.captum_class}")

    # summed methods: rows are independent, so the gradient of the sum over cells is every
    # cell's own gradient, taken in one backward pass
    return getattr(attr, spec.captum_class)(SummedTarget(model) if spec.summed else model)


def _captum_attribute(
    explainer,
    method: str,
    inputs: tuple[torch.Tensor, ...],
    baselines,
    target,
    covariates: tuple,
    n_steps: int,
    n_samples: int,
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    spec = METHODS[method]
    if spec.summed:
        # the target index travels with the covariates; captum expands it with the inputs
        kwargs = {"additional_forward_args": (target, *covariates), **spec.captum_kwargs}
        if not spec.uses_n_steps:
            return explainer.attribute(inputs, **kwargs), None
        n_values = sum(x.shape[1] for x in inputs)
        rows = max(1, _MAX_ELEMENTS // max(n_values, 1))
        internal = None if rows >= n_steps * inputs[0].shape[0] else max(rows, 1)
        attributions = explainer.attribute(
            inputs,
            baselines=baselines,
            n_steps=n_steps,
            internal_batch_size=internal,
            **kwargs,
        )
        return attributions, None
    kwargs = {
        "target": target,
        "additional_forward_args": covariates,
        "baselines": baselines,
        "return_convergence_delta": True,
        **spec.captum_kwargs,
    }
    if spec.n_samples is not None:
        kwargs["n_samples"] = n_samples
    with warnings.catch_warnings():
        # captum announces its DeepLIFT hooks on every call
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        attributions, delta = explainer.attribute(inputs, **kwargs)
    n = inputs[0].shape[0]
    # SHAP-style captum methods report one delta per (cell, baseline sample)
    delta = delta.reshape(n, -1).abs().mean(dim=1) if delta.numel() != n else delta.reshape(n)
    return attributions, delta


def baseline_draws(spec: MethodSpec, baseline, n_steps: int, n_samples: int) -> tuple[int, int]:
    """Baselines per cell and integration steps per baseline of a method.

    Integrated gradients with a background sample pairs every cell with ``n_samples`` random
    background cells and splits the ``n_steps`` gradient evaluations between them (expected
    gradients at the cost of one path); every other case is one baseline with ``n_steps``.
    """
    several = baseline is not None and baseline[0].shape[0] > 1 and spec.pairs_background
    if spec.uses_n_steps and several and n_samples > 1:
        draws = min(n_samples, n_steps)
        return draws, max(1, n_steps // draws)
    return 1, n_steps


@torch.no_grad()
def _completeness_delta(
    model: TargetModel,
    attributions: Sequence[torch.Tensor],
    outputs: torch.Tensor,
    baselines: Sequence[torch.Tensor],
    target: torch.Tensor,
    covariates: tuple,
) -> torch.Tensor:
    """``sum(attributions) - (f(x) - f(baseline))`` per cell, the baseline with its covariates."""
    n = outputs.shape[0]
    base = tuple(b.expand(n, -1) for b in baselines)
    at_baseline = model(*base, *covariates).gather(1, target.reshape(-1, 1)).reshape(-1)
    at_input = outputs.gather(1, target.reshape(-1, 1)).reshape(-1)
    total = sum(a.sum(dim=1) for a in attributions)
    return total - (at_input - at_baseline)


def _shap_attribute(
    explainer,
    model: TargetModel,
    inputs: tuple[torch.Tensor, ...],
    covariates: tuple,
    n_samples: int,
    seed: int,
) -> list[torch.Tensor]:
    """SHAP values of one batch, cells grouped by identical covariates.

    The gradient explainer perturbs only the features; every group of cells with the same
    covariates (batch, categorical and continuous covariates) is explained with those
    covariates held fixed.
    """
    n = inputs[0].shape[0]
    keys = [c.reshape(n, -1).float() for c in covariates if isinstance(c, torch.Tensor)]
    if keys:
        _, group = torch.unique(torch.cat(keys, dim=1), dim=0, return_inverse=True)
    else:
        group = torch.zeros(n, dtype=torch.long, device=inputs[0].device)
    out = [torch.empty(0)] * len(inputs)
    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in inputs]
    for g in torch.unique(group):
        idx = torch.nonzero(group == g).reshape(-1)
        first = idx[:1]
        model.fixed_covariates = tuple(
            c[first] if isinstance(c, torch.Tensor) else None for c in covariates
        )
        values = explainer.shap_values(
            [x[idx] for x in inputs],
            nsamples=n_samples,
            rseed=seed,
        )
        if len(inputs) == 1:
            # with one input shap returns the array itself rather than a list of arrays
            values = [values]
        for m, v in enumerate(values):
            v = torch.as_tensor(np.asarray(v), dtype=torch.float32, device=inputs[0].device)
            pieces[m].append((idx, v.reshape(idx.shape[0], inputs[m].shape[1], -1)))
    for m, parts in enumerate(pieces):
        k = parts[0][1].shape[-1]
        full = torch.zeros(n, inputs[m].shape[1], k, device=inputs[0].device)
        for idx, v in parts:
            full[idx] = v
        out[m] = full
    return out


class ClassOutput(nn.Module):
    """The output of one class of a label target model, as a one-column tensor.

    SHAP's explainers explain every output of a model; explaining each cell for its own class
    (annotated or predicted) runs the explainer on the cells of one class at a time, on that
    class's output only, at the cost of one output per cell.
    """

    def __init__(self, model: TargetModel, label: int):
        super().__init__()
        self.model = model
        self.label = label

    def forward(self, *args) -> torch.Tensor:
        """Output of the class, ``(cells, 1)``."""
        return self.model(*args)[:, self.label : self.label + 1]


def _shap_by_class(
    shap,
    explainers: dict,
    model: TargetModel,
    inputs: tuple[torch.Tensor, ...],
    covariates: tuple,
    classes: torch.Tensor,
    baseline: Sequence[torch.Tensor],
    n_samples: int,
    seed: int,
) -> list[torch.Tensor]:
    """SHAP values of every cell for the output of its class, ``(cells, features, 1)`` each."""
    n = inputs[0].shape[0]
    out = [torch.zeros(n, x.shape[1], 1, device=x.device) for x in inputs]
    for label in torch.unique(classes).tolist():
        idx = torch.nonzero(classes == label).reshape(-1)
        part = tuple(c[idx] if isinstance(c, torch.Tensor) else c for c in covariates)
        if label not in explainers:
            model.fixed_covariates = tuple(
                c[:1] if isinstance(c, torch.Tensor) else None for c in part
            )
            explainers[label] = shap.GradientExplainer(
                ClassOutput(model, label), list(baseline), batch_size=n_samples
            )
        values = _shap_attribute(
            explainers[label], model, tuple(x[idx] for x in inputs), part, n_samples, seed
        )
        for m, v in enumerate(values):
            out[m][idx] = v.reshape(idx.shape[0], -1, 1)
    return out


@with_seeded_global_rngs
def attribute(
    model: TargetModel,
    batches: Iterable[AttributionBatch],
    method: str,
    *,
    n_cells: int,
    n_targets: int,
    n_groups: int = 0,
    baseline: Sequence[torch.Tensor] | None = None,
    n_steps: int = 50,
    n_samples: int = 20,
    cell_masks: Sequence[torch.Tensor | None] | None = None,
    return_per_cell: bool = False,
    seed: int = 0,
    above_baseline: bool = False,
) -> AttributionResult:
    """Attribute the outputs of ``model`` to its inputs, batch by batch, aggregating as it goes.

    With ``model.target == "labels"`` every cell is explained for one class only: its
    annotated class when the batch carries labels (``AttributionBatch.labels >= 0``), else its
    predicted class; the means for class ``c`` are over the cells explained for ``c``.
    Otherwise every cell is explained for every output.

    Parameters
    ----------
    model
        The target model (see :class:`~glassvi.explain.TargetModel`), in evaluation mode.
    batches
        Minibatches of cells (inputs on the model's device).
    method
        A name in :data:`~glassvi.explain.METHODS`.
    n_cells
        Number of rows of the cell-level results.
    n_targets
        Number of outputs of ``model``.
    n_groups
        Number of cell groups coded in the batches' ``groups``.
    baseline
        One tensor per input: a single row (fixed baseline) or several rows (background
        sample). ``None`` for methods without a baseline.
    n_steps
        Gradient evaluations per cell of integrated gradients.
    n_samples
        Random samples per cell of ``"gradient_shap"`` and ``"shap"``; for integrated
        gradients with a background sample, the number of background cells each cell is paired
        with, the ``n_steps`` evaluations split between their paths (averaged).
    cell_masks
        Per input, a boolean ``(n_features, n_targets)`` mask of the features annotated to each
        target, or ``None`` (all features). The cell-level score of target ``t`` is the sum of
        ``|attribution|`` over its annotated features (``target != "labels"``).
    return_per_cell
        Keep every cell's attributions (memory: cells x features x targets).
    seed
        Seed of every random draw (background pairing, GradientSHAP's samples, SHAP's
        sampling): the same seed gives the same result. NumPy's and torch's global generators
        are seeded for the call and restored afterwards.
    above_baseline
        Keep each feature's attribution only where the cell's value is above its baseline's
        (for a background sample, the background cell it is paired with): the evidence the
        cell's own expression carries. The part left out comes from features the cell has less
        of than the baseline (such as another type's markers that the cell lacks). The
        completeness delta and ``output_gap`` are those of the complete attributions. Methods
        whose baseline is a distribution (the SHAP-style ones) ignore it.

    Returns
    -------
    :class:`AttributionResult`; for ``target="labels"`` the cell-level scores are the
    contributions ``z_k * (W[c, k] - sum_j q_j W[j, k])`` of each latent unit ``k`` to the
    margin of the explained class ``c`` (``q`` from
    :func:`~glassvi.explain._targets.contrast_weights`; exact for the linear head with
    ``label_contrast`` ``"none"`` or ``"mean"``, the local linear part for ``"rest"``).

    Examples
    --------
    >>> res = attribute(TargetModel(module, "latent"), batches, "integrated_gradients",
    ...                 n_cells=500, n_targets=10, baseline=(torch.zeros(1, 200),))
    >>> res.mean[0].shape  # (1 + groups, targets, features)
    (1, 10, 200)
    """
    spec = method_spec(method)
    predicted_mode = model.target == "labels"
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sizes = None
    acc = None
    # the units the classification head reads (ProgramVI's hidden decoys are not among them)
    n_score_cols = model.module.classifier.in_features if predicted_mode else n_targets
    cell_scores = np.full((n_cells, n_score_cols), np.nan, dtype=np.float32)
    predicted = np.full(n_cells, -1, dtype=np.int64) if predicted_mode else None
    classes = np.full(n_cells, -1, dtype=np.int64) if predicted_mode else None
    n_draws, steps_per_draw = baseline_draws(spec, baseline, n_steps, n_samples)
    with_delta = spec.reports_delta
    delta = np.full((n_cells, 1 if predicted_mode else n_targets), np.nan) if with_delta else None
    gap = np.full_like(delta, np.nan) if with_delta else None
    per_cell: list[list[tuple[np.ndarray, int, np.ndarray]]] | None = None

    if spec.backend == "shap":
        shap = require("shap", "explain(method='shap')")

        if baseline is None:
            raise ValueError("method='shap' needs a baseline (background sample).")
        model.fixed_covariates = (None, None, None)
        explainer = None
        class_explainers: dict[int, object] = {}
    else:
        explainer = _captum_explainer(spec, model)

    for batch in batches:
        # inputs that already require gradients spare captum's per-call warning
        inputs = tuple(x.detach().requires_grad_(True) for x in batch.inputs)
        n = inputs[0].shape[0]
        if acc is None:
            sizes = [x.shape[1] for x in inputs]
            acc = StreamingMeans(sizes, n_targets, n_groups, device)
            per_cell = [[] for _ in sizes] if return_per_cell else None
        pos = np.asarray(batch.positions)
        with torch.no_grad():
            if predicted_mode:
                z = model.latent(inputs, *batch.covariates)
                head = model.module.classifier
                logits = head(z)
                pred = logits.argmax(dim=1)
                explained = pred
                if batch.labels is not None:
                    explained = torch.where(batch.labels >= 0, batch.labels, pred)
                predicted[pos] = pred.cpu().numpy()
                classes[pos] = explained.cpu().numpy()
                q = contrast_weights(logits, explained, model.label_contrast)
                weight = head.weight[explained] - q @ head.weight
                cell_scores[pos] = (z * weight).cpu().numpy()
                outputs = label_margins(logits, model.label_contrast)
            else:
                outputs = model(*inputs, *batch.covariates)
        if predicted_mode:
            target_list = [explained]
        else:
            target_list = [torch.full((n,), t, device=device) for t in range(n_targets)]

        if spec.backend == "shap" and predicted_mode:
            values = _shap_by_class(
                shap,
                class_explainers,
                model,
                inputs,
                batch.covariates,
                explained,
                baseline,
                n_samples,
                seed,
            )
            results = [(tuple(v[..., 0] for v in values), None, None)]
        elif spec.backend == "shap":
            if explainer is None:
                model.fixed_covariates = tuple(
                    c[:1] if isinstance(c, torch.Tensor) else None for c in batch.covariates
                )
                explainer = shap.GradientExplainer(model, list(baseline), batch_size=n_samples)
            values = _shap_attribute(explainer, model, inputs, batch.covariates, n_samples, seed)
            results = [
                (tuple(v[..., j] for v in values), None, None) for j in range(len(target_list))
            ]
        else:
            results = []
            for target in target_list:
                total, total_delta, total_gap = None, None, None
                for _ in range(n_draws):
                    bl = expand_baseline(baseline, n, method, generator)
                    attrs, d = _captum_attribute(
                        explainer,
                        method,
                        inputs,
                        bl,
                        target,
                        tuple(batch.covariates),
                        steps_per_draw,
                        n_samples,
                    )
                    if spec.summed and spec.reports_delta:
                        # summed targets give no per-cell delta; compute completeness directly
                        d = _completeness_delta(
                            model, attrs, outputs, bl, target, batch.covariates
                        )
                    attrs = tuple(a.detach() for a in attrs)
                    if d is not None:
                        # f(x) - f(baseline), from the complete attributions
                        g = sum(a.sum(dim=1) for a in attrs) - d.detach()
                        total_delta = d if total_delta is None else total_delta + d
                        total_gap = g if total_gap is None else total_gap + g
                    if above_baseline and bl is not None and spec.pairs_background:
                        attrs = tuple(a * (x > b) for a, x, b in zip(attrs, inputs, bl))
                    total = attrs if total is None else tuple(t + a for t, a in zip(total, attrs))
                if n_draws > 1:
                    # the average over baselines: its completeness delta is the average delta
                    total = tuple(t / n_draws for t in total)
                    total_delta = None if total_delta is None else total_delta / n_draws
                    total_gap = None if total_gap is None else total_gap / n_draws
                results.append((total, total_delta, total_gap))

        for j, (attrs, d, output_gap) in enumerate(results):
            target_index = target_list[j]
            acc.update(attrs, target_index, batch.groups)
            if not predicted_mode:
                score = torch.zeros(n, device=device)
                for m, a in enumerate(attrs):
                    mask = cell_masks[m] if cell_masks is not None else None
                    a_abs = a.abs()
                    score = score + (
                        a_abs.sum(dim=1) if mask is None else a_abs @ mask[:, j].to(a_abs.dtype)
                    )
                cell_scores[pos, j] = score.cpu().numpy()
            if d is not None:
                delta[pos, j] = d.detach().cpu().numpy()
                gap[pos, j] = output_gap.detach().cpu().numpy()
            if per_cell is not None:
                for m, a in enumerate(attrs):
                    per_cell[m].append((pos, j, a.cpu().numpy().astype(np.float32)))

    if acc is None:
        raise ValueError("No cells to explain.")
    mean, mean_abs, counts = acc.means()
    stacked = None
    if per_cell is not None:
        stacked = []
        n_cols = 1 if predicted_mode else n_targets
        for m, size in enumerate(sizes):
            full = np.zeros((n_cells, size, n_cols), dtype=np.float32)
            for pos, j, a in per_cell[m]:
                full[pos, :, j] = a
            stacked.append(full[..., 0] if predicted_mode else full)
    return AttributionResult(
        mean=mean,
        mean_abs=mean_abs,
        counts=counts,
        cell_scores=cell_scores,
        predicted=predicted,
        classes=classes,
        delta=delta,
        output_gap=gap,
        per_cell=stacked,
    )

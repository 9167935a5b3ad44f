"""The table of attribution methods: adding a method is adding one entry to :data:`METHODS`.

Each :class:`MethodSpec` says how the engine runs the method (captum class or the shap
runner), which defaults ``explain`` uses for it and which of its settings are recorded.
``method`` is validated here and only here (:func:`method_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

#: the intrinsic explanation (decoder weights and latent representation); not an attribution
INTRINSIC = "weights"


@dataclass(frozen=True)
class MethodSpec:
    """How one post-hoc attribution method runs.

    Attributes
    ----------
    backend
        ``"captum"`` (a :mod:`captum.attr` class, named by ``captum_class``) or ``"shap"``
        (:class:`shap.GradientExplainer`).
    captum_class
        Name of the class in :mod:`captum.attr`, for ``backend="captum"``.
    default_baseline
        Baseline used when none is given: ``"zeros"``, ``"background"`` or ``None`` (the
        method uses no baseline).
    label_baseline
        Baseline used when none is given with ``target="labels"``; ``None``: the
        ``default_baseline``.
    summed
        Run on the target summed over cells: rows are independent, so one backward pass gives
        every cell's gradient.
    reports_delta
        The attributions come with a completeness (convergence) delta.
    pairs_background
        With a background sample as baseline, each cell is paired with one random background
        cell (``False``: the whole sample is the method's baseline distribution).
    needs_background
        The baseline must have several rows (a distribution).
    n_samples
        Default random samples per cell, or ``None`` when the method draws none. For
        integrated gradients: background cells paired with each cell when the baseline is a
        background sample (the integration steps are split between them).
    n_background
        Default number of background cells of ``baseline="background"``.
    uses_n_steps
        The method integrates over ``n_steps`` steps (recorded in ``.uns``).
    captum_kwargs
        Fixed keyword arguments of the captum class's ``attribute``.

    Examples
    --------
    >>> METHODS["integrated_gradients"].default_baseline
    'zeros'
    """

    backend: str
    captum_class: str | None = None
    default_baseline: str | None = None
    label_baseline: str | None = None
    summed: bool = False
    reports_delta: bool = False
    pairs_background: bool = True
    needs_background: bool = False
    n_samples: int | None = None
    n_background: int = 100
    uses_n_steps: bool = False
    captum_kwargs: Mapping[str, object] = field(default_factory=dict)


#: every post-hoc attribution method, by name
METHODS: dict[str, MethodSpec] = {
    "integrated_gradients": MethodSpec(
        "captum",
        "IntegratedGradients",
        default_baseline="zeros",
        # class evidence relative to real cells of the other classes (expected gradients)
        # recovers markers better and more stably across training seeds than from no counts
        label_baseline="background",
        summed=True,
        reports_delta=True,
        n_samples=5,
        uses_n_steps=True,
    ),
    "deeplift": MethodSpec("captum", "DeepLift", default_baseline="zeros", reports_delta=True),
    "deeplift_shap": MethodSpec(
        "captum",
        "DeepLiftShap",
        default_baseline="background",
        reports_delta=True,
        pairs_background=False,
        needs_background=True,
        n_background=20,
    ),
    "gradient_shap": MethodSpec(
        "captum",
        "GradientShap",
        default_baseline="background",
        reports_delta=True,
        pairs_background=False,
        n_samples=20,
        captum_kwargs={"stdevs": 0.0},
    ),
    "input_x_gradient": MethodSpec("captum", "InputXGradient", summed=True),
    "saliency": MethodSpec("captum", "Saliency", summed=True, captum_kwargs={"abs": False}),
    "shap": MethodSpec("shap", default_baseline="background", n_samples=200),
}

#: every post-hoc attribution method
ATTRIBUTION_METHODS = tuple(METHODS)
#: captum-based methods, by name
CAPTUM_METHODS = tuple(m for m, spec in METHODS.items() if spec.backend == "captum")
#: the baseline each method uses when none is given
DEFAULT_BASELINE = {m: spec.default_baseline for m, spec in METHODS.items()}


def method_spec(method: str) -> MethodSpec:
    """The table entry of ``method``, or a ``ValueError`` naming every method.

    Examples
    --------
    >>> method_spec("saliency").summed
    True
    """
    if method not in METHODS:
        raise ValueError(
            f"Unknown explain method {method!r}; choose from {INTRINSIC!r}, "
            f"{', '.join(map(repr, METHODS))}."
        )
    return METHODS[method]

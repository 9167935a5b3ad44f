"""Post-hoc feature attributions of glassvi models (integrated gradients, DeepLIFT, SHAP, ...).

Use them through :meth:`glassvi.model.LinearVI.explain` (``method="integrated_gradients"``,
...), which runs :func:`explain_model`: it reads the data, runs the engine and writes the
results into the AnnData/MuData. The methods are the entries of :data:`METHODS`; the engine
works on tensors and arrays.
"""

from ._engine import AttributionResult, StreamingMeans, attribute
from ._explain import explain_model
from ._methods import (
    ATTRIBUTION_METHODS,
    CAPTUM_METHODS,
    DEFAULT_BASELINE,
    METHODS,
    MethodSpec,
)
from ._protocol import ExplainableModel as ExplainableModel  # for type hints; not on the API page
from ._targets import LABEL_CONTRASTS, LABEL_TARGETS, TARGETS, TargetModel, label_margins
from ._write import GROUP_SEP, attribution_results, write_results

__all__ = [
    "ATTRIBUTION_METHODS",
    "CAPTUM_METHODS",
    "DEFAULT_BASELINE",
    "GROUP_SEP",
    "LABEL_CONTRASTS",
    "LABEL_TARGETS",
    "METHODS",
    "TARGETS",
    "AttributionResult",
    "MethodSpec",
    "StreamingMeans",
    "TargetModel",
    "attribute",
    "attribution_results",
    "explain_model",
    "label_margins",
    "write_results",
]

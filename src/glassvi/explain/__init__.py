"""Post-hoc feature attributions of glassvi models (integrated gradients, DeepLIFT, SHAP, ...).

Use them through :meth:`glassvi.model.LinearVI.explain` (``method="integrated_gradients"``,
...), which reads the data, runs the engine and writes the results into the AnnData/MuData.
The pieces here work on tensors and arrays.
"""

from ._engine import (
    ATTRIBUTION_METHODS,
    CAPTUM_METHODS,
    DEFAULT_BASELINE,
    AttributionResult,
    StreamingMeans,
    attribute,
)
from ._targets import TARGETS, TargetModel
from ._write import GROUP_SEP, attribution_results

__all__ = [
    "ATTRIBUTION_METHODS",
    "CAPTUM_METHODS",
    "DEFAULT_BASELINE",
    "GROUP_SEP",
    "TARGETS",
    "AttributionResult",
    "StreamingMeans",
    "TargetModel",
    "attribute",
    "attribution_results",
]

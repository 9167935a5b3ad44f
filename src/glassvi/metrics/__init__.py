"""Metrics for interpretable models: program recovery, faithfulness, stability, markers.

All functions take numpy arrays (or pandas objects, which are aligned by label) and return
plain values, dicts or DataFrames; none of them reads or writes an AnnData.
"""

from ._attribution import deletion_curve, faithfulness, insertion_curve, randomization_check
from ._markers import marker_recovery
from ._program_stability import program_stability
from ._programs import (
    activity_correlation,
    member_recovery,
    program_activity_auroc,
    program_recovery,
)
from ._stability import rank_correlation, stability, topk_jaccard, topk_rank_correlation

__all__ = [
    "activity_correlation",
    "deletion_curve",
    "faithfulness",
    "insertion_curve",
    "marker_recovery",
    "member_recovery",
    "program_activity_auroc",
    "program_recovery",
    "program_stability",
    "randomization_check",
    "rank_correlation",
    "stability",
    "topk_jaccard",
    "topk_rank_correlation",
]

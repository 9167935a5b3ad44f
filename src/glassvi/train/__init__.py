"""Training plans and data loading for glassvi models."""

from ._plan import GlassTrainingPlan

__all__ = ["GlassTrainingPlan"]

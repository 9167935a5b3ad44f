"""Training plans and data loading for glassvi models."""

from ._allocator import release_free_memory, tune_cpu_allocator
from ._data import GlassDataSplitter, MinibatchDataset, MinibatchSampler, cell_registry_keys
from ._plan import GlassTrainingPlan

__all__ = [
    "GlassDataSplitter",
    "GlassTrainingPlan",
    "MinibatchDataset",
    "MinibatchSampler",
    "cell_registry_keys",
    "release_free_memory",
    "tune_cpu_allocator",
]

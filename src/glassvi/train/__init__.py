"""Training plans and data loading for glassvi models."""

from ._allocator import release_free_memory, restore_cpu_allocator, tune_cpu_allocator
from ._data import GlassDataSplitter, MinibatchDataset, MinibatchSampler, cell_registry_keys
from ._plan import GlassTrainingPlan
from ._quiet import GlassProgressBar, progress_bar_kwargs, quiet_training

__all__ = [
    "GlassDataSplitter",
    "GlassProgressBar",
    "GlassTrainingPlan",
    "MinibatchDataset",
    "MinibatchSampler",
    "cell_registry_keys",
    "progress_bar_kwargs",
    "quiet_training",
    "release_free_memory",
    "restore_cpu_allocator",
    "tune_cpu_allocator",
]

"""glassvi: interpretable deep generative models for single-cell omics."""

from . import data, explain, metrics, model, pl, pp, tl
from ._version import __version__

__all__ = ["data", "explain", "metrics", "model", "pl", "pp", "tl", "__version__"]

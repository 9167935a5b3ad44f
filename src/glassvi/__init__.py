"""glassvi: interpretable deep generative models for single-cell omics."""

from importlib.metadata import PackageNotFoundError, version

from . import data, explain, metrics, model, pl, pp, tl

try:
    __version__ = version("glassvi")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = ["data", "explain", "metrics", "model", "pl", "pp", "tl", "__version__"]

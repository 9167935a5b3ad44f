"""glassvi: interpretable deep generative models for single-cell omics."""

from importlib.metadata import PackageNotFoundError, version

from . import data, model, pp

try:
    __version__ = version("glassvi")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

__all__ = ["data", "model", "pp", "__version__"]

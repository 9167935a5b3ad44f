"""The installed version of glassvi."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("glassvi")
except PackageNotFoundError:  # pragma: no cover - source tree without install
    __version__ = "0.0.0"

"""User-facing scvi-tools model classes."""

from ._io import UnsafeModelFileError
from ._linearvi import LinearVI
from ._programvi import ProgramVI

__all__ = ["LinearVI", "ProgramVI", "UnsafeModelFileError"]

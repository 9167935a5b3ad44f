"""User-facing scvi-tools model classes."""

from ._linearvi import LinearVI
from ._programvi import ProgramVI

__all__ = ["LinearVI", "ProgramVI"]

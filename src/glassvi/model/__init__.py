"""User-facing scvi-tools model classes."""

from ._linearvi import LinearVI

__all__ = ["LinearVI"]

"""Analysis of results already stored in the AnnData/MuData."""

from ._rankings import rank_features

__all__ = ["rank_features"]

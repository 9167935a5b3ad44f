"""Analysis of results already stored in the AnnData/MuData."""

from ._rankings import rank_features, varm_df

__all__ = ["rank_features", "varm_df"]

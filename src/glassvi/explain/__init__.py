"""glassvi.explain."""

"""glassvi.data."""

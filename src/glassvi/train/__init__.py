"""glassvi.train."""

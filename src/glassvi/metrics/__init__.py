"""glassvi.metrics."""

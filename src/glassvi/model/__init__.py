"""glassvi.model."""

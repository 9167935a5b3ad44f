"""glassvi.module."""

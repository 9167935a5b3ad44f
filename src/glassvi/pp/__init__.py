"""glassvi.pp."""

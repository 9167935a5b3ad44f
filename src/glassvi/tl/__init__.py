"""glassvi.tl."""

"""glassvi.pl."""

"""Training-set readers."""

"""Synthetic data: the chest-CT phantom and the demo study."""

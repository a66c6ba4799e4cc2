"""Lung masks: the HU threshold method and the 2D lung U-Net."""

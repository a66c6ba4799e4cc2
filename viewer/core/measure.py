"""Measurements in patient units: distances and elliptical ROI statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viewer.core.volume import Volume


def distance_mm(volume: Volume, a, b) -> float:
    """Distance in mm between voxel positions a and b (k, j, i), fractional allowed."""
    return float(np.linalg.norm(volume.index_to_lps(b) - volume.index_to_lps(a)))


@dataclass(frozen=True)
class RoiStats:
    mean: float
    std: float
    minimum: float
    maximum: float
    pixels: int
    area_mm2: float


def ellipse_mask(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Pixels (rows, columns) whose centres lie inside the axis-aligned ellipse."""
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    ry, rx = max(radii[0], 1e-6), max(radii[1], 1e-6)
    return ((rr - center[0]) / ry) ** 2 + ((cc - center[1]) / rx) ** 2 <= 1.0


def ellipse_stats(image: np.ndarray, center: tuple[float, float], radii: tuple[float, float],
                  pixel_mm: tuple[float, float]) -> RoiStats:
    """HU statistics and area of an elliptical ROI on a 2D slice.

    Args:
        image: the slice (rows, columns) in HU.
        center: ellipse centre (row, column) in pixels.
        radii: semi-axes (rows, columns) in pixels.
        pixel_mm: pixel size (row, column) in mm.
    """
    mask = ellipse_mask(image.shape, center, radii)
    values = image[mask].astype(np.float64)
    n = int(values.size)
    if n == 0:
        return RoiStats(float("nan"), float("nan"), float("nan"), float("nan"), 0, 0.0)
    return RoiStats(float(values.mean()), float(values.std()), float(values.min()), float(values.max()), n,
                    n * pixel_mm[0] * pixel_mm[1])

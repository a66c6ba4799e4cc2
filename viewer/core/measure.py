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


def angle_deg(end_a, vertex, end_b) -> float:
    """The angle in degrees (0-180) at `vertex` between the arms to `end_a` and `end_b` (points in mm, any
    dimension); nan when an arm has no length."""
    u = np.asarray(end_a, float) - np.asarray(vertex, float)
    w = np.asarray(end_b, float) - np.asarray(vertex, float)
    nu, nw = np.linalg.norm(u), np.linalg.norm(w)
    if nu == 0 or nw == 0:
        return float("nan")
    return float(np.degrees(np.arccos(np.clip(u @ w / (nu * nw), -1.0, 1.0))))


@dataclass(frozen=True)
class CrossAxes:
    """A long axis and the short axis across it (RECIST's bidimensional measurement) in 2D mm: the short axis
    crosses the long one at fraction `t` of its length, perpendicular, reaching `near` and `far` mm to either
    side (signed along the long axis' left-hand normal)."""

    long_a: tuple[float, float]
    long_b: tuple[float, float]
    t: float
    near: float
    far: float

    def _frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        a, b = np.asarray(self.long_a, float), np.asarray(self.long_b, float)
        length = float(np.linalg.norm(b - a))
        u = (b - a) / length if length > 0 else np.array([1.0, 0.0])
        return a, u, np.array([-u[1], u[0]]), length

    @property
    def short_ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        a, u, w, length = self._frame()
        c = a + self.t * length * u
        return tuple(c + self.near * w), tuple(c + self.far * w)

    @classmethod
    def from_points(cls, long_a, long_b, short_a, short_b) -> CrossAxes:
        """The cross through four points (the short axis' place and reach taken from its ends' projections)."""
        cross = cls(tuple(long_a), tuple(long_b), 0.5, 0.0, 0.0)
        return cross.with_short_end(0, short_a).with_short_end(1, short_b)

    def with_long(self, long_a, long_b) -> CrossAxes:
        """The long axis moved: the short axis keeps its place along it and its reach."""
        return CrossAxes(tuple(long_a), tuple(long_b), self.t, self.near, self.far)

    def with_short_end(self, which: int, point) -> CrossAxes:
        """A short-axis end (0 or 1) dragged to `point`: the axis slides along the long one to its foot and the
        dragged end takes its distance; the axis stays perpendicular."""
        a, u, w, length = self._frame()
        d = np.asarray(point, float) - a
        t = float(np.clip(d @ u / length, 0.0, 1.0)) if length > 0 else self.t
        reach = float(d @ w)
        return CrossAxes(self.long_a, self.long_b, t, reach if which == 0 else self.near,
                         reach if which == 1 else self.far)

    @property
    def lengths(self) -> tuple[float, float]:
        """(long, short) axis lengths in mm."""
        return self._frame()[3], abs(self.far - self.near)

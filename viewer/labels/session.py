"""View input to label-map edits: what a press, a drag, a release or a lasso does with the current tool. Qt-free.

Views report voxel indices (z, y, x) of the canonical grid and the plane they show; `Annotator` turns
them into calls of the editing tools (`viewer.labels.tools`) with the current `ToolSettings`, so a drag is
one undo step and every constraint (HU range, what may be painted over, locks) holds for every tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from viewer.labels.label_map import Box, LabelMap
from viewer.labels.tools import (
    HU_PRESETS,
    PLANES,
    Brush,
    Eraser,
    flood_fill,
    plane_axis,
    polygon_fill,
    resolve_hu_range,
)

EDIT_TOOLS = ("brush", "sphere", "eraser", "fill", "lasso")
BRUSH_TOOLS = ("brush", "sphere", "eraser")
HU_CHOICES = {"none": None, **HU_PRESETS}  # "custom" is any other (lo, hi)
MIN_BRUSH_MM, MAX_BRUSH_MM = 0.5, 200.0
Voxel = Sequence[float]


@dataclass
class ToolSettings:
    """How the editing tools behave.

    Attributes:
        tool: one of `EDIT_TOOLS`.
        value: the label painted (brush, sphere, fill, lasso).
        diameter_mm: brush, sphere and eraser size.
        hu_range: paint only where the CT is within [lo, hi] HU (None: anywhere); the eraser ignores it.
        background_only: paint over background only; otherwise over every unlocked label.
        fill_3d: the fill grows in 3D instead of on the clicked slice.
        max_extent_mm: the fill stays inside a box this wide around the seed (a leak stays bounded).
        max_fill_ml: a fill larger than this many mL is refused with its size (a leak into the mediastinum).
    """

    tool: str = "brush"
    value: int = 3
    diameter_mm: float = 5.0
    hu_range: tuple[float, float] | None = None
    background_only: bool = False
    fill_3d: bool = False
    max_extent_mm: float = 80.0
    max_fill_ml: float = 100.0

    def overwrite(self) -> set[int] | None:
        return {0} if self.background_only else None


def step_brush_size(diameter_mm: float, larger: bool) -> float:
    """The next brush size up or down (about 20 % per step, on a 0.5 mm grid)."""
    factor = 1.2 if larger else 1 / 1.2
    new = round(diameter_mm * factor * 2) / 2
    if new == diameter_mm:
        new = diameter_mm + (0.5 if larger else -0.5)
    return float(np.clip(new, MIN_BRUSH_MM, MAX_BRUSH_MM))


class Annotator:
    """Edits a `LabelMap` from view input with the current `settings`.

    Args:
        labels: the label map (on the canonical grid of `hu`).
        hu: the CT voxels, for HU-range constraints.
        settings: the tool settings (shared: change its fields to change the tools).

    A drag is `press`, `drag`..., `release`, one undo step; errors (a locked label, a bad size) raise
    ValueError and leave no stroke open.
    """

    def __init__(self, labels: LabelMap, hu: np.ndarray, settings: ToolSettings | None = None) -> None:
        if hu.shape != labels.shape:
            raise ValueError(f"the CT {hu.shape} and the label map {labels.shape} differ in shape")
        self.labels = labels
        self.hu = hu
        self.settings = settings or ToolSettings()
        self.last_plane = "axial"
        self._brush: Brush | None = None
        self._last: np.ndarray | None = None

    @property
    def painting(self) -> bool:
        return self._brush is not None

    def _make_brush(self, plane: str) -> Brush:
        s = self.settings
        if s.tool == "eraser":
            return Eraser(s.diameter_mm, shape=plane)
        shape = "sphere" if s.tool == "sphere" else plane
        return Brush(s.diameter_mm, s.value, shape=shape, hu_range=s.hu_range, overwrite=s.overwrite())

    def press(self, plane: str, voxel: Voxel) -> Box | None:
        """Mouse press on a view of `plane` at `voxel`: a brush dab (opening a stroke) or a fill."""
        plane_axis(plane)
        self.last_plane = plane
        if self.painting:
            self.release()
        s = self.settings
        if s.tool == "fill":
            return self.fill(plane, voxel)
        if s.tool not in BRUSH_TOOLS:
            return None
        brush = self._make_brush(plane)
        self.labels.begin_stroke(brush.name)
        try:
            box = brush.dab(self.labels, self.hu, voxel)
        except BaseException:
            self.labels.end_stroke()
            raise
        self._brush, self._last = brush, np.asarray(voxel, float)
        return box

    def drag(self, voxel: Voxel) -> Box | None:
        """Mouse move with the button down: paint from the previous position to `voxel`."""
        if self._brush is None or self._last is None:
            return None
        cur = np.asarray(voxel, float)
        if np.array_equal(cur, self._last):
            return None
        box = self._brush.line(self.labels, self.hu, self._last, cur)
        self._last = cur
        return box

    def release(self) -> None:
        """Mouse release: the stroke becomes one undo step."""
        if self._brush is not None:
            self._brush, self._last = None, None
            self.labels.end_stroke()

    def fill(self, plane: str, voxel: Voxel) -> Box | None:
        """Flood fill (2D on the slice of `plane`, or 3D) from `voxel`; nothing if it lies outside the volume.

        Raises:
            ValueError: the fill would change nothing, or it is over its volume limit (the message says why).
        """
        s = self.settings
        seed = np.rint(np.asarray(voxel, float)).astype(int)
        if np.any(seed < 0) or np.any(seed >= self.labels.shape):
            return None
        box = flood_fill(self.labels, self.hu, seed, s.value, hu_range=s.hu_range,
                         plane=None if s.fill_3d else plane, overwrite=s.overwrite(),
                         max_extent_mm=s.max_extent_mm, max_ml=s.max_fill_ml)
        if box is None:
            raise ValueError("the fill changed nothing: the region is already this label, locked, or outside the "
                             "HU range")
        return box

    def lasso(self, plane: str, points: Sequence[Voxel]) -> Box | None:
        """Fill the polygon through `points` (voxel coordinates, fractional) on their slice of `plane`."""
        k = plane_axis(plane)
        self.last_plane = plane
        pts = np.asarray(points, float).reshape(-1, 3)
        if len(pts) < 3:
            return None
        index = int(np.rint(pts[0, k]))
        if not 0 <= index < self.labels.shape[k]:
            return None
        axes = [a for a in range(3) if a != k]
        s = self.settings
        return polygon_fill(self.labels, self.hu, plane, index, pts[:, axes], s.value, hu_range=s.hu_range,
                            overwrite=s.overwrite())


def interpolation_axis(plane: str) -> int:
    """The array axis slice interpolation runs along for drawings made on `plane`."""
    return PLANES[plane]


def hu_choice(hu_range: tuple[float, float] | None) -> str:
    """The `HU_CHOICES` name of a range ("custom" when it is none of them)."""
    for name, rng in HU_CHOICES.items():
        if rng == (None if hu_range is None else resolve_hu_range(hu_range)):
            return name
    return "custom"


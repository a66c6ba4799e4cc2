"""What both lung segmentation methods share: the result (`LungMasks`), input checks, progress steps, and
the small mask helpers they both use."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.core.types import CancelFn, Cancelled, ProgressFn

SliceBox = tuple[slice, slice, slice]  # a (z, y, x) box as slices
Spacing = tuple[float, float, float]

#: 4-connectivity within each axial slice
S2D_4 = np.zeros((3, 3, 3), bool)
S2D_4[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class LungMasks:
    """Boolean (z, y, x) masks on the CT grid."""

    left: np.ndarray  # the patient's left lung
    right: np.ndarray  # the patient's right lung
    airways: np.ndarray  # trachea and main bronchi (lumen), not part of the lungs

    @property
    def lungs(self) -> np.ndarray:
        return self.left | self.right

    def label_map(self) -> np.ndarray:
        """uint8: 0 background, 1 left lung, 2 right lung."""
        lab = np.left_shift(self.right.view(np.uint8), 1)  # bool arrays viewed as 0/1 bytes: no masked writes
        np.maximum(lab, self.left.view(np.uint8), out=lab)  # the right lung wins where both are set
        return lab

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> LungMasks:
        return cls(np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool))


class Steps:
    """Reports non-decreasing progress and raises `Cancelled` when asked to stop."""

    def __init__(self, progress: ProgressFn | None, cancel: CancelFn | None) -> None:
        self._progress, self._cancel, self._last = progress, cancel, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        if self._cancel is not None and self._cancel():
            raise Cancelled("lung segmentation cancelled")
        self._last = max(self._last, min(1.0, fraction))
        if self._progress is not None:
            self._progress(self._last, message)


def checked_input(hu: np.ndarray, spacing) -> tuple[np.ndarray, Spacing]:
    """The CT as an array and its spacing as three floats; ValueError for a non-3D volume or a bad spacing."""
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {hu.shape}")
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {spacing}")
    return hu, sp  # type: ignore[return-value]


def bbox(mask: np.ndarray, margin: tuple[int, int, int] = (0, 0, 0)) -> SliceBox | None:
    """Bounding box of `mask` grown by `margin` voxels (clipped), or None when empty."""
    out = []
    for ax in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        if len(hit) == 0:
            return None
        out.append(slice(int(max(0, hit[0] - margin[ax])), int(min(mask.shape[ax], hit[-1] + 1 + margin[ax]))))
    return tuple(out)  # type: ignore[return-value]


def holes_2d(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the background of every axial slice, and which labels are holes (not at the slice border)."""
    lab, n = ndimage.label(~mask, S2D_4)
    edges = np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    hole = np.ones(n + 1, bool)
    hole[edges] = False
    hole[0] = False
    return lab, hole


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of every axial slice."""
    lab, hole = holes_2d(mask)
    hole[0] = True
    return hole[lab]

"""Oblique MPR: the planes of the three views rotated about the crosshair, as radiologists tilt them to follow a
bronchus, a fissure or a vessel.

Geometry is in "world" millimetres of the canonical volume: w = voxel (k, j, i) * spacing, axes toward S, P, L.
Each view's plane is its orthogonal frame (`BASES`: the display's row direction, column direction and normal)
turned by a rotation matrix; the identity is the plain axial, coronal or sagittal view. An oblique view keeps
the orthogonal view's screen rectangle (mm) and crosshair position, so zoom, pan and the crosshair carry over.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from viewer.state.slicing import Orientation, display_shape, pixel_spacing

#: the display's row direction (down the screen), column direction (to the right) and plane normal, in world axes
BASES: dict[Orientation, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    Orientation.AXIAL: (np.array([0.0, 1, 0]), np.array([0.0, 0, 1]), np.array([1.0, 0, 0])),
    Orientation.CORONAL: (np.array([-1.0, 0, 0]), np.array([0.0, 0, 1]), np.array([0.0, 1, 0])),
    Orientation.SAGITTAL: (np.array([-1.0, 0, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0, 1])),
}


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """3x3 rotation by `angle` radians about unit vector `axis` (right-handed, Rodrigues)."""
    a = np.asarray(axis, float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def frame(orientation: Orientation, turn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row direction, column direction, normal) of a view whose plane is turned by `turn`."""
    row, col, normal = BASES[orientation]
    return turn @ row, turn @ col, turn @ normal


def in_plane_turn(orientation: Orientation, turn: np.ndarray, screen_angle: float) -> np.ndarray:
    """The rotation about the view's normal that turns a direction on its screen by `screen_angle` radians (from
    the column direction toward the row direction: clockwise on screen, rows running down)."""
    row, col, normal = frame(orientation, turn)
    handed = 1.0 if float(np.dot(np.cross(col, row), normal)) > 0 else -1.0
    return rotation(normal, handed * screen_angle)


def step_mm(normal: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """How far along `normal` one voxel reaches: the step of one slice in an oblique view (the slice spacing for
    an axial normal, the pixel spacing for an in-plane one)."""
    return 1.0 / float(np.linalg.norm(np.asarray(normal) / np.asarray(spacing)))


class PlaneGrid:
    """The sample points of one view's plane through the crosshair `point` (voxel k, j, i, fractional).

    The screen rectangle is the orthogonal view's (`display_shape` x `pixel_spacing` mm), its centre on the
    volume's centre projected onto the plane: moving the crosshair within the plane moves no pixel, and an
    unturned plane maps exactly as the orthogonal view does. Samples are square, of the finer pixel spacing, so
    an oblique plane through thick slices keeps the in-plane resolution.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float], orientation: Orientation,
                 turn: np.ndarray, point) -> None:
        self.shape, self.spacing, self.orientation = shape, tuple(spacing), orientation
        self.row, self.col, self.normal = frame(orientation, turn)
        sp = np.asarray(spacing, float)
        self.point = np.asarray(point, float)
        rows, cols = display_shape(shape, orientation)
        prow, pcol = pixel_spacing(spacing, orientation)
        self.extent_mm = (rows * prow, cols * pcol)  # (height, width) of the screen rectangle
        step = min(prow, pcol)
        self.out_shape = (max(1, int(round(rows * prow / step))), max(1, int(round(cols * pcol / step))))
        centre = (np.asarray(shape, float) - 1) / 2 * sp
        self.centre = centre + float((self.point * sp - centre) @ self.normal) * self.normal  # on the plane
        self._voxels: np.ndarray | None = None

    def world_of(self, y_mm, x_mm) -> np.ndarray:
        """World mm (..., 3) of screen points (view mm, y down)."""
        dy = np.asarray(y_mm, float) - self.extent_mm[0] / 2
        dx = np.asarray(x_mm, float) - self.extent_mm[1] / 2
        return self.centre + dy[..., None] * self.row + dx[..., None] * self.col

    def voxel_of(self, y_mm, x_mm) -> np.ndarray:
        """Fractional voxel (k, j, i) (..., 3) of screen points."""
        return self.world_of(y_mm, x_mm) / np.asarray(self.spacing)

    def screen_of(self, voxel) -> tuple[float, float]:
        """Screen (y, x) mm of a voxel's projection onto the plane."""
        d = np.asarray(voxel, float) * np.asarray(self.spacing) - self.centre
        return self.extent_mm[0] / 2 + float(d @ self.row), self.extent_mm[1] / 2 + float(d @ self.col)

    def sample_voxels(self) -> np.ndarray:
        """(3, rows, cols) voxel coordinates of every sample's centre (computed once: the CT and each overlay
        sample the same points)."""
        if self._voxels is not None:
            return self._voxels
        h, w = self.out_shape
        ys = (np.arange(h) + 0.5) * (self.extent_mm[0] / h)
        xs = (np.arange(w) + 0.5) * (self.extent_mm[1] / w)
        self._voxels = np.ascontiguousarray(np.moveaxis(self.voxel_of(ys[:, None], xs[None, :]), -1, 0))
        return self._voxels

    def sample(self, array: np.ndarray, order: int = 1, fill: float | None = None) -> np.ndarray:
        """The plane's image of `array` (same dtype): trilinear (`order` 1) or nearest (0); outside the volume
        `fill` (default the array's minimum: air for CT, background for labels)."""
        cval = float(array.min()) if fill is None else float(fill)
        out = ndimage.map_coordinates(array, self.sample_voxels(), order=order, mode="constant", cval=cval,
                                      prefilter=False, output=np.float32 if order else array.dtype)
        if order and np.issubdtype(array.dtype, np.integer):
            return np.rint(out).astype(array.dtype)
        return out.astype(array.dtype, copy=False)

    def line_angle(self, other_normal: np.ndarray) -> float | None:
        """Screen angle in degrees (from the x axis toward y, rows down) of the line where a plane of normal
        `other_normal` through the crosshair cuts this one; None when the planes are parallel."""
        d = np.cross(self.normal, other_normal)
        if np.linalg.norm(d) < 1e-6:
            return None
        return math.degrees(math.atan2(float(d @ self.row), float(d @ self.col)))


_LETTERS = (("S", "I"), ("P", "A"), ("L", "R"))  # world axes z, y, x: the patient direction of + and -


def direction_letters(direction: np.ndarray, minor: float = 0.25) -> str:
    """Patient-direction letters of a world direction, strongest first, as oblique views label their edges
    ("L", "LA", "SPR"); components under `minor` of the unit vector are left out."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    order = np.argsort(-np.abs(d))
    return "".join(_LETTERS[a][0 if d[a] > 0 else 1] for a in order if abs(d[a]) >= minor) or "?"


def edge_letters(grid: PlaneGrid) -> dict[str, str]:
    """The letters at a view's screen edges (top, bottom, left, right) for its plane's row and column."""
    return {"top": direction_letters(-grid.row), "bottom": direction_letters(grid.row),
            "left": direction_letters(-grid.col), "right": direction_letters(grid.col)}

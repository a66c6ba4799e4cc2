"""The three orthogonal views of a canonical volume, in radiological convention.

The viewer keeps its volume canonical (array z, y, x toward patient S, P, L; see
`viewer.core.reorient`). A view's 2D image is indexed (row, column) with row 0 at the
top of the screen:

* axial    a[k]        rows A -> P, columns R -> L (patient's right on screen left)
* coronal  a[::-1, j]  rows S -> I, columns R -> L
* sagittal a[::-1, :, i] rows S -> I, columns A -> P

Every function here maps between that display grid and voxel indices, so masks
and heat maps on the volume grid land on the same pixels as the CT.
"""

from __future__ import annotations

from enum import Enum

import numpy as np


class Orientation(str, Enum):  # noqa: UP042 - StrEnum would change str() of the members
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    @property
    def axis(self) -> int:
        """The array axis (z, y, x) this view slices through."""
        return {"axial": 0, "coronal": 1, "sagittal": 2}[self.value]

    @property
    def labels(self) -> dict[str, str]:
        """Patient-direction letters at the screen edges."""
        return {
            "axial": {"top": "A", "bottom": "P", "left": "R", "right": "L"},
            "coronal": {"top": "S", "bottom": "I", "left": "R", "right": "L"},
            "sagittal": {"top": "S", "bottom": "I", "left": "A", "right": "P"},
        }[self.value]


def slice_count(shape: tuple[int, int, int], orientation: Orientation) -> int:
    return shape[orientation.axis]


def extract(array: np.ndarray, orientation: Orientation, index: int) -> np.ndarray:
    """The 2D display image (rows, columns) of one slice; a view where possible, never a full-volume copy."""
    if orientation is Orientation.AXIAL:
        return array[index]
    if orientation is Orientation.CORONAL:
        return array[::-1, index, :]
    return array[::-1, :, index]


PROJECTIONS = ("mip", "minip", "mean")  # thick-slab projections: maximum, minimum, mean intensity
PROJECTION_NAMES = {"mip": "MIP", "minip": "MinIP", "mean": "mean"}


def slab_range(count: int, index: int, thickness_mm: float, spacing_mm: float) -> tuple[int, int]:
    """The slices [start, stop) of a slab `thickness_mm` thick centred on slice `index` (at least that slice,
    clipped to the volume): round(thickness / spacing) slices, the odd extra one above."""
    n = max(1, int(round(thickness_mm / spacing_mm))) if thickness_mm > 0 else 1
    start = index - (n - 1) // 2
    return max(0, start), min(count, start + n)


def extract_slab(array: np.ndarray, orientation: Orientation, index: int, thickness_mm: float,
                 spacing: tuple[float, float, float], projection: str = "mip",
                 x_major: np.ndarray | None = None) -> np.ndarray:
    """The 2D display image of a thick slab centred on slice `index`: the maximum ("mip"), minimum ("minip") or
    mean ("mean", float32) over its slices; the plain slice when the slab is one slice thick.

    `x_major`: the same volume as a contiguous (x, z, y) array (`array.transpose(2, 0, 1)`), which makes sagittal
    slabs about 50x faster to project than the strided x columns of `array`; same result.

    Raises:
        ValueError: an unknown projection.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    axis = orientation.axis
    start, stop = slab_range(array.shape[axis], index, thickness_mm, spacing[axis])
    if stop - start <= 1:
        return extract(array, orientation, index)
    if axis == 2 and x_major is not None:
        slab = x_major[start:stop]
        flat = (slab.max(axis=0) if projection == "mip" else slab.min(axis=0) if projection == "minip"
                else slab.mean(axis=0, dtype=np.float32))
        return flat[::-1]  # (z, y) with z toward the head: the sagittal display puts the head on top
    cut = [slice(None)] * 3
    cut[axis] = slice(start, stop)
    slab = array[tuple(cut)]
    if projection == "mip":
        flat = slab.max(axis=axis)
    elif projection == "minip":
        flat = slab.min(axis=axis)
    else:
        flat = slab.mean(axis=axis, dtype=np.float32)
    # the projection has lost `axis`: put it back as a single slice and view it as `extract` does
    return extract(np.expand_dims(flat, axis), orientation, 0)


def upsample_rows(image: np.ndarray, factor: int) -> np.ndarray:
    """`image` with `factor` times as many rows, linearly interpolated between row centres (the edge rows
    repeat): a thick-slice stack's coronal or sagittal image without the staircase of nearest neighbours.
    Same dtype as `image` (rounded for integers)."""
    if factor <= 1:
        return image
    n = image.shape[0]
    pos = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)[:, None]
    out = image[lo].astype(np.float32) * (1 - w) + image[hi].astype(np.float32) * w
    return np.rint(out).astype(image.dtype) if np.issubdtype(image.dtype, np.integer) else out.astype(image.dtype)


def display_shape(shape: tuple[int, int, int], orientation: Orientation) -> tuple[int, int]:
    nz, ny, nx = shape
    return {Orientation.AXIAL: (ny, nx), Orientation.CORONAL: (nz, nx), Orientation.SAGITTAL: (nz, ny)}[orientation]


def pixel_spacing(spacing: tuple[float, float, float], orientation: Orientation) -> tuple[float, float]:
    """(row, column) size in mm of a display pixel: what keeps the physical aspect ratio."""
    dz, dy, dx = spacing
    return {Orientation.AXIAL: (dy, dx), Orientation.CORONAL: (dz, dx), Orientation.SAGITTAL: (dz, dy)}[orientation]


def display_to_voxel(shape: tuple[int, int, int], orientation: Orientation, index: int,
                     row: float, col: float) -> tuple[float, float, float]:
    """Voxel (k, j, i) of a display position (row, column) on slice `index` (fractional allowed)."""
    nz = shape[0]
    if orientation is Orientation.AXIAL:
        return (float(index), row, col)
    if orientation is Orientation.CORONAL:
        return (nz - 1 - row, float(index), col)
    return (nz - 1 - row, col, float(index))


def voxel_to_display(shape: tuple[int, int, int], orientation: Orientation,
                     voxel: tuple[float, float, float]) -> tuple[float, float]:
    """Display (row, column) of voxel (k, j, i) in the view of `orientation`."""
    k, j, i = voxel
    nz = shape[0]
    if orientation is Orientation.AXIAL:
        return (j, i)
    if orientation is Orientation.CORONAL:
        return (nz - 1 - k, i)
    return (nz - 1 - k, j)


def clamp_voxel(shape: tuple[int, int, int], voxel) -> tuple[int, int, int]:
    return tuple(int(np.clip(round(v), 0, n - 1)) for v, n in zip(voxel, shape))  # type: ignore[return-value]

"""Geometry of a stack of parallel image planes, and its resampling to a regular grid.

DICOM gives each slice its own plane (ImagePositionPatient + ImageOrientationPatient).
A stack is a regular 3D grid only when the planes are evenly spaced along their
normal and not shifted in-plane. Missing slices, variable spacing and gantry tilt
(a sheared stack) all break that; readers that ignore it (SimpleITK reports one
mean spacing) draw a silently wrong image. Here every such stack is resampled
onto an orthogonal grid aligned with the slice rows, columns and normal, with a
warning naming what was corrected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from viewer.core.progress import CancelFn, check_cancel

#: positions may deviate from a perfect linear fit by this fraction of the spacing
UNIFORM_TOLERANCE = 0.05
#: an in-plane shift below this many pixels over the whole stack is not a tilt
SHEAR_TOLERANCE_PX = 0.05
#: a stack that would be resampled onto more slices than this is refused (a slice at a wrong position)
MAX_SLICES = 4000
#: no grid of more voxels than this is allocated (4 GiB at int16)
MAX_VOXELS = 1 << 31


@dataclass(frozen=True)
class StackPlan:
    """How to turn sorted slices into a regular grid.

    Attributes:
        order: indices that sort the input slices along the normal.
        positions: sorted distance of each slice along the normal (mm).
        shifts_px: in-plane offset (rows, columns) of each sorted slice relative to the first, in pixels.
        spacing: output (z, y, x) voxel size in mm.
        shape: output (z, y, x) size.
        origin: LPS of output voxel [0, 0, 0].
        direction: output direction (columns: normal, column direction, row direction).
        resample: False when the sorted slices already form the grid.
        warnings: what was found and corrected.
    """

    order: np.ndarray
    positions: np.ndarray
    shifts_px: np.ndarray
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    direction: np.ndarray
    resample: bool
    warnings: tuple[str, ...]
    dropped: tuple[int, ...] = ()  # input indices left out (duplicate positions)


def orientation_vectors(iop: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row direction, column direction and slice normal from an ImageOrientationPatient value."""
    v = np.asarray(iop, dtype=float)
    if v.shape != (6,) or not np.all(np.isfinite(v)):
        raise ValueError(f"ImageOrientationPatient must hold six numbers, got {iop!r}")
    row, col = v[:3], v[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise ValueError(f"ImageOrientationPatient has a zero vector: {iop!r}")
    row, col = row / nr, col / nc
    if abs(float(np.dot(row, col))) > 1e-3:
        raise ValueError(f"ImageOrientationPatient row and column are not perpendicular: {iop!r}")
    col = col - np.dot(col, row) * row
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    return row, col, normal


def plan_stack(
    positions_lps: np.ndarray,
    iop: tuple[float, ...],
    pixel_spacing: tuple[float, float],
    rows: int,
    columns: int,
    *,
    slice_thickness: float | None = None,
    names: list[str] | None = None,
) -> StackPlan:
    """Sort slices along their normal and decide the output grid.

    Args:
        positions_lps: (N, 3) ImagePositionPatient of each slice.
        iop: the shared ImageOrientationPatient.
        pixel_spacing: (row spacing, column spacing) in mm, i.e. (dy, dx).
        rows, columns: slice size in pixels.
        slice_thickness: used as the z spacing of a single-slice stack.
        names: a label per slice (file name) for warnings.
    """
    pos = raw = np.asarray(positions_lps, dtype=float).reshape(-1, 3)
    n = len(pos)
    row, col, normal = orientation_vectors(iop)
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    if not (math.isfinite(dy) and math.isfinite(dx) and dy > 0 and dx > 0):
        raise ValueError(f"PixelSpacing must be two positive numbers, got {dy:g}\\{dx:g}")
    bad = np.nonzero(~np.all(np.isfinite(pos), axis=1))[0]
    if len(bad):
        raise ValueError(f"ImagePositionPatient of {_name(names, int(bad[0]))} is not finite: {pos[bad[0]].tolist()}")
    if slice_thickness is not None and not math.isfinite(slice_thickness):
        raise ValueError(f"SliceThickness is not finite: {slice_thickness}")
    direction = np.stack([normal, col, row], axis=1)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    pos = pos[order]
    warnings: list[str] = []

    # duplicates: same plane twice
    keep = np.ones(n, dtype=bool)
    if n > 1:
        gaps = np.diff(dist)
        typical = float(np.median(gaps[gaps > 1e-3])) if np.any(gaps > 1e-3) else 0.0
        dup = np.nonzero(gaps <= max(1e-3, 0.01 * typical))[0]
        for i in dup:
            keep[i + 1] = False
            a = names[order[i]] if names else f"slice {order[i]}"
            b = names[order[i + 1]] if names else f"slice {order[i + 1]}"
            warnings.append(
                f"{b} repeats the position of {a} ({dist[i]:.2f} mm along the slice normal); kept {a} only"
            )
    dropped = tuple(int(i) for i in order[~keep])
    order, dist, pos = order[keep], dist[keep], pos[keep]
    n = len(order)

    rel = pos - pos[0]
    shifts = np.stack([rel @ col / dy, rel @ row / dx], axis=1)  # (rows, columns) pixels
    if n == 1:
        dz = float(slice_thickness) if slice_thickness and slice_thickness > 0 else 1.0
        _check_size((1, rows, columns))
        return StackPlan(order, dist, shifts, (dz, dy, dx), (1, rows, columns), tuple(pos[0]), direction,
                         False, tuple(warnings), dropped)

    gaps = np.diff(dist)
    mean_gap = (dist[-1] - dist[0]) / (n - 1)
    linear = dist[0] + mean_gap * np.arange(n)
    uniform = bool(np.max(np.abs(dist - linear)) <= UNIFORM_TOLERANCE * mean_gap)
    sheared = bool(np.max(np.abs(shifts)) > SHEAR_TOLERANCE_PX)

    if uniform and not sheared:
        _check_size((n, rows, columns))
        return StackPlan(order, dist, shifts, (float(mean_gap), dy, dx), (n, rows, columns), tuple(pos[0]),
                         direction, False, tuple(warnings), dropped)

    typical = float(np.median(gaps))
    target = float(np.min(gaps[gaps >= 0.5 * typical]))
    if not uniform:
        big = gaps > 1.5 * typical
        regular = np.abs(gaps - typical) <= UNIFORM_TOLERANCE * typical
        multiple = np.abs(gaps / typical - np.round(gaps / typical)) <= 0.1
        if np.any(big) and np.all(regular | (big & multiple)):
            for i in np.nonzero(big)[0]:
                missing = max(1, round(gaps[i] / typical) - 1)
                warnings.append(
                    f"{missing} slice(s) missing: a gap of {gaps[i]:.2f} mm (expected {typical:.2f} mm) "
                    f"between {dist[i]:.2f} and {dist[i + 1]:.2f} mm along the slice normal; "
                    "the gap was filled by linear interpolation"
                )
            target = typical
        else:
            warnings.append(
                f"slice spacing is not uniform (gaps from {gaps.min():.2f} to {gaps.max():.2f} mm); "
                f"resampled to a uniform {target:.2f} mm along the slice normal"
            )
    if sheared:
        along = dist[-1] - dist[0]
        inplane = float(np.linalg.norm(rel[-1] - np.dot(rel[-1], normal) * normal))
        tilt = math.degrees(math.atan2(inplane, along))
        warnings.append(
            f"gantry tilt / sheared stack: slices shift {inplane:.1f} mm in-plane over {along:.1f} mm "
            f"({tilt:.1f} deg); resampled to an orthogonal grid"
        )

    vmin, umin = np.floor(shifts.min(axis=0) + 1e-6)
    vmax, umax = np.ceil(shifts.max(axis=0) - 1e-6)
    out_rows = int(rows + vmax - vmin)
    out_cols = int(columns + umax - umin)
    span = float(dist[-1] - dist[0])
    if not math.isfinite(span / target) or span / target > MAX_SLICES:
        k = int(np.argmax(gaps))  # the lone slice(s) beyond the largest gap are the suspects
        suspect = order[0] if k + 1 <= n - k - 1 else order[-1]
        raise ValueError(
            f"slice positions span {span:.6g} mm at {target:.4g} mm spacing: more than {MAX_SLICES} slices "
            f"after resampling; the largest gap is {gaps[k]:.6g} mm; is the ImagePositionPatient of "
            f"{_name(names, int(suspect))} ({', '.join(f'{v:g}' for v in raw[suspect])}) wrong?"
        )
    nz = int(math.floor(span / target + 1e-6)) + 1
    _check_size((nz, out_rows, out_cols))
    origin = pos[0] + vmin * dy * col + umin * dx * row
    plan_shifts = shifts - np.array([vmin, umin])
    return StackPlan(order, dist, plan_shifts, (target, dy, dx), (nz, out_rows, out_cols), tuple(origin),
                     direction, True, tuple(warnings), dropped)


def _name(names: list[str] | None, i: int) -> str:
    return names[i] if names else f"slice {i}"


def _check_size(shape: tuple[int, int, int]) -> None:
    voxels = shape[0] * shape[1] * shape[2]
    if voxels > MAX_VOXELS:
        raise ValueError(f"the volume would have {shape[0]} x {shape[1]} x {shape[2]} = {voxels:,} voxels, "
                         f"more than {MAX_VOXELS:,}: refused")


def resample_stack(
    slices: np.ndarray, plan: StackPlan, *, fill: float | None = None, cancel: CancelFn | None = None
) -> np.ndarray:
    """Put sorted slices (N, rows, cols) onto the plan's grid (linear interpolation).

    `slices` must already be in plan order (sorted, duplicates dropped). Voxels
    outside every acquired slice get `fill` (default: air, -1024 HU, or the lowest value present if lower).
    """
    if not plan.resample:
        return slices
    if fill is None:
        fill = min(-1024.0, float(slices.min()))
    nz, ny, nx = plan.shape
    out_dtype = np.float32 if slices.dtype.kind == "f" else slices.dtype
    out = np.empty(plan.shape, dtype=out_dtype)
    dist = plan.positions
    integer_shifts = bool(np.allclose(plan.shifts_px, np.round(plan.shifts_px), atol=1e-3))
    cache: dict[int, np.ndarray] = {}

    def placed(k: int) -> np.ndarray:
        if k in cache:
            return cache[k]
        src = slices[k].astype(np.float32)
        sv, su = plan.shifts_px[k]
        if integer_shifts:
            img = np.full((ny, nx), fill, dtype=np.float32)
            r0, c0 = int(round(sv)), int(round(su))
            img[r0 : r0 + src.shape[0], c0 : c0 + src.shape[1]] = src
        else:
            img = ndimage.affine_transform(src, np.eye(2), offset=(-sv, -su), output_shape=(ny, nx),
                                           order=1, mode="constant", cval=fill)
        for old in [key for key in cache if key < k - 1]:
            del cache[old]  # slices are visited in order: keep only the current pair
        cache[k] = img
        return img

    for z in range(nz):
        if z % 8 == 0:
            check_cancel(cancel)
        s = dist[0] + z * plan.spacing[0]
        k = int(np.clip(np.searchsorted(dist, s, side="right") - 1, 0, len(dist) - 2))
        span = dist[k + 1] - dist[k]
        w = float(np.clip((s - dist[k]) / span, 0.0, 1.0))
        if w < 1e-6:
            val = placed(k)
        elif w > 1 - 1e-6:
            val = placed(k + 1)
        else:
            val = (1 - w) * placed(k) + w * placed(k + 1)
        out[z] = np.rint(val) if out_dtype != np.float32 else val
    return out

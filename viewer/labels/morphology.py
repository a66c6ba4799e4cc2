"""Whole-label operations on a `LabelMap`: slice interpolation, island removal, smoothing. Qt-free.

Each function is one undoable step, works in the label's bounding box (plus a margin), never changes
locked labels and refuses to edit a locked label.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection

import numpy as np
from scipy import ndimage

from viewer.labels.label_map import Box, LabelMap, union_boxes

SMOOTH_METHODS = ("closing", "opening", "median")
_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def _label_box(labels: LabelMap, value: int, margin: tuple[int, int, int] = (0, 0, 0)
               ) -> tuple[slice, slice, slice] | None:
    box = labels.bounding_box(value)
    if box is None:
        return None
    return tuple(slice(max(box[2 * a] - margin[a], 0), min(box[2 * a + 1] + margin[a], labels.shape[a]))
                 for a in range(3))  # type: ignore[return-value]


def _box(sl: tuple[slice, ...]) -> Box:
    return sl[0].start, sl[0].stop, sl[1].start, sl[1].stop, sl[2].start, sl[2].stop


def _signed_distance(mask: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """Signed distance (mm) to the outline of a 2D mask: negative inside, positive outside."""
    padded = np.pad(mask, 1)  # exact: every voxel beyond the box is outside
    sd = ndimage.distance_transform_edt(~padded, sampling=sampling)
    sd -= ndimage.distance_transform_edt(padded, sampling=sampling)
    return sd[1:-1, 1:-1]


def interpolate_slices(labels: LabelMap, value: int, *, axis: int = 0,
                       overwrite: Collection[int] | None = None) -> Box | None:
    """Fill the slices between sparsely drawn slices of `value` (morphological contour interpolation).

    Along `axis`, every pair of consecutive slices that contain the label with empty slices between
    them is interpolated: the signed distance maps of the two outlines are blended linearly and the
    negative part painted, so shapes that grow or shrink morph smoothly. Outlines that do not overlap
    are blended aligned on their centroids and moved along the line between them.
    Returns the changed box or None.
    """
    value = labels.check_value(value, allow_background=False)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (z), 1 (y) or 2 (x), got {axis!r}")
    full = _label_box(labels, value)
    if full is None:
        return None
    arr = labels.array
    plane_axes = [a for a in range(3) if a != axis]
    sampling = (labels.spacing[plane_axes[0]], labels.spacing[plane_axes[1]])
    present = (arr[full] == value).any(axis=tuple(plane_axes))
    drawn = [full[axis].start + int(k) for k in np.flatnonzero(present)]
    boxes = []
    with labels.stroke("interpolate"):
        for k0, k1 in zip(drawn[:-1], drawn[1:]):
            if k1 - k0 < 2:
                continue
            a = np.take(arr, k0, axis=axis) == value
            b = np.take(arr, k1, axis=axis) == value
            move = np.zeros(2, np.int64)
            if not (a & b).any():  # disjoint: blend the outlines aligned on their centroids, then move them along
                move = np.rint(np.argwhere(b).mean(0) - np.argwhere(a).mean(0)).astype(np.int64)
                b = _shifted(b, -move)
            rows, cols = np.nonzero(a | b)
            r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            sd_a = _signed_distance(a[r0:r1, c0:c1], sampling)
            sd_b = _signed_distance(b[r0:r1, c0:c1], sampling)
            for k in range(k0 + 1, k1):
                t = (k - k0) / (k1 - k0)
                inside = (1.0 - t) * sd_a + t * sd_b < 0
                dr, dc = (int(v) for v in np.rint(t * move))
                lo = np.maximum([r0 + dr, c0 + dc], 0)
                hi = np.minimum([r1 + dr, c1 + dc], a.shape)
                if np.any(hi <= lo):
                    continue
                inside = inside[lo[0] - r0 - dr:hi[0] - r0 - dr, lo[1] - c0 - dc:hi[1] - c0 - dc]
                sl = [slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))]
                sl.insert(axis, slice(k, k + 1))
                boxes.append(labels.write(_box(tuple(sl)), np.expand_dims(inside, axis), value, overwrite=overwrite,
                                          name="interpolate"))
    return union_boxes(boxes)


def _shifted(mask: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`mask` moved by `offset` (rows, columns); what leaves the array is dropped."""
    out = np.zeros_like(mask)
    src = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, mask.shape))
    dst = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, mask.shape))
    out[dst] = mask[src]
    return out


def _components(labels: LabelMap, value: int, connectivity: int
                ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray] | None:
    if connectivity not in _CONNECTIVITY:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    sl = _label_box(labels, value)
    if sl is None:
        return None
    lab, n = ndimage.label(labels.array[sl] == value, ndimage.generate_binary_structure(3, _CONNECTIVITY[connectivity]))
    sizes = np.bincount(lab.reshape(-1), minlength=n + 1)
    return sl, lab, sizes


def _remove(labels: LabelMap, value: int, sl: tuple[slice, slice, slice], lab: np.ndarray, drop: np.ndarray,
            fill: int, name: str) -> Box | None:
    """Set the components flagged in `drop` (indexed by component number) to `fill`."""
    if not drop.any():
        return None
    return labels.write(_box(sl), drop[lab], fill, overwrite={value}, name=name)


def _check_fill(labels: LabelMap, fill: int, value: int) -> int:
    fill = labels.check_value(fill)
    if fill == value:
        raise ValueError("fill must differ from the label being cleaned")
    return fill


def remove_islands(labels: LabelMap, value: int, *, min_voxels: int | None = None, min_ml: float | None = None,
                   connectivity: int = 26, fill: int = 0) -> Box | None:
    """Remove the connected pieces of `value` smaller than `min_voxels` or `min_ml` (give one); they become `fill`."""
    value = labels.check_value(value, allow_background=False)
    fill = _check_fill(labels, fill, value)
    if (min_voxels is None) == (min_ml is None):
        raise ValueError("give exactly one of min_voxels and min_ml")
    if min_ml is not None:
        if isinstance(min_ml, bool) or not isinstance(min_ml, numbers.Real) or not (
                math.isfinite(min_ml) and min_ml >= 0):
            raise ValueError(f"min_ml must be >= 0, got {min_ml!r}")
        threshold = min_ml / labels.voxel_ml
    else:
        if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 0:
            raise ValueError(f"min_voxels must be an integer >= 0, got {min_voxels!r}")
        threshold = float(min_voxels)
    got = _components(labels, value, connectivity)
    if got is None:
        return None
    sl, lab, sizes = got
    drop = sizes < threshold
    drop[0] = False
    return _remove(labels, value, sl, lab, drop, fill, "remove islands")


def keep_largest(labels: LabelMap, value: int, *, connectivity: int = 26, fill: int = 0) -> Box | None:
    """Keep only the largest connected piece of `value`; the others become `fill`."""
    value = labels.check_value(value, allow_background=False)
    fill = _check_fill(labels, fill, value)
    got = _components(labels, value, connectivity)
    if got is None:
        return None
    sl, lab, sizes = got
    drop = np.ones(len(sizes), bool)
    drop[0] = False
    drop[int(np.argmax(sizes[1:])) + 1] = False
    return _remove(labels, value, sl, lab, drop, fill, "keep largest")


def ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Ellipsoidal structuring element: the voxels within `radius_mm` of the centre (in mm)."""
    reach = [int(math.floor(radius_mm / s + 1e-9)) for s in spacing]
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in reach)]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return np.asarray(d2 <= radius_mm**2 * (1 + 1e-9))


def smooth(labels: LabelMap, value: int, radius_mm: float, *, method: str = "closing",
           overwrite: Collection[int] | None = None, fill: int = 0) -> Box | None:
    """Smooth the label with a ball of `radius_mm` (anisotropic spacing honoured).

    "closing" fills gaps and notches (adds voxels), "opening" removes spurs and thin bridges (removes
    voxels), "median" is a majority vote in the ball (both). Added voxels replace only labels in
    `overwrite` (None = every unlocked label); removed voxels become `fill`.
    """
    value = labels.check_value(value, allow_background=False)
    fill = _check_fill(labels, fill, value)
    if method not in SMOOTH_METHODS:
        raise ValueError(f"method must be one of {SMOOTH_METHODS}, got {method!r}")
    if isinstance(radius_mm, bool) or not isinstance(radius_mm, numbers.Real) or not (
            math.isfinite(radius_mm) and radius_mm > 0):
        raise ValueError(f"radius_mm must be a positive number, got {radius_mm!r}")
    se = ball(float(radius_mm), labels.spacing)
    reach = tuple(n // 2 for n in se.shape)
    # closing can reach 2 radii beyond the label before eroding back; the others stay within 1
    sl = _label_box(labels, value, tuple(2 * r + 1 for r in reach))
    if sl is None:
        return None
    cur = labels.array[sl] == value
    if method == "closing":
        # erode with the outside set: beyond the box nothing was dilated anyway, beyond the volume
        # this keeps labels that touch the edge
        new = ndimage.binary_erosion(ndimage.binary_dilation(cur, se), se, border_value=1)
    elif method == "opening":
        new = ndimage.binary_dilation(ndimage.binary_erosion(cur, se, border_value=1), se)
    else:
        count = ndimage.correlate(cur.view(np.uint8), se.astype(np.uint8), output=np.int32, mode="nearest")
        new = count * 2 > int(se.sum())
    with labels.stroke(f"smooth ({method})"):
        removed = labels.write(_box(sl), cur & ~new, fill, overwrite={value}, name="smooth")
        added = labels.write(_box(sl), new & ~cur, value, overwrite=overwrite, name="smooth")
    return union_boxes([removed, added])

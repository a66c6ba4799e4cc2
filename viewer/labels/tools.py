"""Annotation tools on a `LabelMap`: brush, eraser, flood fill and polygon fill, Qt-free.

Coordinates are voxel indices (z, y, x) of the CT grid, fractional where the mouse is; sizes are mm.
Every tool takes the same constraints:

- `hu_range`: paint only where the CT is inside [lo, hi] HU (a tuple or a `HU_PRESETS` name);
- `overwrite`: the labels a tool may replace. The default (None) is every unlocked label, background
  included, because lesion labels are painted over the lung labels; pass {0} to paint on background
  only, or e.g. {0, 1, 2} to keep other lesions;
- locked labels never change, whatever `overwrite` says; painting a locked label is an error.

A tool touches only its bounding box, so a dab costs the same on any volume size.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Collection, Sequence

import numpy as np
from scipy import ndimage

from viewer.labels.label_map import Box, LabelMap, union_boxes

HU_PRESETS: dict[str, tuple[float, float]] = {"ggo": (-750.0, -300.0), "consolidation": (-300.0, 50.0)}
PLANES: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}  # the array axis normal to the plane
BRUSH_SHAPES = (*PLANES, "sphere")
HURange = tuple[float, float] | str | None
Point = Sequence[float] | np.ndarray


def resolve_hu_range(hu_range: HURange) -> tuple[float, float] | None:
    """(lo, hi) from a tuple or a `HU_PRESETS` name; None stays None."""
    if hu_range is None:
        return None
    if isinstance(hu_range, str):
        try:
            return HU_PRESETS[hu_range.lower()]
        except KeyError:
            raise ValueError(f"unknown HU preset {hu_range!r}; known: {sorted(HU_PRESETS)}") from None
    try:
        lo, hi = (float(v) for v in hu_range)
    except (TypeError, ValueError):
        raise ValueError(f"hu_range must be (lo, hi) or a preset name, got {hu_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"hu_range must be finite with lo <= hi, got {hu_range!r}")
    return lo, hi


def plane_axis(plane: str) -> int:
    """The array axis normal to an 'axial', 'coronal' or 'sagittal' plane."""
    try:
        return PLANES[plane]
    except (KeyError, TypeError):
        raise ValueError(f"plane must be one of {tuple(PLANES)}, got {plane!r}") from None


def _check_hu(labels: LabelMap, hu: np.ndarray | None, needed: bool) -> None:
    if hu is None:
        if needed:
            raise ValueError("an HU range needs the CT array")
        return
    if not isinstance(hu, np.ndarray) or hu.shape != labels.shape:
        raise ValueError(f"the CT array must have the label map's shape {labels.shape}, got "
                         f"{getattr(hu, 'shape', type(hu).__name__)}")


def _point(p: Point, n: int = 3, what: str = "point") -> np.ndarray:
    try:
        a = np.asarray(p, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be {n} numbers, got {p!r}") from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{what} must be {n} finite numbers, got {p!r}")
    return a


def _constrain(mask: np.ndarray, hu: np.ndarray | None, sl: tuple[slice, ...], hu_range: tuple[float, float] | None
               ) -> np.ndarray:
    if hu_range is not None and hu is not None:
        h = hu[sl]
        mask &= h >= hu_range[0]
        mask &= h <= hu_range[1]
    return mask


def _box_of(sl: tuple[slice, ...]) -> Box:
    """The (z0, z1, y0, y1, x0, x1) box of three slices."""
    return sl[0].start, sl[0].stop, sl[1].start, sl[1].stop, sl[2].start, sl[2].stop


def capsule_mask(shape: tuple[int, ...], start: np.ndarray, end: np.ndarray, spacing: np.ndarray, radius_mm: float
                 ) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """Voxels within `radius_mm` of the segment start-end (voxel coordinates), in its bounding box.

    Works in any number of axes. The voxels under the segment itself are always included, so a brush
    smaller than a voxel still paints where the mouse is. Returns (box slices, bool mask) or None
    when the capsule lies outside the array.
    """
    reach = radius_mm / spacing
    lo_f, hi_f = np.minimum(start, end), np.maximum(start, end)
    lo = np.minimum(np.ceil(lo_f - reach - 1e-9), np.rint(lo_f)).astype(np.int64)
    hi = np.maximum(np.floor(hi_f + reach + 1e-9), np.rint(hi_f)).astype(np.int64) + 1
    size = np.asarray(shape)
    lo, hi = np.maximum(lo, 0), np.minimum(hi, size)
    if np.any(hi <= lo):
        return None
    n = len(shape)
    d = (end - start) * spacing
    dd = float(d @ d)
    grids = []
    for a in range(n):
        g = (np.arange(lo[a], hi[a]) - start[a]) * spacing[a]
        grids.append(g.reshape([-1 if i == a else 1 for i in range(n)]))
    if dd > 0:
        t = sum(g * d[a] for a, g in enumerate(grids)) / dd
        np.clip(t, 0.0, 1.0, out=t)
        dist2 = sum((g - t * d[a]) ** 2 for a, g in enumerate(grids))
    else:
        dist2 = sum(g**2 for g in grids)
    mask = np.asarray(dist2 <= radius_mm**2 * (1 + 1e-9))
    mask = np.broadcast_to(mask, tuple(hi - lo)).copy()
    steps = int(np.ceil(np.abs(end - start).max() * 2)) + 1
    pts = np.rint(start + np.linspace(0.0, 1.0, steps)[:, None] * (end - start)).astype(np.int64)
    pts = pts[np.all((pts >= lo) & (pts < hi), axis=1)] - lo
    mask[tuple(pts.T)] = True
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), mask


class Brush:
    """A round brush: a disk in a slice plane or a sphere, `diameter_mm` across (anisotropic spacing honoured).

    Args:
        diameter_mm: brush size in mm.
        value: the label painted (0 erases).
        shape: "axial", "coronal", "sagittal" (a disk in that plane) or "sphere".
        hu_range: paint only where HU is in [lo, hi] (tuple or preset name).
        overwrite: labels that may be replaced; None = every unlocked label.

    A drag: `labels.begin_stroke()`, `dab` at the press, `line(previous, current)` per move,
    `labels.end_stroke()` at the release; or `stroke(points)` for a whole path.
    """

    diameter_mm: float
    value: int
    shape: str
    hu_range: tuple[float, float] | None
    overwrite: frozenset[int] | None

    def __init__(self, diameter_mm: float, value: int, *, shape: str = "axial", hu_range: HURange = None,
                 overwrite: Collection[int] | None = None) -> None:
        if isinstance(diameter_mm, bool) or not isinstance(diameter_mm, numbers.Real) or not (
                math.isfinite(diameter_mm) and diameter_mm > 0):
            raise ValueError(f"brush diameter must be a positive number of mm, got {diameter_mm!r}")
        if shape not in BRUSH_SHAPES:
            raise ValueError(f"brush shape must be one of {BRUSH_SHAPES}, got {shape!r}")
        self.diameter_mm = float(diameter_mm)
        self.value = value
        self.shape = shape
        self.hu_range = resolve_hu_range(hu_range)
        self.overwrite = None if overwrite is None else frozenset(overwrite)

    @property
    def name(self) -> str:
        return "erase" if self.value == 0 else "brush"

    def dab(self, labels: LabelMap, hu: np.ndarray | None, center: Point) -> Box | None:
        """Paint one dab at `center` (z, y, x); returns the changed box or None."""
        c = _point(center, what="brush centre")
        return self.line(labels, hu, c, c)

    def line(self, labels: LabelMap, hu: np.ndarray | None, start: Point, end: Point) -> Box | None:
        """Paint dabs all along start-end (no gaps, however fast the drag); one undo step unless in a stroke.

        A disk brush paints on the slice of `end`.
        """
        labels.check_value(self.value)
        _check_hu(labels, hu, self.hu_range is not None)
        a, b = _point(start, what="line start"), _point(end, what="line end")
        spacing = np.asarray(labels.spacing)
        if self.shape == "sphere":
            axes = [0, 1, 2]
            fixed: tuple[int, int] | None = None
        else:
            k = PLANES[self.shape]
            s = int(np.rint(b[k]))
            if not 0 <= s < labels.shape[k]:
                return None
            axes = [i for i in range(3) if i != k]
            fixed = (k, s)
        radius = self.diameter_mm / 2.0
        # long segments go in pieces so no box is much larger than the brush
        piece = max(16.0, 4.0 * radius / float(spacing[axes].min()))
        n = max(1, int(np.ceil(np.abs(b[axes] - a[axes]).max() / piece)))
        boxes: list[Box] = []
        with labels.stroke(self.name):
            for i in range(n):
                p0 = a + (b - a) * (i / n)
                p1 = a + (b - a) * ((i + 1) / n)
                got = capsule_mask(tuple(labels.shape[i] for i in axes), p0[axes], p1[axes], spacing[axes], radius)
                if got is None:
                    continue
                sl2, m2 = got
                if fixed is None:
                    sl, mask = sl2, m2
                else:
                    sl_l = list(sl2)
                    sl_l.insert(fixed[0], slice(fixed[1], fixed[1] + 1))
                    sl, mask = tuple(sl_l), np.expand_dims(m2, fixed[0])
                mask = _constrain(mask, hu, sl, self.hu_range)
                box = labels.write(_box_of(sl), mask, self.value, overwrite=self.overwrite, name=self.name)
                if box is not None:
                    boxes.append(box)
        return union_boxes(boxes)

    def stroke(self, labels: LabelMap, hu: np.ndarray | None, points: Sequence[Point]) -> Box | None:
        """Paint a whole path (a dab at the first point, lines between successive points) as one undo step."""
        pts = [_point(p, what="stroke point") for p in points]
        if not pts:
            return None
        boxes: list[Box | None] = []
        with labels.stroke(self.name):
            boxes.append(self.dab(labels, hu, pts[0]))
            for p, q in zip(pts[:-1], pts[1:]):
                boxes.append(self.line(labels, hu, p, q))
        return union_boxes(boxes)


class Eraser(Brush):
    """A brush that sets voxels to background (0); same shapes and constraints."""

    def __init__(self, diameter_mm: float, *, shape: str = "axial", hu_range: HURange = None,
                 overwrite: Collection[int] | None = None) -> None:
        super().__init__(diameter_mm, 0, shape=shape, hu_range=hu_range, overwrite=overwrite)


def flood_fill(labels: LabelMap, hu: np.ndarray | None, seed: Point, value: int, *, hu_range: HURange = None,
               plane: str | None = None, connectivity: int | None = None, overwrite: Collection[int] | None = None,
               max_extent_mm: float | None = None, max_ml: float | None = None) -> Box | None:
    """Fill the connected region around `seed` (z, y, x) with `value`, in 3D or on one slice.

    Args:
        hu_range: the region is the voxels in [lo, hi] HU connected to the seed (region growing);
            None: the voxels that have the seed's current label (bucket fill).
        plane: None for 3D, or "axial"/"coronal"/"sagittal" for the seed's slice only.
        connectivity: 6 (default), 18 or 26 in 3D; 4 (default) or 8 in 2D.
        overwrite: labels that may be replaced (None = every unlocked label); other labels and locked
            labels are walls the region does not grow through.
        max_extent_mm: the region stays within a box this wide (mm) centred on the seed; None = the volume.
        max_ml: a region larger than this (mL) is not filled: ValueError saying how large it would be.

    The region is labelled inside a box that grows only while the region reaches its faces, so a small
    region costs the same on any volume size. Returns the changed box, or None (e.g. the seed is not
    in the HU range).
    """
    value = labels.check_value(value)
    hu_rng = resolve_hu_range(hu_range)
    _check_hu(labels, hu, hu_rng is not None)
    s = np.rint(_point(seed, what="seed")).astype(np.int64)
    if np.any(s < 0) or np.any(s >= labels.shape):
        raise ValueError(f"seed {tuple(seed)} is outside the volume {labels.shape}")
    if max_extent_mm is not None and (not math.isfinite(max_extent_mm) or max_extent_mm <= 0):
        raise ValueError(f"max_extent_mm must be a positive number, got {max_extent_mm!r}")
    if max_ml is not None and (not math.isfinite(max_ml) or max_ml <= 0):
        raise ValueError(f"max_ml must be a positive number, got {max_ml!r}")
    if plane is None:
        axes, fixed = [0, 1, 2], None
        conn = {6: 1, 18: 2, 26: 3}
        connectivity = 6 if connectivity is None else connectivity
    else:
        k = plane_axis(plane)
        axes, fixed = [i for i in range(3) if i != k], k
        conn = {4: 1, 8: 2}
        connectivity = 4 if connectivity is None else connectivity
    if connectivity not in conn:
        raise ValueError(f"connectivity must be one of {sorted(conn)} here, got {connectivity!r}")
    structure = ndimage.generate_binary_structure(len(axes), conn[connectivity])
    arr = labels.array
    editable = labels.editable(overwrite)
    editable[value] = True  # voxels already filled carry the region on
    seed_label = int(arr[tuple(s)])

    def full(sub: tuple[slice, ...]) -> tuple[slice | int, ...]:
        out: list[slice | int] = list(sub)
        if fixed is not None:
            out.insert(fixed, int(s[fixed]))
        return tuple(out)

    def passable(sub: tuple[slice, ...]) -> np.ndarray:
        sl = full(sub)
        cur = arr[sl]
        ok = editable[cur]
        if hu_rng is None:
            ok &= cur == seed_label
        else:
            h = hu[sl]  # type: ignore[index]
            ok &= h >= hu_rng[0]
            ok &= h <= hu_rng[1]
        return ok

    shape = tuple(labels.shape[a] for a in axes)
    limit = None
    if max_extent_mm is not None:
        limit = np.maximum(np.floor(max_extent_mm / 2.0 / np.asarray(labels.spacing)[axes]), 0).astype(np.int64)
    got = grow_region(passable, s[axes], shape, structure, limit)
    if got is None:
        return None
    sub, mask = got
    if max_ml is not None:
        ml = float(np.count_nonzero(mask)) * labels.voxel_ml
        if ml > max_ml:
            raise ValueError(f"fill stopped: it would fill {ml:.1f} mL, over the {max_ml:g} mL limit (it probably "
                             "leaked: narrow the HU range, draw a barrier first, or raise the fill limit)")
    sl = full(sub)
    sl3 = tuple(x if isinstance(x, slice) else slice(x, x + 1) for x in sl)
    if fixed is not None:
        mask = np.expand_dims(mask, fixed)
    return labels.write(_box_of(sl3), mask, value, overwrite=overwrite, name="fill")


def grow_region(passable: Callable[[tuple[slice, ...]], np.ndarray], seed: np.ndarray, shape: tuple[int, ...],
                structure: np.ndarray, limit: np.ndarray | None = None, start_half: int = 16
                ) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """The connected component of `passable` containing `seed`, cropped to its bounding box.

    `passable(box slices)` gives the bool criterion on a box. The box starts `start_half` voxels
    around the seed and doubles along every face the component reaches, up to `limit` voxels from the
    seed per axis (None = the array). Returns (slices, mask) or None if the seed is not passable.
    """
    n = len(shape)
    size = np.asarray(shape, np.int64)
    lim_lo, lim_hi = np.zeros(n, np.int64), size.copy()
    if limit is not None:
        lim_lo, lim_hi = np.maximum(seed - limit, 0), np.minimum(seed + limit + 1, size)
    lo = np.maximum(seed - start_half, lim_lo)
    hi = np.minimum(seed + start_half + 1, lim_hi)
    while True:
        sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        ok = passable(sub)
        if not ok[tuple(seed - lo)]:
            return None
        lab, _ = ndimage.label(ok, structure)
        comp = lab == lab[tuple(seed - lo)]
        del lab
        grown = False
        for a in range(n):
            width = int(hi[a] - lo[a])
            if lo[a] > lim_lo[a] and comp.take(0, axis=a).any():
                lo[a], grown = max(lim_lo[a], lo[a] - width), True
            if hi[a] < lim_hi[a] and comp.take(-1, axis=a).any():
                hi[a], grown = min(lim_hi[a], hi[a] + width), True
        if not grown:
            break
    tight = ndimage.find_objects(comp.view(np.uint8))[0]
    return (tuple(slice(lo[a] + t.start, lo[a] + t.stop) for a, t in enumerate(tight)),
            comp[tight])


def polygon_fill(labels: LabelMap, hu: np.ndarray | None, plane: str, slice_index: int,
                 vertices: Sequence[Sequence[float]] | np.ndarray, value: int, *, hu_range: HURange = None,
                 overwrite: Collection[int] | None = None) -> Box | None:
    """Fill a closed polygon (lasso) on one slice.

    `vertices` are (row, column) voxel coordinates of the plane: (y, x) axial, (z, x) coronal,
    (z, y) sagittal. A voxel is inside when its centre is (even-odd rule; centres exactly on the
    outline count on the top/left edges only, so adjacent polygons share no voxel).
    """
    value = labels.check_value(value)
    k = plane_axis(plane)
    rng = resolve_hu_range(hu_range)
    _check_hu(labels, hu, rng is not None)
    if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)) or not (
            0 <= slice_index < labels.shape[k]):
        raise ValueError(f"slice index must be an integer 0..{labels.shape[k] - 1}, got {slice_index!r}")
    try:
        v = np.asarray(vertices, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("vertices must be a sequence of (row, column) pairs") from None
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"a polygon needs at least 3 finite (row, column) vertices, got shape {v.shape}")
    axes = [i for i in range(3) if i != k]
    rows, cols = labels.shape[axes[0]], labels.shape[axes[1]]
    r0, r1 = max(int(np.ceil(v[:, 0].min())), 0), min(int(np.floor(v[:, 0].max())) + 1, rows)
    c0, c1 = max(int(np.ceil(v[:, 1].min())), 0), min(int(np.floor(v[:, 1].max())) + 1, cols)
    if r1 <= r0 or c1 <= c0:
        return None
    mask = rasterize_polygon(v, (r0, r1), (c0, c1))
    sl_l = [slice(r0, r1), slice(c0, c1)]
    sl_l.insert(k, slice(int(slice_index), int(slice_index) + 1))
    sl = tuple(sl_l)
    mask = _constrain(np.expand_dims(mask, k), hu, sl, rng)
    return labels.write(_box_of(sl), mask, value, overwrite=overwrite, name="polygon")


def rasterize_polygon(vertices: np.ndarray, row_range: tuple[int, int], col_range: tuple[int, int]) -> np.ndarray:
    """Bool mask of the voxel centres inside the polygon, for rows/columns in the given half-open ranges."""
    r0, r1 = row_range
    c0, c1 = col_range
    a, b = vertices, np.roll(vertices, -1, axis=0)
    rows = np.arange(r0, r1, dtype=np.float64)[:, None]
    # an edge crosses row r if r is in [min, max) of its rows: half-open, so vertices count once
    lo, hi = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    crosses = (rows >= lo) & (rows < hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rows - a[:, 0]) / (b[:, 0] - a[:, 0])
        xs = a[:, 1] + t * (b[:, 1] - a[:, 1])
    xs = np.where(crosses, xs, np.inf)
    xs.sort(axis=1)
    cols = np.arange(c0, c1, dtype=np.float64)
    mask = np.zeros((r1 - r0, c1 - c0), bool)
    for i in range(r1 - r0):
        row = xs[i][np.isfinite(xs[i])]
        if len(row):
            mask[i] = np.searchsorted(row, cols, side="right") % 2 == 1
    return mask

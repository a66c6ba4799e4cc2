"""Lung segmentation without learned weights: thresholds, connected components and morphology.

Input is a CT in Hounsfield units indexed (z, y, x) with z toward the head, y toward posterior and
x toward the patient's left, plus the voxel spacing (z, y, x) in mm. The pipeline:

1. work on a strided grid of about 2 mm (the boundary is refined at full resolution at the end);
2. body = largest tissue component of each axial slice with its holes filled (drops the table and the
   air around and under the patient); lung candidates = air-like voxels (< -400 HU) inside the body;
3. trachea and main bronchi: a round tube of air (< -950 HU) at the top centre, tracked down slice by
   slice (a component that suddenly grows has leaked into the lung and is dropped) to a little below
   the carina, then removed from the candidates;
4. lungs = the large, solid 3-D components of what is left (bowel gas, noise and thin pockets drop out),
   split into left and right (eroded until two cores appear if the lungs touch);
5. per lung, axial hole filling (vessels, nodules) and, for dense lesions at the pleura (consolidation),
   the dents in the lung outline that the convex hull of both lungs bridges lung-to-same-lung, plus
   lesions that cut the lung tip next to the spine (bridged along z), and masses at the hilum or the
   mediastinal pleura that the lung surrounds on most of their outline (cut from the mediastinum at a
   narrow neck).

`inference.lungs.select.segment_lungs_by` chooses between this method ("threshold") and the 2D lung
U-Net ("unet", `inference.lungs.unet`), which keeps the same contract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from inference.core.types import CancelFn, ProgressFn
from inference.lungs.common import (
    S2D_4,
    LungMasks,
    SliceBox,
    Spacing,
    Steps,
    bbox,
    checked_input,
    fill_holes_2d,
    holes_2d,
)

HU_AIR = -400.0  # lung parenchyma and air below this
HU_BODY = -500.0  # body tissue (fat and denser) above this
HU_LUMEN = -950.0  # airway lumen (pure air) below this
HU_PURE_GAS = -970.0  # a component mostly below this is gas (trachea, bowel), not lung parenchyma
HU_LESION_MAX = 100.0  # voxels added at the pleura above this are bone, not lesion
WORK_SPACING = (2.0, 2.0, 2.0)  # target spacing (z, y, x) mm of the working grid
BODY_SPACING = 4.0  # in-plane spacing mm of the body mask
AIRWAY_BELOW_CARINA_MM = 30.0  # the main bronchi drop about this far below the carina
MIN_LUNG_ML = 2.0  # smaller air components are not a lung (one thin slice of lung still passes)
MAX_DENT_MM2 = 4000.0  # largest axial section of a lesion filled into a dent of the lung outline
MIN_DENT_MM2 = 15.0  # smaller gaps under the hull are noise in the outline
MIDLINE_MM = 15.0  # a gap under the hull that comes this close to the body midline is mediastinum
Z_GAP_MM = 70.0  # a lesion that cuts the lung tip next to the spine is bridged along z up to this height
RIM_MM = 20.0  # ... where it lies this close to the back of the hull of both lungs and touches its outline
BIG_HOLE_MM2 = 100.0  # larger axial holes must be capped by lung above and below to be filled
NECK_MM = 10.0  # a mass joined to the mediastinum by a neck narrower than this is cut off from it ...
MIN_ENCLOSED = 0.75  # ... and filled when the lung borders at least this share of its outline
MIN_ON_LUNG_BELOW = 0.25  # ... and this share of it lies on lung in the slice below (not on the liver dome)

_S2D_8 = np.zeros((3, 3, 3), bool)
_S2D_8[1] = True
_S3D_6 = ndimage.generate_binary_structure(3, 1)
_SQUARE = np.ones((3, 3), bool)


# ----------------------------------------------------------------------------------------------
# entry point


def segment_lungs(hu: np.ndarray, spacing: tuple[float, float, float], *, progress: ProgressFn | None = None,
                  cancel: CancelFn | None = None) -> LungMasks:
    """Segment the left and right lung and the central airways of a chest CT.

    Args:
        hu: (z, y, x) Hounsfield units, z superior, y posterior, x patient left.
        spacing: voxel size (z, y, x) in mm.
        progress: called with (fraction, message); the fraction never decreases and ends at 1.0.
        cancel: returns True to stop; `Cancelled` is raised then.

    Returns empty masks (no exception) when no lung is found.
    """
    hu, sp = checked_input(hu, spacing)
    step = Steps(progress, cancel)
    step(0.0, "Segmenting the lungs")
    masks = _segment(hu, sp, step) if hu.size else None  # type: ignore[arg-type]
    step(1.0, "Lungs segmented")
    return masks if masks is not None else LungMasks.empty(hu.shape)


def _segment(hu: np.ndarray, sp: Spacing, step: Steps) -> LungMasks | None:
    fac = tuple(max(1, round(t / s)) for t, s in zip(WORK_SPACING, sp))
    wsp: Spacing = tuple(s * f for s, f in zip(sp, fac))  # type: ignore[assignment]
    strided = hu[::fac[0], ::fac[1], ::fac[2]]
    body = _body_mask(strided, wsp)
    box = bbox(body, margin=(0, 1, 1))
    if box is None:
        return None
    work, body = np.ascontiguousarray(strided[box]), body[box]
    step(0.15, "Finding the airways")
    air = (work < HU_AIR) & body
    airway = _find_airway(work, air, body, wsp)
    zone = _grow(airway, square=True)
    step(0.3, "Selecting the lungs")
    lungs = _select_lungs(air & ~zone, work, wsp)
    if lungs is None:
        return None
    mid = _mean_x(body)
    inner = bbox(lungs, margin=(1, 2, 2))
    if inner is None:
        return None
    mid -= inner[2].start
    work, body, lungs, lzone = work[inner], body[inner], lungs[inner], zone[inner]
    step(0.45, "Separating left and right")
    labels = _split_left_right(lungs, mid, wsp)
    step(0.6, "Filling vessels and lesions")
    labels = _fill_lungs(labels, work, body, lzone, mid, wsp)
    labels[lzone] = 0
    step(0.85, "Refining the boundary")
    origin = tuple(b.start + i.start for b, i in zip(box, inner))
    out = LungMasks.empty(hu.shape)
    _write_lungs(out, hu, fac, origin, labels, work, body, lzone)
    _write_airways(out, hu, fac, tuple(b.start for b in box), zone)
    return out


# ----------------------------------------------------------------------------------------------
# small helpers


def _slice_label_ranges(lab: np.ndarray) -> np.ndarray:
    """For labels of a stack of 2-D labellings: the last label of each slice (slice k owns (hi[k-1], hi[k]])."""
    return np.maximum.accumulate(lab.reshape(lab.shape[0], -1).max(axis=1))


def _largest_per_slice(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of every axial slice."""
    lab, n = ndimage.label(mask, _S2D_8)
    if n == 0:
        return mask.copy()
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    hi = _slice_label_ranges(lab)
    lo = np.concatenate([[0], hi[:-1]])
    keep = np.zeros(n + 1, bool)
    for a, b in zip(lo, hi):
        if b > a:
            keep[a + 1 + int(np.argmax(sizes[a + 1:b + 1]))] = True
    return keep[lab]


def _box_filter(mask: np.ndarray, sizes: tuple[int, int, int], grow: bool) -> np.ndarray:
    """Dilation (grow) or erosion by a box of odd `sizes`; outside the array is background."""
    out = mask.view(np.uint8)
    filt = ndimage.maximum_filter1d if grow else ndimage.minimum_filter1d
    for ax, size in enumerate(sizes):
        if size > 1:
            out = filt(out, size, axis=ax, mode="constant", cval=0)
    return out.astype(bool)


def _grow(mask: np.ndarray, axes: tuple[int, ...] = (1, 2), square: bool = False) -> np.ndarray:
    """Dilation by one voxel along `axes` (a cross, or with `square` a full box); numpy shifts beat scipy here."""
    out = mask.copy()
    for ax in axes:
        src = out.copy() if square else mask
        lo = tuple(slice(1, None) if a == ax else slice(None) for a in range(mask.ndim))
        hi = tuple(slice(None, -1) if a == ax else slice(None) for a in range(mask.ndim))
        out[lo] |= src[hi]
        out[hi] |= src[lo]
    return out


def _shrink(mask: np.ndarray, axes: tuple[int, ...] = (1, 2), square: bool = False) -> np.ndarray:
    """Erosion by one voxel along `axes`; outside the array counts as background."""
    out = ~_grow(~mask, axes, square)
    for ax in axes:
        edge = [slice(None)] * mask.ndim
        for i in (0, -1):
            edge[ax] = i  # type: ignore[call-overload]
            out[tuple(edge)] = False
    return out


def _max_label(labels: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Grey dilation of small labels by the cross along `axes`."""
    out = labels.copy()
    for ax in axes:
        lo = tuple(slice(1, None) if a == ax else slice(None) for a in range(labels.ndim))
        hi = tuple(slice(None, -1) if a == ax else slice(None) for a in range(labels.ndim))
        np.maximum(out[lo], labels[hi], out=out[lo])
        np.maximum(out[hi], labels[lo], out=out[hi])
    return out


# ----------------------------------------------------------------------------------------------
# body and airways


def _body_mask(work: np.ndarray, wsp: Spacing) -> np.ndarray:
    """Filled body outline on the working grid, computed on a ~4 mm in-plane grid (the lungs lie far inside)."""
    s = max(1, round(BODY_SPACING / min(wsp[1:])))
    coarse = fill_holes_2d(_largest_per_slice(work[:, ::s, ::s] > HU_BODY))
    if s == 1:
        return coarse
    coarse = _shrink(coarse, square=True)  # the blocky outline would take in a little of the air outside
    _, up = _upsample(coarse, (1, s, s), (0, 0, 0), work.shape)
    return up


@dataclass
class _Blobs:
    """The 8-connected components of an axial slice and their sizes in mm."""

    lab: np.ndarray
    area: np.ndarray  # mm2, index = label - 1
    cx: np.ndarray  # centroid x, voxels
    cy: np.ndarray
    height: np.ndarray  # bounding box, mm
    width: np.ndarray

    @classmethod
    def of(cls, mask2d: np.ndarray, wsp: Spacing) -> _Blobs:
        lab, n = ndimage.label(mask2d, _SQUARE)
        count = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(float)
        ys, xs = np.indices(mask2d.shape)
        cy = np.bincount(lab.ravel(), ys.ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
        cx = np.bincount(lab.ravel(), xs.ravel(), minlength=n + 1)[1:] / np.maximum(count, 1)
        objs = ndimage.find_objects(lab)
        h = np.array([(o[0].stop - o[0].start) * wsp[1] for o in objs])
        w = np.array([(o[1].stop - o[1].start) * wsp[2] for o in objs])
        return cls(lab, count * wsp[1] * wsp[2], cx, cy, h, w)


def _trachea_seed(lumen: np.ndarray, body: np.ndarray, wsp: Spacing) -> tuple[int, np.ndarray] | None:
    """The topmost slice with a round, central tube of air that continues into the slice below."""
    for k in range(lumen.shape[0] - 1, 0, -1):
        if not lumen[k].any() or not body[k].any():
            continue
        by, bx = np.nonzero(body[k])
        mid, front, back = bx.mean(), by.min(), by.max()
        b = _Blobs.of(lumen[k], wsp)
        depth = (b.cy - front) / max(back - front, 1)  # 0 at the front of the body, 1 at the back
        ok = ((b.area >= 40.0) & (b.area <= 1000.0) & (np.minimum(b.height, b.width) >= 6.0)
              & (np.maximum(b.height, b.width) <= 3.0 * np.minimum(b.height, b.width))
              & (b.area >= 0.45 * b.height * b.width)
              & (np.abs(b.cx - mid) * wsp[2] <= 30.0) & (depth >= 0.1) & (depth <= 0.7))
        if ok.any():
            best = int(np.argmin(np.where(ok, np.abs(b.cx - mid), np.inf))) + 1
            seed = b.lab == best
            if (lumen[k - 1] & seed).any():
                return k, seed
    return None


def _find_airway(work: np.ndarray, air: np.ndarray, body: np.ndarray, wsp: Spacing) -> np.ndarray:
    """Trachea and main bronchi: tracked down from the top, stopped a little below the carina."""
    lumen = (work < HU_LUMEN) & air
    airway = np.zeros_like(lumen)
    seed = _trachea_seed(lumen, body, wsp)
    if seed is None:
        return airway
    k0, prev = seed
    airway[k0] = prev
    prev_area = prev.sum() * wsp[1] * wsp[2]
    stop, k_end = -1, k0
    for k in range(k0 - 1, -1, -1):
        if k <= stop:
            break
        b = _Blobs.of(lumen[k], wsp)
        touched = np.zeros(len(b.area) + 1, bool)
        touched[b.lab[_grow(prev, (0, 1), square=True)]] = True
        # a component much larger than the airway above it has leaked into the lung
        keep = touched[1:] & (b.area <= 3.0 * prev_area + 150.0)
        if not keep.any():
            break
        big = keep & (b.area >= 15.0)
        if stop < 0 and big.sum() >= 2 and np.ptp(b.cx[big]) * wsp[2] >= 10.0:
            stop = k - int(np.ceil(AIRWAY_BELOW_CARINA_MM / wsp[0]))  # carina: two bronchi side by side
        cur = np.concatenate([[False], keep])[b.lab]
        airway[k], prev, prev_area, k_end = cur, cur, b.area[keep].sum(), k
    return _grow_airway_3d(airway, lumen, k_end, k0)


def _grow_airway_3d(airway: np.ndarray, lumen: np.ndarray, k_end: int, k0: int) -> np.ndarray:
    """Add the lumen 3-D connected to the tracked airway between its ends (branches that run upward)."""
    box = bbox(airway, margin=(0, 8, 8))
    if box is None:
        return airway
    box = (slice(k_end, k0 + 1), box[1], box[2])
    lab, n = ndimage.label(lumen[box], _S3D_6)
    hit = np.zeros(n + 1, bool)
    hit[lab[airway[box]]] = True
    hit[0] = False
    grown = hit[lab]
    if grown.sum() > 2 * airway[box].sum() + 50:  # leaked into the lung: keep the tracked tube
        return airway
    out = airway.copy()
    out[box] |= grown
    return out


# ----------------------------------------------------------------------------------------------
# lungs


def _select_lungs(cand: np.ndarray, work: np.ndarray, wsp: Spacing) -> np.ndarray | None:
    """The lung components of `cand`: large, solid, not pure gas, and reaching the upper part of the chest."""
    lab, n = ndimage.label(cand, _S3D_6)
    if n == 0:
        return None
    flat = lab.ravel()
    count = np.bincount(flat, minlength=n + 1).astype(float)
    count[0] = 0
    core = _shrink(cand)  # in-plane, so that a single slice survives
    core_frac = np.bincount(flat, core.ravel(), minlength=n + 1) / np.maximum(count, 1)
    gas_frac = np.bincount(flat, (work < HU_PURE_GAS).ravel(), minlength=n + 1) / np.maximum(count, 1)
    ok = (count * np.prod(wsp) / 1000.0 >= MIN_LUNG_ML) & (core_frac >= 0.3) & (gas_frac < 0.6)
    ok[0] = False
    if not ok.any():
        return None
    first = int(np.argmax(np.where(ok, count, 0)))
    zr = [o[0] if o is not None else slice(0, 0) for o in ndimage.find_objects(lab)]
    z0, z1 = zr[first - 1].start, zr[first - 1].stop
    keep = np.zeros(n + 1, bool)
    for i in np.flatnonzero(ok):
        zs = zr[i - 1]
        # gas below the diaphragm (stomach, bowel) does not reach the upper part of the largest lung
        keep[i] = count[i] >= 0.05 * count[first] and zs.stop > z0 + 0.4 * (z1 - z0) and zs.start < z1
    return keep[lab]


def _mean_x(mask: np.ndarray) -> float:
    """x (voxels) of the centroid of `mask`."""
    cols = mask.sum(axis=(0, 1)).astype(float)
    return float((cols * np.arange(len(cols))).sum() / max(cols.sum(), 1.0))


def _split_left_right(lungs: np.ndarray, mid: float, wsp: Spacing) -> np.ndarray:
    """uint8 labels 1 (left lung, larger x) and 2 (right lung) of the lung voxels."""
    seeds = _two_cores(lungs, mid, wsp)
    if seeds is not None:
        return _grow_labels(seeds, lungs, mid)
    cols = lungs.sum(axis=(0, 1))
    share_left = cols[int(np.ceil(mid)):].sum() / max(cols.sum(), 1)
    if 0.2 < share_left < 0.8:  # both lungs, fused beyond repair: the body midline decides
        side = np.where(np.arange(lungs.shape[2]) >= mid, 1, 2).astype(np.uint8)
        return np.where(lungs, side[None, None, :], 0).astype(np.uint8)
    return np.where(lungs, 1 if share_left >= 0.5 else 2, 0).astype(np.uint8)  # a single lung


def _two_cores(lungs: np.ndarray, mid: float, wsp: Spacing) -> np.ndarray | None:
    """uint8 seeds 1 (left) and 2 (right): the lungs eroded in-plane until two large cores lie either side
    of the midline (a single lung may fall apart into pieces on one side: that is not two lungs)."""
    core = lungs
    for it in range(int(np.ceil(20.0 / min(wsp[1:]))) + 1):
        if it:
            core = _shrink(core)
        lab, n = ndimage.label(core, _S3D_6)
        if n == 0:
            return None
        if n < 2:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        a, b = np.argsort(sizes)[::-1][:2]
        if sizes[b] >= 0.1 * sizes[a]:
            xa, xb = _mean_x(lab == a), _mean_x(lab == b)
            if min(xa, xb) < mid < max(xa, xb):
                left, right = (a, b) if xa > xb else (b, a)
                return np.where(lab == left, 1, np.where(lab == right, 2, 0)).astype(np.uint8)
            if max(xa, xb) < mid or min(xa, xb) > mid:
                return None
    return None


def _grow_labels(seeds: np.ndarray, lungs: np.ndarray, mid: float) -> np.ndarray:
    """Grow the seeds through `lungs` in-plane, a voxel layer at a time; leftovers join a neighbour."""
    labels = seeds.copy()
    while True:
        free = lungs & (labels == 0)
        grown = _max_label(labels, (1, 2))
        new = free & (grown > 0)
        if not new.any():
            break
        labels[new] = grown[new]
    rest = lungs & (labels == 0)
    if rest.any():  # parts not connected in-plane to a core (apex tips, islands): the 3-D neighbour or the side
        lab, _ = ndimage.label(rest, _S3D_6)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            part = lab[sl] == i
            ring = ndimage.binary_dilation(part, _S3D_6, iterations=2) & ~part
            near = labels[sl][ring]
            near = near[near > 0]
            if len(near):
                side = int(np.bincount(near, minlength=3)[1:].argmax()) + 1
            else:
                side = 1 if np.nonzero(part)[2].mean() + sl[2].start >= mid else 2
            labels[sl][part] = side
    return labels


def _fill_lungs(labels: np.ndarray, work: np.ndarray, body: np.ndarray, airway_zone: np.ndarray, mid: float,
                wsp: Spacing) -> np.ndarray:
    """Fill each lung's holes (vessels, nodules) and the dents that dense lesions make at its pleura.

    Dents are found per slice under the hull of both lungs; a lesion that replaces the lung tip next to
    the spine leaves no dent in its slice, so behind the lungs the gaps bridged along z count too.
    """
    left, right = _fill_lung_holes(labels == 1, wsp), _fill_lung_holes(labels == 2, wsp)
    allowed = body & (work < HU_LESION_MAX) & ~airway_zone & ~left & ~right
    hull = _hulls(left | right)
    dents = _pleural_dents(left, right, hull, mid, wsp)
    rim = hull & ~_box_filter(hull, (1,) + tuple(2 * round(RIM_MM / s) + 1 for s in wsp[1:]), grow=False)
    rim &= _posterior(hull)
    outline = hull & ~_shrink(_shrink(hull))
    out = np.zeros(labels.shape, np.uint8)
    central = np.abs(np.arange(labels.shape[2]) - mid) * wsp[2] <= MIDLINE_MM
    for v, own, dent in ((1, left, dents[0]), (2, right, dents[1])):
        # thin strips along the ribs are not lesions, and a lesion lies against the chest wall (the outline)
        bridged = _touching(_grow(_shrink(_z_gaps(own, wsp) & rim & allowed)), outline)
        filled = _fill_lung_holes(own | (dent & allowed) | bridged, wsp)
        masses = _enclosed_masses(filled, allowed & ~filled, central, wsp)
        if masses.any():
            filled = _fill_lung_holes(filled | masses, wsp)
        out[filled & (out == 0)] = v
    return out


def _enclosed_masses(lung: np.ndarray, allowed: np.ndarray, central: np.ndarray, wsp: Spacing) -> np.ndarray:
    """Per axial slice, dense regions under the lung's own hull that the lung borders on at least `MIN_ENCLOSED`
    of their outline once cut from the mediastinum where the neck is narrower than `NECK_MM`: a mass at the
    hilum or the mediastinal pleura, which the hull of both lungs does not bridge (its chord runs lung to lung).

    Holes in the lung are left to the hole filling. The heart's and the liver's indentations are bordered by
    lung on one side only (a shallow crescent: about half the outline); the liver dome rests on liver, not on
    lung (`MIN_ON_LUNG_BELOW`); and a region reaching the body midline (`central` columns) or larger than the
    lung's own section in that slice is never a mass.
    """
    lab, hole = holes_2d(lung)
    # holes still open after hole filling were refused there (the liver dome, open downward): not masses
    gaps = _hulls(lung) & allowed & ~hole[lab]
    if not gaps.any():
        return gaps
    r = max(1, round(NECK_MM / 2 / min(wsp[1:])))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = ((yy * wsp[1]) ** 2 + (xx * wsp[2]) ** 2 <= (r * min(wsp[1:])) ** 2)[None]
    body = ndimage.binary_opening(gaps, structure=disk)
    lab, n = ndimage.label(body, S2D_4)
    if n == 0:
        return body
    grown = ndimage.grey_dilation(lab, footprint=_SQUARE[None])
    ring = (grown > 0) & (lab == 0)
    outline = np.bincount(grown[ring], minlength=n + 1)
    on_lung = np.bincount(grown[ring & lung], minlength=n + 1)
    area = np.bincount(lab.ravel(), minlength=n + 1)
    z_of = np.searchsorted(_slice_label_ranges(lab), np.arange(n + 1))
    lung_area = lung.sum(axis=(1, 2))[np.minimum(z_of, len(lung) - 1)]
    px_mm2 = wsp[1] * wsp[2]
    keep = ((on_lung >= MIN_ENCLOSED * np.maximum(outline, 1)) & (area * px_mm2 >= MIN_DENT_MM2)
            & (area * px_mm2 <= MAX_DENT_MM2) & (area <= lung_area)
            & (np.bincount(lab[:, :, central].ravel(), minlength=n + 1) == 0))
    keep[0] = False
    # a mass rests partly on lung (or on a mass) in the slice below, as it narrows toward its lower end; the
    # liver dome, which can touch the heart through a narrow neck, rests on liver (z grows toward the head)
    ids = np.flatnonzero(keep)
    accepted = lung.copy()
    for i in ids[np.argsort(z_of[ids], kind="stable")]:
        k = int(z_of[i])
        pix = lab[k] == i
        keep[i] = k > 0 and accepted[k - 1][pix].mean() >= MIN_ON_LUNG_BELOW
        if keep[i]:
            accepted[k] |= pix
    # the opening rounded the mass's corners off: take back the gap pixels next to it
    mass = keep[lab]
    return mass | (_grow(mass, square=True) & gaps)


def _touching(mask: np.ndarray, target: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """The 3-D components of `mask` with at least `fraction` of their voxels in `target`."""
    lab, n = ndimage.label(mask, _S3D_6)
    count = np.bincount(lab.ravel(), minlength=n + 1)
    hit = np.bincount(lab[target], minlength=n + 1) >= fraction * count
    hit[0] = False
    return hit[lab]


def _fill_lung_holes(mask: np.ndarray, wsp: Spacing) -> np.ndarray:
    """Fill the axial holes of a lung: vessels and lesions, but not organs that push up into it.

    A large hole is filled only where lung (or a filled hole) caps it from below and from above: the top
    of the liver dome or the inferior vena cava is an island in the lung base that is open downward.
    """
    lab, hole = holes_2d(mask)
    area = np.bincount(lab.ravel(), minlength=len(hole))
    big = hole & (area * wsp[1] * wsp[2] > BIG_HOLE_MM2)
    fill = hole & ~big
    if big.any():
        fill |= _capped(lab, big, fill, mask, upward=True) & _capped(lab, big, fill, mask, upward=False)
    fill[0] = True
    return fill[lab]


def _capped(lab: np.ndarray, big: np.ndarray, fill: np.ndarray, mask: np.ndarray, upward: bool) -> np.ndarray:
    """The `big` holes lying mostly over lung or accepted holes of the previous slice, sweeping one way."""
    ok = np.zeros_like(big)
    ids = np.flatnonzero(big)
    z_of = np.searchsorted(_slice_label_ranges(lab), ids)
    order = np.argsort(z_of, kind="stable")
    if not upward:
        order = order[::-1]
    for i in order:
        k, hole_id = z_of[i], ids[i]
        prev = k - 1 if upward else k + 1
        pix = lab[k] == hole_id
        if not 0 <= prev < lab.shape[0]:
            ok[hole_id] = True  # the scan ends here: nothing to check against
            continue
        cap = mask[prev][pix] | (fill | ok)[lab[prev][pix]]
        ok[hole_id] = cap.mean() >= 0.5
    return ok


def _hulls(mask: np.ndarray) -> np.ndarray:
    """The convex hull of `mask` in each axial slice."""
    hull = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        hull[k] = _convex_hull_2d(mask[k])
    return hull


def _convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """The pixels whose centres lie in the convex hull of the pixel centres of `mask`."""
    rows = np.flatnonzero(mask.any(axis=1))
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    lo = np.full(mask.shape[0], np.inf)
    hi = np.full(mask.shape[0], -np.inf)
    lo[rows], hi[rows] = first, last
    pts = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    try:
        verts = pts[ConvexHull(pts).vertices]
    except QhullError:  # all on a line: the row spans are the hull
        verts = None
    if verts is not None:
        # walk from the top vertex to the bottom one along both sides of the polygon
        verts = np.roll(verts, -int(np.argmin(verts[:, 0])), axis=0)
        j = int(np.argmax(verts[:, 0]))
        side_a, side_b = verts[:j + 1], np.concatenate([verts[j:], verts[:1]])[::-1]
        span = np.arange(int(verts[0, 0]), int(verts[j, 0]) + 1)
        xa = np.interp(span, side_a[:, 0], side_a[:, 1])
        xb = np.interp(span, side_b[:, 0], side_b[:, 1])
        lo[span] = np.minimum(lo[span], np.minimum(xa, xb))
        hi[span] = np.maximum(hi[span], np.maximum(xa, xb))
    cols = np.arange(mask.shape[1])
    return (cols[None, :] >= lo[:, None] - 1e-6) & (cols[None, :] <= hi[:, None] + 1e-6)


def _pleural_dents(left: np.ndarray, right: np.ndarray, hull: np.ndarray, mid: float,
                   wsp: Spacing) -> list[np.ndarray]:
    """Per axial slice, the dents in each lung's outline that the hull of both lungs bridges.

    Every gap between the hull and the lungs that reaches the hull's outline is bridged by a chord. A
    chord from a lung back to the same lung spans a dent in its pleural surface (a lesion against the
    chest wall); a chord from one lung to the other spans the mediastinum, and so does a gap that
    reaches the midline (where a slice shows one lung only). Gaps larger than the lung's own section
    (the liver dome under a lung base crescent) are not dents.
    """
    gaps = hull & ~(left | right)
    lab, n = ndimage.label(gaps, S2D_4)
    if n == 0:
        return [gaps, gaps]
    chord = gaps & ~_shrink(hull)
    reaches = np.bincount(lab[chord], minlength=n + 1) > 0
    area = np.bincount(lab.ravel(), minlength=n + 1)
    z_of = np.searchsorted(_slice_label_ranges(lab), np.arange(n + 1))
    px_mm2 = wsp[1] * wsp[2]
    size_ok = (area * px_mm2 <= MAX_DENT_MM2) & (area * px_mm2 >= MIN_DENT_MM2)
    central = np.abs(np.arange(hull.shape[2]) - mid) * wsp[2] <= MIDLINE_MM
    size_ok &= np.bincount(lab[:, :, central].ravel(), minlength=n + 1) == 0
    near = [np.bincount(lab[chord & _grow(m, square=True)], minlength=n + 1) > 0 for m in (left, right)]
    out = []
    for own, other, m in ((near[0], near[1], left), (near[1], near[0], right)):
        keep = reaches & own & ~other & size_ok & (area <= m.sum(axis=(1, 2))[np.minimum(z_of, len(m) - 1)])
        keep[0] = False
        dent = keep[lab]
        # the pleura bulges a little beyond the chord: take one more pixel outward along it
        out.append(dent | (_grow(dent & chord) & ~hull))
    return out


def _posterior(hull: np.ndarray) -> np.ndarray:
    """Per axial slice, the rows behind the centre of the hull."""
    rows = hull.sum(axis=2).astype(float)
    centre = (rows * np.arange(hull.shape[1])).sum(axis=1) / np.maximum(rows.sum(axis=1), 1.0)
    return np.arange(hull.shape[1])[None, :, None] > centre[:, None, None]


def _z_gaps(lung: np.ndarray, wsp: Spacing) -> np.ndarray:
    """Voxels with lung both above and below them within a lesion's height (a 1-D closing along z)."""
    half = round(Z_GAP_MM / 2 / wsp[0])
    if half < 1 or lung.shape[0] < 3:
        return np.zeros_like(lung)
    sizes = (2 * half + 1, 1, 1)
    padded = np.pad(lung, [(half, half), (0, 0), (0, 0)])  # so that the erosion does not eat the ends
    closed = _box_filter(_box_filter(padded, sizes, grow=True), sizes, grow=False)[half:-half]
    return closed & ~lung


# ----------------------------------------------------------------------------------------------
# back to the CT grid


def _upsample(a: np.ndarray, fac: tuple[int, ...], origin: tuple[int, ...],
              shape: tuple[int, ...]) -> tuple[SliceBox, np.ndarray]:
    """Nearest-neighbour copy of a working-grid box (at `origin`) on the CT grid, and where it goes."""
    fine, cut = [], []
    for n, f, o, m in zip(shape, fac, origin, a.shape):
        lo, hi = o * f, min(n, (o + m) * f)
        fine.append(slice(lo, hi))
        cut.append(slice((f - 1) // 2, (f - 1) // 2 + hi - lo))  # CT index i takes sample (i + (f-1)//2) // f
    padded = np.pad(a, [(0, 1)] * 3, mode="edge")
    z, y, x = padded.shape
    fz, fy, fx = fac
    big = np.broadcast_to(padded[:, None, :, None, :, None], (z, fz, y, fy, x, fx)).reshape(z * fz, y * fy, x * fx)
    return tuple(fine), big[tuple(cut)]  # type: ignore[return-value]


def _write_lungs(out: LungMasks, hu: np.ndarray, fac: tuple[int, ...], origin: tuple[int, ...],
                 labels: np.ndarray, work: np.ndarray, body: np.ndarray, airway_zone: np.ndarray) -> None:
    """Put the working-grid labels on the CT grid; at an air/tissue boundary the CT voxel's HU decides."""
    if all(f == 1 for f in fac):
        region = tuple(slice(o, o + n) for o, n in zip(origin, labels.shape))
        out.left[region] = labels == 1
        out.right[region] = labels == 2
        return
    lung = labels > 0
    edge = lung & ~_shrink(lung, (0, 1, 2))
    ring = _grow(lung, (0, 1, 2)) & ~lung & body & ~airway_zone
    unsure = (edge & (work < HU_AIR)) | ring
    guess = np.where(ring, _max_label(labels, (0, 1, 2)), labels)
    guess[~unsure] = 0
    # bits 0-1: the label for sure; bits 2-3: the label if the CT voxel is air-like
    code = np.where(unsure, 0, labels).astype(np.uint8) | (guess.astype(np.uint8) << 2)
    region, up = _upsample(code, fac, origin, hu.shape)
    key = np.left_shift(up, 1)
    key |= hu[region] < HU_AIR
    lut = np.array([(c >> 1) & 3 or ((c >> 3) & 3 if c & 1 else 0) for c in range(32)], np.uint8)
    final = lut[key]
    np.equal(final, 1, out=out.left[region])
    np.equal(final, 2, out=out.right[region])


def _write_airways(out: LungMasks, hu: np.ndarray, fac: tuple[int, ...], origin: tuple[int, ...],
                   zone: np.ndarray) -> None:
    """The airway lumen on the CT grid: air-like voxels near the working-grid airway, outside the lungs."""
    box = bbox(zone)
    if box is None:
        return
    region, up = _upsample(zone[box], fac, tuple(o + b.start for o, b in zip(origin, box)), hu.shape)
    out.airways[region] = up & (hu[region] < HU_AIR) & ~out.left[region] & ~out.right[region]

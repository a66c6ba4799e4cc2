"""DeCoVNet's weakly supervised lesion localization, on the CT grid.

The paper combines two maps:

* unsupervised: the local variance in a 7 x 7 window of every voxel, thresholded; 3D connected
  components; the largest one is R3dcc;
* supervised: the class activation maps of the classifier at several depths, thresholded into
  connected regions; the region that overlaps R3dcc most is the lesion.

Engineering choices (every one a `LocalizationConfig` field): the variance is taken in-plane over
lung voxels only (lungs shrunk by `lung_erosion_voxels`, so the pleural edge is not "texture"),
on HU clipped to the DeCoVNet window, after a grey opening of `vessel_opening_mm` that removes the
vessels (otherwise their edges, not the lesions, form the largest textured component); a CAM region
is the voxels at or above `cam_threshold` of the map's maximum in the lungs that are denser than
`cam_min_hu` (the reference implementation keeps only non-air voxels too). When no CAM region
touches R3dcc, the region with the most CAM mass is returned with `overlap_voxels` 0.

Metric: the hit rate, the share of cases whose predicted lesion centre lies in a labelled box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.transforms.volume import WINDOW_HU

VoxelRanges = Sequence[Sequence[int]]  # ((z0, z1), (y0, y1), (x0, x1)), half-open voxel ranges
Centre = tuple[float, float, float]


@dataclass(frozen=True)
class LocalizationConfig:
    window_voxels: int = 7  # in-plane variance window (the paper's 7 x 7)
    vessel_opening_mm: float = 10.0  # in-plane grey opening before the variance: drops vessels narrower than this
    std_threshold_hu: float = 120.0  # local standard deviation that makes a voxel "textured"
    lung_erosion_voxels: int = 2
    cam_threshold: float = 0.5  # fraction of the map's maximum inside the lungs
    cam_min_hu: float | None = -700.0  # CAM regions keep only voxels denser than this (None: all)
    window_hu: tuple[float, float] = WINDOW_HU


@dataclass
class Localization:
    """The lesion found in one CT: a mask, its centre and box (CT voxels), and where it came from."""

    lesion_mask: np.ndarray  # bool, CT grid
    centre: Centre | None  # (z, y, x) voxel coordinates of the mask's centroid
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None  # half-open
    depth: str | None  # the CAM depth whose region was chosen
    overlap_voxels: int  # voxels shared with the unsupervised region R3dcc
    unsupervised: np.ndarray  # R3dcc, bool


def local_std(hu: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
              config: LocalizationConfig | None = None) -> np.ndarray:
    """In-plane local standard deviation (HU) over the (shrunk) lungs, vessels removed; 0 outside."""
    cfg = config or LocalizationConfig()
    lungs = np.asarray(lungs) > 0
    out = np.zeros(hu.shape, np.float32)
    found = ndimage.find_objects(lungs.view(np.uint8))
    if not found or found[0] is None:
        return out
    box = found[0]
    x = np.clip(hu[box].astype(np.float32), *cfg.window_hu)
    r = int(round(cfg.vessel_opening_mm / 2 / min(spacing[1], spacing[2])))
    if r > 0:
        yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
        x = ndimage.grey_opening(x, footprint=(yy**2 + xx**2 <= r * r)[None])
    inner = lungs[box]
    e = cfg.lung_erosion_voxels
    if e > 0:
        inner = ndimage.binary_erosion(inner, structure=np.ones((1, 2 * e + 1, 2 * e + 1), bool))
    w = inner.astype(np.float32)
    size = (1, cfg.window_voxels, cfg.window_voxels)
    n = np.maximum(ndimage.uniform_filter(w, size), 1e-6)
    mean = ndimage.uniform_filter(x * w, size) / n
    var = ndimage.uniform_filter(x * x * w, size) / n - mean * mean
    out[box] = np.where(inner, np.sqrt(np.maximum(var, 0.0)), 0.0)
    return out


def unsupervised_region(hu: np.ndarray, lungs: np.ndarray, spacing: Sequence[float],
                        config: LocalizationConfig | None = None) -> np.ndarray:
    """R3dcc: the largest 3D connected component of textured lung voxels (all False if none)."""
    cfg = config or LocalizationConfig()
    labels, n = ndimage.label(local_std(hu, lungs, spacing, cfg) >= cfg.std_threshold_hu)
    if n == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def localize(hu: np.ndarray, lungs: np.ndarray, spacing: Sequence[float], cams: Mapping[str, np.ndarray],
             config: LocalizationConfig | None = None, unsupervised: np.ndarray | None = None) -> Localization:
    """The CAM region (over all depths) that overlaps R3dcc most.

    Args:
        hu: CT (z, y, x) in HU.
        lungs: lung mask or label map on the same grid.
        spacing: (z, y, x) mm.
        cams: depth name -> class activation map on the CT grid (see `inference.transforms.volume.to_ct_grid`).
        unsupervised: a precomputed R3dcc (else computed here).
    """
    cfg = config or LocalizationConfig()
    lungs = np.asarray(lungs) > 0
    r3dcc = unsupervised if unsupervised is not None else unsupervised_region(hu, lungs, spacing, cfg)
    dense = hu > cfg.cam_min_hu if cfg.cam_min_hu is not None else np.ones(hu.shape, bool)
    best: tuple[int, float, str, np.ndarray] | None = None  # (overlap, mass, depth, mask)
    for depth, cam in cams.items():
        cam = np.asarray(cam, dtype=np.float32)
        if cam.shape != hu.shape:
            raise ValueError(f"CAM {depth!r} has shape {cam.shape}, the CT {hu.shape}")
        peak = float(cam[lungs].max()) if lungs.any() else 0.0
        if peak <= 0:
            continue
        labels, n = ndimage.label((cam >= cfg.cam_threshold * peak) & lungs & dense)
        if n == 0:
            continue
        overlap = np.bincount(labels[r3dcc], minlength=n + 1)
        mass = ndimage.sum_labels(cam, labels, index=np.arange(n + 1))
        overlap[0], mass[0] = -1, -1.0
        k = int(np.lexsort((mass, overlap))[-1])  # most overlap, then most CAM mass
        if best is None or (overlap[k], mass[k]) > best[:2]:
            best = (int(overlap[k]), float(mass[k]), depth, labels == k)
    if best is None:
        return Localization(np.zeros(hu.shape, bool), None, None, None, 0, r3dcc)
    best_overlap, _, depth, mask = best
    kk, jj, ii = np.nonzero(mask)
    centre = (float(kk.mean()), float(jj.mean()), float(ii.mean()))
    bbox = tuple((int(a.min()), int(a.max()) + 1) for a in (kk, jj, ii))
    return Localization(mask, centre, bbox, depth, best_overlap, r3dcc)  # type: ignore[arg-type]


def centre_in_box(centre: Sequence[float], box: VoxelRanges) -> bool:
    """Whether a (z, y, x) point lies in a half-open voxel box (voxels cover index +- 0.5)."""
    return all(lo - 0.5 <= c <= hi - 0.5 for c, (lo, hi) in zip(centre, box))


def hit_rate(predicted_centres: Sequence[Sequence[float] | None], gt_boxes: Sequence[Sequence[VoxelRanges]]) -> float:
    """Share of cases whose predicted lesion centre lies in any of its labelled boxes (None counts as a miss).

    NaN when there are no cases.
    """
    if len(predicted_centres) != len(gt_boxes):
        raise ValueError(f"{len(predicted_centres)} centres for {len(gt_boxes)} cases")
    if not predicted_centres:
        return float("nan")
    hits = sum(c is not None and any(centre_in_box(c, b) for b in boxes)
               for c, boxes in zip(predicted_centres, gt_boxes))
    return hits / len(predicted_centres)

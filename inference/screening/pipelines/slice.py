"""Screening a CT volume with a 2D slice model: case probability, CAM heat map, lesion mask, burden.

Input convention: HU array (z, y, x) with z toward the head, y toward posterior, x toward
the patient's left (the viewer's canonical orientation), and its (z, y, x) spacing in mm.
`inference.screening.run.run` is the front door; it sends slice models here.

Pipeline (every threshold is a `ScreeningConfig` field):
1. lungs: `segment_lungs_by(lungs, ...)` ("threshold" by default, or "unet"), unless a lung label map is given;
2. every axial slice with at least `min_lung_area_mm2` of lung (every n-th where slices are thin,
   the classified ones about `slice_gap_mm` apart) is cropped to the lungs' bounding box (plus
   a margin, the same box for all slices), windowed to the model's HU window (its `SlicePreprocess`;
   the light SqueezeNet's lung window -1350..150 HU) and classified; the
   heat map of the positive class comes from the same pass (`heatmap`: Grad-CAM of the log-odds at
   Fire 2 by default, or the paper's CAM);
3. case probability: mean of the top-k slice probabilities, k = max(`min_top`,
   `top_fraction` x slices) ("top-k mean"); "max" and "mean" are the alternatives;
4. heat map: each slice's map (scaled to [0, 1]) times that slice's probability, on the CT grid;
5. lesion mask: lung voxels in -750..+50 HU, vessels removed by an in-plane opening
   (`vessel_opening_mm`), kept where the heat map exceeds `cam_threshold`; labelled
   ground-glass (-750..-300 HU, label 3) or consolidation (-300..+50 HU, label 4);
6. burden per zone (upper, middle, lower third of each lung's height) and a severity score
   (each of the six zones 0-5 by % involved, see `zone_score`; total 0-30).
"""

from __future__ import annotations

import time

import numpy as np

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, ProgressFn
from inference.inferers.slice import SliceClassifier
from inference.screening.config import ScreeningConfig, aggregate
from inference.screening.steps import (
    cancel_checker,
    lesion_ml_by_kind,
    lesion_step,
    lung_step,
    per_slice_count,
    progress_reporter,
    slice_image,
    zone_burden,
)
from inference.transforms.crop import lung_crop_box


def run_slices(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    clf: SliceClassifier,
    *,
    config: ScreeningConfig | None = None,
    lung_labels: np.ndarray | None = None,
    lungs: str = "threshold",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    started: float | None = None,
) -> Prediction:
    """Screen one CT volume with a slice classifier (see the module docstring).

    Args:
        lungs: lung mask method used when `lung_labels` is None: "threshold" or "unet".
        started: `time.perf_counter()` when the caller began (loading the model counts as `model_load`).

    Raises:
        Cancelled: `cancel()` returned True.
        ValueError: the volume is not 3D, or the heat map or lung method cannot be used.
    """
    cfg = config or ScreeningConfig()
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    t0 = time.perf_counter() if started is None else started
    report, check = progress_reporter(progress), cancel_checker(cancel)
    timings: dict[str, float] = {}
    window = clf.preprocess.hu_window
    method = clf.check_heatmap(cfg.heatmap)  # a bad choice fails here, before any work
    timings["model_load"] = time.perf_counter() - t0
    lung_labels = lung_step(volume, spacing, lungs, lung_labels, report, cancel, timings)
    in_lungs = lung_labels > 0
    check()

    dz, dy, dx = spacing
    area = per_slice_count(in_lungs) * dy * dx
    lung_slices = np.nonzero(area >= cfg.min_lung_area_mm2)[0]
    step = max(1, round(cfg.slice_gap_mm / dz))  # classified slices about the gap apart (4 mm: 3-5 mm)
    slices = lung_slices[::step]
    heat = np.zeros(volume.shape, np.float32)
    probs = np.zeros(len(slices), np.float32)
    box = lung_crop_box(in_lungs, cfg.crop_margin)
    t = time.perf_counter()
    for start in range(0, len(slices), cfg.batch_size):
        check()
        idx = slices[start : start + cfg.batch_size]
        images = [slice_image(volume, k, box, window) for k in idx]
        p, cams = clf.predict_with_cam(images, method)
        probs[start : start + len(idx)] = p
        shape = images[0].shape
        for k, pk, cam in zip(idx, p, cams):
            # the heat map speaks about the lungs only
            heat[k][box] = clf.cam_to_image(cam, shape) * pk * in_lungs[k][box]
        report(0.3 + 0.6 * (start + len(idx)) / max(1, len(slices)), f"classified {start + len(idx)}/{len(slices)}")
    if step > 1 and len(slices):
        # slices between two classified ones take the nearest one's map
        nearest = slices[np.abs(lung_slices[:, None] - slices[None, :]).argmin(axis=1)]
        for k, src in zip(lung_slices, nearest):
            if k != src:
                heat[k][box] = heat[src][box] * in_lungs[k][box]
    timings["classification"] = time.perf_counter() - t
    check()
    t = time.perf_counter()
    lesions, lesion_method = lesion_step(volume, spacing, in_lungs, heat, cfg, str(clf.device), report, cancel)
    zones = zone_burden(lung_labels, lesions > 0, spacing)
    timings["lesions"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    p_case = aggregate(probs, cfg)
    report(1.0, "done")
    classes = clf.spec.classes
    return Prediction(
        model=clf.spec.name, classes=classes, probabilities={classes[0]: 1 - p_case, classes[-1]: p_case},
        slice_indices=slices, slice_probabilities=probs, heatmap=heat,
        lung_mask=lung_labels.astype(np.uint8), lesion_mask=lesions, zones=zones, aggregation=cfg.aggregation,
        device=clf.engine, timings=timings, heatmap_method=method,
        lesion_ml_by_kind=lesion_ml_by_kind(lesions, spacing), lesion_method=lesion_method,
    )

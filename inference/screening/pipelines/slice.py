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
   heat map of the positive class (`heatmap`: Grad-CAM of the log-odds at Fire 2 by default, or the paper's
   CAM) is kept for the `heatmap_slices` most probable classified slices at or above `heatmap_min_probability`
   (a bounded cost); it comes from the same pass, or, where there are over `ONE_PASS_FACTOR` x `heatmap_slices`
   classified slices, from a second pass over those slices only;
3. slice probability: where the model's card holds a "slice_fusion" fitted with the lesion segmenter in use,
   the classifier's probability fused with the slice's lesion share (`inference.screening.fusion`; the
   lesions of step 5 come first); case probability: mean of the top-k slice probabilities, k = max(`min_top`,
   `top_fraction` x slices) ("top-k"); "max" and "mean" are the alternatives;
4. heat map: each slice's map (scaled to [0, 1]) times that slice's probability, on the CT grid;
5. lesion mask: from the lesion segmenter `lesion_model` (DCN's segmentation branch, made in a thread of its own
   beside steps 2-4 where torch has more than one thread), ground-glass label 3 and consolidation label 4 inside
   the lungs; without it, the HU rule: lung voxels in -750..+50 HU, vessels removed by an in-plane opening
   (`vessel_opening_mm`), kept where the heat map exceeds `cam_threshold`; labelled
   ground-glass (-750..-300 HU, label 3) or consolidation (-300..+50 HU, label 4);
6. burden per zone (upper, middle, lower third of each lung's height) and a severity score
   (each of the six zones 0-5 by % involved, see `zone_score`; total 0-30).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import torch

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, ProgressFn
from inference.inferers.slice import SliceClassifier
from inference.screening.config import ScreeningConfig, aggregate
from inference.screening.fusion import SliceFusion, lesion_share
from inference.screening.steps import (
    LesionsBeside,
    cancel_checker,
    lesion_ml_by_kind,
    lesion_step,
    lung_step,
    progress_reporter,
    slice_image,
    slice_plan,
    zone_burden,
)

#: maps made in the classifying pass while there are at most this many times `heatmap_slices` classified slices
#: (the most probable `heatmap_slices` of them kept): a forward + backward pass over n slices costs less than a
#: forward pass over n and another forward + backward over the top k while n < about 2k (backward ~ a forward)
ONE_PASS_FACTOR = 2


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
    method = clf.check_heatmap(cfg.heatmap)  # a bad choice fails here, before any work
    timings["model_load"] = time.perf_counter() - t0
    lung_labels = lung_step(volume, spacing, lungs, lung_labels, report, cancel, timings)
    in_lungs = lung_labels > 0
    check()

    # the lesion segmenter needs only the lungs: it runs beside the classifier where torch has more than one thread
    # to share (2 cores: 0.4 s of P001's 4.5 s; a worker process with one thread gains nothing); the HU rule needs
    # the heat map
    overlap = bool(cfg.lesion_model) and torch.get_num_threads() > 1
    with (LesionsBeside(volume, spacing, in_lungs, cfg, str(clf.device), cancel) if overlap
          else contextlib.nullcontext()) as beside:
        window = clf.preprocess.hu_window
        plan = slice_plan(in_lungs, spacing, cfg)
        lung_slices, slices, step, box = plan.lung_slices, plan.classified, plan.step, plan.box
        heat = np.zeros(volume.shape, np.float32)
        probs = np.zeros(len(slices), np.float32)
        t = time.perf_counter()

        floor = min(cfg.heatmap_min_probability, cfg.cam_threshold)  # never a lesion lost to the floor

        def add_maps(idx: np.ndarray, shape: tuple[int, int], p: np.ndarray, cams: np.ndarray) -> None:
            for k, pk, cam in zip(idx, p, cams):  # the heat map speaks about the lungs only
                heat[k][box] = clf.cam_to_image(cam, shape) * pk * in_lungs[k][box]

        def chosen(candidates: np.ndarray) -> np.ndarray:
            """Positions (in `slices`) that get a map: the `heatmap_slices` most probable, at or above the floor."""
            top = np.argsort(-probs[candidates], kind="stable")[: cfg.heatmap_slices or None]
            keep = candidates[top]
            return np.sort(keep[probs[keep] >= floor])

        one_pass = not cfg.heatmap_slices or len(slices) <= ONE_PASS_FACTOR * cfg.heatmap_slices
        cams: dict[int, np.ndarray] = {}  # one pass: maps by position in `slices`, until the most probable are known
        shape = (0, 0)
        for start in range(0, len(slices), cfg.batch_size):  # probabilities (and maps, when that is cheaper)
            check()
            idx = slices[start : start + cfg.batch_size]
            images = [slice_image(volume, k, box, window) for k in idx]
            shape = images[0].shape
            if one_pass:
                p, maps = clf.predict_with_cam(images, method, min_probability=floor)
                cams.update((start + n, m) for n, m in enumerate(maps) if p[n] >= floor)
            else:
                p = clf.predict_arrays(images, batch_size=cfg.batch_size).positive
            probs[start : start + len(idx)] = p
            report(0.3 + 0.6 * (start + len(idx)) / max(1, len(slices)), f"classified {start + len(idx)}/{len(slices)}")
        if one_pass:
            positions = chosen(np.array(sorted(cams), dtype=np.int64))
            add_maps(slices[positions], shape, probs[positions], np.array([cams[n] for n in positions]))
            mapped = slices[positions]
        else:
            # heat maps (Grad-CAM: a backward pass each) for the most probable slices only: a bounded cost
            mapped = slices[chosen(np.arange(len(slices)))]
            for start in range(0, len(mapped), cfg.batch_size):
                check()
                idx = mapped[start : start + cfg.batch_size]
                images = [slice_image(volume, k, box, window) for k in idx]
                p, maps = clf.predict_with_cam(images, method, min_probability=floor)
                add_maps(idx, images[0].shape, p, maps)
                report(0.9, f"heat maps {start + len(idx)}/{len(mapped)}")
        if step > 1 and len(mapped):
            # slices between classified ones take the nearest classified one's map, if it has one
            nearest = slices[np.abs(lung_slices[:, None] - slices[None, :]).argmin(axis=1)]
            has_map = np.isin(nearest, mapped)
            for k, src in zip(lung_slices[has_map], nearest[has_map]):
                if k != src:
                    heat[k][box] = heat[src][box] * in_lungs[k][box]
        timings["classification"] = time.perf_counter() - t
        check()
        t = time.perf_counter()
        lesions, lesion_method = lesion_step(volume, spacing, in_lungs, heat, cfg, str(clf.device), report, cancel,
                                             beside)
        zones = zone_burden(lung_labels, lesions > 0, spacing)
        fusion = slice_fusion(clf, cfg, lesion_method)
        if fusion is not None:
            probs = fusion(probs, lesion_share(lesions > 0, in_lungs, slices))
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
            slice_score=(f"{clf.spec.name} + lesion share ({lesion_method}), fused" if fusion is not None
                         else clf.spec.name),
        )


def slice_fusion(clf: SliceClassifier, cfg: ScreeningConfig, lesion_method: str) -> SliceFusion | None:
    """The fusion of the classifier's probability with the lesion share (`inference.screening.fusion`) from the
    model's card, when `cfg.slice_fusion` asks for it and the lesions came from the segmenter it was fitted with."""
    if not cfg.slice_fusion or clf.spec.weights is None:
        return None
    fusion = SliceFusion.from_card(clf.spec.weights.card_data().get("slice_fusion"))
    return fusion if fusion is not None and fusion.lesion_model == lesion_method else None

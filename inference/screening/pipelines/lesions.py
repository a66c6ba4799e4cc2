"""Screening a CT volume with a lesion segmenter (DCN, paper 4): its lesion mask, its lesion-attention heat
map and the case probability from its slice probability mapping.

Same conventions as `inference.screening.run.run`: HU (z, y, x) in the canonical orientation, spacing in mm,
`progress(fraction, message)` with non-decreasing fractions, `Cancelled` when `cancel()` is True.

Pipeline:
1. lungs: the given label map, else `segment_lung_labels(lungs, ...)` ("threshold" or "unet");
2. `LesionSegmenter.segment` on every axial slice with lung (the lung crop, the model's window and size):
   GGO / consolidation labels inside the lungs, the mean of the LA 2 and LA 3 attention maps, and P(COVID)
   per slice from the classification branch;
3. lesion mask: GGO as label 3, consolidation as 4 (the viewer's labels); heat map: the attention above the
   case's lung median (`attention_above_baseline`), zero outside the lungs;
4. case probability: the model's slice probability mapping of the per-slice probabilities;
5. burden per zone and severity by `screening.steps.zone_burden`, as for the other models.
"""

from __future__ import annotations

import time

import numpy as np

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, ProgressFn
from inference.inferers.lesions import LesionSegmenter
from inference.models._api import ModelSpec
from inference.screening.steps import (
    cancel_checker,
    lesion_ml_by_kind,
    lung_step,
    lungs_to_assess,
    progress_reporter,
    viewer_labels,
    zone_burden,
)

__all__ = ["AGGREGATION", "attention_above_baseline", "run_lesions"]

AGGREGATION = "slice probability mapping"


def attention_above_baseline(attention: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The heat map from lesion-attention maps: attention above the case's median over the lungs, on the map's
    own 0..1 scale ((a - median) / (1 - median), clipped), 0 outside the lungs. The LA maps sit near 0.5 over
    healthy lung, so shown raw they cover every lung voxel; a uniform map becomes 0, focal attention stays."""
    heat = np.zeros(attention.shape, np.float32)
    if not lungs.any():
        return heat
    base = float(np.median(attention[lungs]))
    heat[lungs] = np.clip((attention[lungs] - base) / max(1.0 - base, 1e-6), 0.0, 1.0)
    return heat


def run_lesions(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    model: str | ModelSpec | LesionSegmenter = "dcn",
    *,
    device: str = "auto",
    lungs: str = "threshold",
    lung_labels: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Prediction:
    """Screen one CT volume with a lesion segmenter (see the module docstring); the GUI calls it from a worker.

    Raises:
        Cancelled: `cancel()` returned True.
        InferenceError: no lung was found, so there is nothing to assess.
        ValueError: the volume is not 3D, or the model is not a lesion segmenter.
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    report, check = progress_reporter(progress), cancel_checker(cancel)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    seg = model if isinstance(model, LesionSegmenter) else LesionSegmenter(model, device=device)
    timings["model_load"] = time.perf_counter() - t0
    lung_labels = lung_step(volume, spacing, lungs, lung_labels, report, cancel, timings)
    in_lungs = lungs_to_assess(lung_labels)
    check()

    t = time.perf_counter()
    res = seg.segment(volume, spacing, in_lungs, progress=lambda f, m: report(0.3 + 0.6 * f, m), cancel=cancel)
    timings["segmentation"] = time.perf_counter() - t
    check()

    report(0.92, "case probability and burden")
    t = time.perf_counter()
    lesions = viewer_labels(res.labels)
    heat = attention_above_baseline(res.heat, in_lungs)
    slices = np.flatnonzero(~np.isnan(res.slice_probability))
    probs = res.slice_probability[slices].astype(np.float32)
    p_case = seg.case_probability(probs)
    zones = zone_burden(lung_labels, lesions > 0, spacing)
    by_kind = lesion_ml_by_kind(lesions, spacing)
    timings["burden"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report(1.0, "done")
    classes = seg.spec.classes
    return Prediction(
        model=seg.spec.name, classes=classes, probabilities={classes[0]: 1 - p_case, classes[-1]: p_case},
        slice_indices=slices, slice_probabilities=probs, heatmap=heat.astype(np.float32),
        lung_mask=lung_labels.astype(np.uint8), lesion_mask=lesions, zones=zones, aggregation=AGGREGATION,
        device=seg.engine, timings=timings, input_kind="segmentation", heatmap_method=seg.check_heatmap(None),
        lesion_ml_by_kind=by_kind, lesion_method=seg.spec.name,
    )

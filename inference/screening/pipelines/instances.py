"""Screening a CT volume with COVID-CT-Mask-Net (paper 3): lesion instances and a three-class answer.

Same conventions as `inference.screening.run.run`: HU (z, y, x) in the canonical orientation, spacing in mm,
`progress(fraction, message)` with non-decreasing fractions, `Cancelled` when `cancel()` is True.

Pipeline:
1. lungs: the given label map, else `segment_lung_labels(lungs, ...)`;
2. lesion instances on every axial slice with lung (`InstanceSegmenter.segment_volume`: the lungs' box,
   COVID-SemiSeg's export window), those scoring at least `instance_min_score`, kept inside the lungs, each with
   its own id in a label volume;
3. three-class probabilities of the slices screening classifies (`slice_plan`: lung slices about
   `slice_gap_mm` apart, the same crop and window; from the instance pass's backbone and RPN when the classifier
   kept the segmentation model's detector, as the shipped one does); the case answer averages the most abnormal of them
   (`case_answer`: top-k by lowest P(control)); `probability` is P(COVID-19);
4. lesion mask: the instances' union as label 5 ("other lesion": the model merges GGO and consolidation); heat
   map: each instance's voxels carry its score;
5. burden per zone and severity by `screening.steps.zone_burden`, as for the other models.
"""

from __future__ import annotations

import time

import numpy as np

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, InferenceError, ProgressFn
from inference.inferers.instances import HEATMAP_METHOD, InstanceClassifier
from inference.models.covid_ct_mask_net import case_answer
from inference.models.dcn import EXPORT_WINDOW_HU
from inference.screening.config import ScreeningConfig
from inference.screening.steps import (
    cancel_checker,
    lung_step,
    lungs_to_assess,
    progress_reporter,
    slice_image,
    slice_plan,
    zone_burden,
)
from inference.transforms.common import HUWindow
from inference.transforms.crop import LUNG_CROP_MARGIN, lung_crop_box

__all__ = ["AGGREGATION", "INSTANCE_LESION_LABEL", "run_instances"]

AGGREGATION = "top-k most abnormal slices"  # the three-class probabilities averaged over them (`case_answer`)
INSTANCE_LESION_LABEL = 5  # the viewer's "other lesion": GGO and consolidation merged


def run_instances(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    model: InstanceClassifier,
    *,
    config: ScreeningConfig | None = None,
    lungs: str = "threshold",
    lung_labels: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    started: float | None = None,
) -> Prediction:
    """Screen one CT volume with COVID-CT-Mask-Net (see the module docstring); the GUI calls it from a worker.

    Raises:
        Cancelled: `cancel()` returned True.
        InferenceError: no lung was found, so there is nothing to assess.
        ValueError: the volume is not 3D.
    """
    cfg = config or ScreeningConfig()
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    t0 = time.perf_counter() if started is None else started
    report, check = progress_reporter(progress), cancel_checker(cancel)
    timings: dict[str, float] = {"model_load": time.perf_counter() - t0}
    lung_labels = lung_step(volume, spacing, lungs, lung_labels, report, cancel, timings)
    in_lungs = lungs_to_assess(lung_labels)
    check()

    plan = slice_plan(in_lungs, spacing, cfg)
    if len(plan.classified) == 0:
        raise InferenceError("no slice with enough lung to classify: not assessable")
    # the same crop and window as the instances (one box for the volume): one pass can serve both
    shared = model.shared and plan.box == lung_crop_box(in_lungs, LUNG_CROP_MARGIN)
    t = time.perf_counter()
    found = model.segmenter.segment_volume(
        volume, spacing, in_lungs, min_score=cfg.instance_min_score, cancel=cancel,
        progress=lambda f, m: report(0.3 + (0.6 if shared else 0.4) * f, m),
        share=model.rows_from if shared else None, share_slices=plan.classified if shared else ())
    timings["instances"] = time.perf_counter() - t

    t = time.perf_counter()
    if shared:
        probs = model.probabilities_of_rows([found.shared[int(k)] for k in plan.classified])
    else:
        window = HUWindow(*EXPORT_WINDOW_HU)
        probs = np.zeros((len(plan.classified), len(model.spec.classes)), np.float32)
        for start in range(0, len(plan.classified), cfg.batch_size):
            check()
            idx = plan.classified[start:start + cfg.batch_size]
            probs[start:start + len(idx)] = model.slice_probabilities([slice_image(volume, k, plan.box, window)
                                                                       for k in idx])
            report(0.7 + 0.25 * (start + len(idx)) / len(plan.classified),
                   f"classified {start + len(idx)}/{len(plan.classified)}")
    answer = case_answer(probs, cfg.min_top, cfg.top_fraction)
    timings["classification"] = time.perf_counter() - t

    t = time.perf_counter()
    lesions = np.where(found.labels > 0, INSTANCE_LESION_LABEL, 0).astype(np.uint8)
    score_of = np.zeros(max((r["id"] for r in found.records), default=0) + 1, np.float32)
    for r in found.records:
        score_of[r["id"]] = r["score"]
    heat = score_of[found.labels]
    zones = zone_burden(lung_labels, lesions > 0, spacing)
    timings["burden"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report(1.0, "done")
    covid = model.spec.classes.index(model.spec.positive_class)
    return Prediction(
        model=model.spec.name, classes=model.spec.classes, probabilities=answer, slice_indices=plan.classified,
        slice_probabilities=probs[:, covid], heatmap=heat, lung_mask=lung_labels.astype(np.uint8),
        lesion_mask=lesions, zones=zones, aggregation=AGGREGATION, device=model.engine, timings=timings,
        input_kind="instances", heatmap_method=HEATMAP_METHOD, lesion_method=model.segmenter.spec.name,
        slice_score="P(COVID-19) of the three-class classifier", instances=found.records,
        instance_labels=found.labels,
    )

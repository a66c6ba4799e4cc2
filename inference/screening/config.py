"""Screening settings, and how slice probabilities become the case probability."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference.core.choices import MIN_INSTANCE_SCORE
from inference.transforms.crop import LUNG_CROP_MARGIN


@dataclass(frozen=True)
class ScreeningConfig:
    aggregation: str = "top-k"  # "top-k" (the mean of the k most probable slices) | "max" | "mean"
    top_fraction: float = 0.1
    min_top: int = 3
    min_lung_area_mm2: float = 400.0
    slice_gap_mm: float = 4.0  # thin slices: every n-th, about this far apart (3-5 mm); the rest take the nearest map
    crop_margin: float = LUNG_CROP_MARGIN
    ggo_hu: tuple[float, float] = (-750.0, -300.0)
    consolidation_hu: tuple[float, float] = (-300.0, 50.0)
    vessel_opening_mm: float = 3.0
    cam_threshold: float = 0.35
    heatmap: str | None = None  # "grad-cam" | "cam" | None: the model's best (grad-cam); see SliceClassifier
    lesion_model: str | None = "dcn"  # the lesion segmenter the lesion mask comes from; None: the HU rule gated
    # by the heat map (`steps.lesion_mask`), also used when that model's weights are not installed
    lesion_precision: str = "auto"  # the segmenter's arithmetic: bfloat16 on CPUs that compute it natively
    slice_fusion: bool = True  # fuse slice probabilities with lesion shares where the model's card has a fusion
    # heat maps for this many of the most probable classified slices (made in the classifying pass while there
    # are at most 2x this many, `pipelines.slice.ONE_PASS_FACTOR`); None: all
    heatmap_slices: int | None = 48
    # no heat map for a slice of lower probability: its map (times its probability) could not reach this
    # anywhere, nor `cam_threshold`; a batch of such slices is spared Grad-CAM's backward pass
    heatmap_min_probability: float = 0.05
    batch_size: int = 8  # slices per forward (and Grad-CAM backward) pass
    instance_min_score: float = MIN_INSTANCE_SCORE  # lesion instances scoring below this are left out


def aggregate(probabilities: np.ndarray, config: ScreeningConfig) -> float:
    """Case probability from slice probabilities (see the module docstring)."""
    if len(probabilities) == 0:
        return 0.0
    if config.aggregation == "max":
        return float(probabilities.max())
    if config.aggregation == "mean":
        return float(probabilities.mean())
    if config.aggregation not in ("top-k", "top-k mean"):  # "top-k mean": the name before 2026-12-02
        raise ValueError(f"unknown aggregation {config.aggregation!r}")
    k = max(config.min_top, math.ceil(config.top_fraction * len(probabilities)))
    return float(np.sort(probabilities)[::-1][:k].mean())

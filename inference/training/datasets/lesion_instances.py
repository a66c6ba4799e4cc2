"""Lesion instances for COVID-CT-Mask-Net (paper 3): each connected lesion region of a slice's mask becomes one
instance of the single class "lesion" (ground-glass opacity and consolidation merged), as the authors train.

Regions under `MIN_INSTANCE_PX` pixels are merged into the background (the paper's rule); the targets are what
torchvision's Mask R-CNN takes: boxes (x0, y0, x1, y1, pixel edges), labels (all 1) and one binary mask each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from inference.training.datasets.lesion_slices import LesionSlice

MIN_INSTANCE_PX = 100  # smaller lesion patches become background
LESION_LABEL = 1


@dataclass(frozen=True)
class InstanceSample:
    """A slice as the network takes it (3 identical channels in [0, 1]) and its Mask R-CNN target."""

    stem: str
    image: torch.Tensor  # (3, H, W) float32
    target: dict[str, torch.Tensor]


def instances_of(labels: np.ndarray, min_px: int = MIN_INSTANCE_PX) -> np.ndarray:
    """(K, H, W) bool masks of the 8-connected lesion regions (any label > 0) of at least `min_px` pixels, largest
    first; (0, H, W) when there is none."""
    regions, n = ndimage.label(labels > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros((0, *labels.shape), bool)
    sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
    keep = [k + 1 for k in np.argsort(-sizes, kind="stable") if sizes[k] >= min_px]
    return np.stack([regions == k for k in keep]) if keep else np.zeros((0, *labels.shape), bool)


def target_of(masks: np.ndarray) -> dict[str, torch.Tensor]:
    """The Mask R-CNN target of (K, H, W) instance masks."""
    boxes = []
    for m in masks:
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.full((len(masks),), LESION_LABEL, dtype=torch.int64),
            "masks": torch.from_numpy(masks.astype(np.uint8))}


def instance_sample(s: LesionSlice, min_px: int = MIN_INSTANCE_PX) -> InstanceSample:
    image = torch.from_numpy(np.ascontiguousarray(s.image, dtype=np.float32))[None].expand(3, -1, -1).clone()
    return InstanceSample(s.stem, image, target_of(instances_of(s.labels, min_px)))

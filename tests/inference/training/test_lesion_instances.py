"""Lesion instances for COVID-CT-Mask-Net: connected regions of 100 px or more, GGO and consolidation merged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from inference.models.covid_ct_mask_net import lesion_mask_rcnn
from inference.training.datasets.lesion_instances import instance_sample, instances_of, target_of
from inference.training.datasets.lesion_slices import LesionSlice


def _labels() -> np.ndarray:
    labels = np.zeros((64, 80), np.uint8)
    labels[5:20, 10:30] = 1  # 300 px of GGO ...
    labels[20:25, 10:30] = 2  # ... touching 100 px of consolidation: one instance of 400 px
    labels[40:50, 50:60] = 1  # 100 px: kept
    labels[60:63, 70:73] = 2  # 9 px: background
    labels[30:32, 40:42] = 1  # 4 px: background
    return labels


def test_connected_regions_of_at_least_100_px_become_instances_largest_first():
    masks = instances_of(_labels())
    assert masks.shape == (2, 64, 80)
    assert [int(m.sum()) for m in masks] == [400, 100]
    assert instances_of(np.zeros((8, 8), np.uint8)).shape == (0, 8, 8)
    assert instances_of(_labels(), min_px=401).shape == (0, 64, 80)


def test_targets_are_what_mask_rcnn_trains_on():
    target = target_of(instances_of(_labels()))
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 25.0], [50.0, 40.0, 60.0, 50.0]]
    assert target["labels"].tolist() == [1, 1] and target["masks"].dtype == torch.uint8
    sample = instance_sample(LesionSlice("7", Path("7.jpg"), Path("7.png"), np.full((64, 80), 0.5, np.float32),
                                         _labels()))
    assert sample.image.shape == (3, 64, 80) and torch.equal(sample.image[0], sample.image[2])
    model = lesion_mask_rcnn().train()
    model.transform.min_size, model.transform.max_size = (64,), 80
    losses = model([sample.image], [sample.target])
    assert set(losses) >= {"loss_mask", "loss_classifier", "loss_objectness"}
    assert all(torch.isfinite(v) for v in losses.values())
    empty = target_of(instances_of(np.zeros((64, 80), np.uint8)))
    assert empty["boxes"].shape == (0, 4)
    assert all(torch.isfinite(v) for v in model([sample.image], [empty]).values())  # a slice without lesion

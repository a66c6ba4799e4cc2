"""Lesion transplants (DeCoVNet's training augmentation): parts cut from a lesion mask, pasted into lungs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.training.datasets.lesion_transplant import lesion_parts, transplant


def _volume() -> torch.Tensor:
    """(2, T, H, W): dark lung (0.1) in a box inside brighter tissue (0.6), and the lung mask."""
    x = torch.full((2, 16, 32, 40), 0.6)
    x[1] = 0
    x[1, 2:14, 4:28, 4:36] = 1
    x[0][x[1] > 0] = 0.1
    return x


def test_parts_are_the_components_of_the_mask_with_the_ct_under_them():
    ct = np.random.default_rng(0).random((10, 20, 20)).astype(np.float32)
    mask = np.zeros(ct.shape, bool)
    mask[1:4, 2:6, 2:6] = True  # 48 voxels
    mask[6:8, 10:13, 10:14] = True  # 24 voxels
    mask[9, 0, 0] = True  # a speck: too small
    parts = sorted(lesion_parts(ct, mask), key=lambda p: -p.mask.sum())
    assert [int(p.mask.sum()) for p in parts] == [48, 24]
    assert np.array_equal(parts[0].ct, ct[1:4, 2:6, 2:6]) and parts[0].mask.all()
    with pytest.raises(ValueError, match="differ in shape"):
        lesion_parts(ct, mask[:5])


def test_a_transplant_raises_density_inside_the_lungs_only_and_leaves_the_input_alone():
    x = _volume()
    before = x.clone()
    part_ct = np.full((3, 5, 5), 0.8, np.float32)
    parts = lesion_parts(part_ct, np.ones((3, 5, 5), bool))
    out = transplant(x, parts, 4, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # a copy
    assert torch.equal(out[1], x[1])  # the lung mask is not changed
    changed = out[0] != x[0]
    assert changed.any() and bool((x[1][changed] > 0).all())  # only lung voxels change ...
    assert bool((out[0] >= x[0]).all()) and float(out[0].max()) <= 0.8 + 1e-6  # ... and only get denser
    assert torch.equal(transplant(x, parts, 0, torch.Generator()), x)
    assert torch.equal(transplant(x, [], 3, torch.Generator()), x)
    huge = lesion_parts(np.ones((20, 40, 50), np.float32), np.ones((20, 40, 50), bool))
    assert torch.equal(transplant(x, huge, 2, torch.Generator()), x)  # larger than the volume: skipped

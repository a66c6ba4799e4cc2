"""Fitting DCN's slice probability mapping on composed cases (inference.training.recipes.spm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.models.dcn import SliceProbabilityMapping
from inference.training.recipes.spm import SPMConfig, composed_cases, fit_spm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_composed_cases_mix_the_pools():
    pos, neg = np.full(10, 0.9), np.full(10, 0.1)
    x, y = composed_cases(pos, neg, 40, SPMConfig(), np.random.default_rng(0))
    assert x.shape == (40, 100) and y.tolist() == [0.0, 1.0] * 20
    assert torch.allclose(x[y == 0], torch.tensor(0.1))  # negatives: negative slices only
    assert torch.allclose(x[y == 1][:, 0], torch.tensor(0.9))  # every positive holds positive slices (sorted first)
    assert torch.allclose(x[y == 1][:, -1], torch.tensor(0.1))  # ... and healthy ones
    with pytest.raises(ValueError, match="positive and negative"):
        composed_cases(pos[:0], neg, 2, SPMConfig(), np.random.default_rng(0))


def test_fit_spm_separates_cases_with_positive_slices():
    rng = np.random.default_rng(1)
    pos, neg = rng.uniform(0.55, 1.0, 60), rng.uniform(0.0, 0.45, 200)
    torch.manual_seed(0)
    spm = SliceProbabilityMapping()
    m = fit_spm(spm, pos, neg, SPMConfig(cases=800, val_cases=200, epochs=10))
    assert m["val_roc_auc"] > 0.95 and m["val_accuracy"] > 0.85
    healthy = rng.uniform(0.0, 0.45, 150)
    infected = np.concatenate([rng.uniform(0.0, 0.45, 100), rng.uniform(0.55, 1.0, 50)])
    assert spm.case_probability(healthy) < 0.5 < spm.case_probability(infected)
    with pytest.raises(ValueError, match="at least 2"):
        fit_spm(spm, pos[:1], neg)

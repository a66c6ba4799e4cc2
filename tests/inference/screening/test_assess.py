"""The rules that make a case `not assessable` instead of giving it a number."""

from __future__ import annotations

import numpy as np

from inference.core.prediction import Prediction
from inference.screening.assess import (
    MIN_LUNG_ML,
    lung_problem,
    lung_volume_ml,
    prediction_problem,
    voxel_problem,
)

SPACING = (5.0, 2.0, 2.0)  # 20 uL voxels


def _lungs(ml: float) -> np.ndarray:
    mask = np.zeros((20, 100, 100), np.uint8)
    mask.flat[: int(round(ml * 1000 / 20))] = 1
    return mask


def test_voxel_rules():
    assert voxel_problem(np.zeros((3, 8, 8))) is None
    assert voxel_problem(np.zeros((2, 8, 8))) == "too few slices (2; at least 3)"
    assert voxel_problem(np.zeros((8, 8))) == "too few slices (0; at least 3)"
    nan = np.zeros((4, 8, 8), np.float32)
    nan[2, 3, 3] = np.nan
    assert "non-finite" in voxel_problem(nan)
    assert "non-finite" in voxel_problem(np.full((4, 8, 8), np.inf))


def test_lung_rules():
    assert lung_volume_ml(_lungs(400), SPACING) == 400.0
    assert lung_problem(_lungs(0), SPACING) == "no lungs found"
    assert lung_problem(_lungs(MIN_LUNG_ML - 1), SPACING) == "lung volume 249 mL, below the plausible minimum of 250 mL"
    assert lung_problem(_lungs(MIN_LUNG_ML + 1), SPACING) is None
    assert lung_problem(_lungs(400), SPACING, "HEAD") == "not a chest CT (BodyPartExamined HEAD, lungs 400 mL)"
    assert lung_problem(_lungs(400), SPACING, " abdomen ").startswith("not a chest CT (BodyPartExamined abdomen")
    assert lung_problem(_lungs(1500), SPACING, "ABDOMEN") is None  # chest-sized lungs outweigh the tag
    assert lung_problem(_lungs(400), SPACING, "CHEST") is None and lung_problem(_lungs(400), SPACING, "") is None


def test_prediction_rule_needs_slices_classified_by_slice_models():
    def pred(kind: str, n: int) -> Prediction:
        z = np.zeros((4, 4, 4), np.uint8)
        return Prediction("m", ("NonCOVID", "COVID"), {"NonCOVID": 0.5, "COVID": 0.5}, np.arange(n), np.zeros(n),
                          z.astype(np.float32), z, z, input_kind=kind)

    assert prediction_problem(pred("slice", 2)) == "only 2 slice(s) classified (at least 3)"
    assert prediction_problem(pred("slice", 3)) is None
    assert prediction_problem(pred("volume", 0)) is None

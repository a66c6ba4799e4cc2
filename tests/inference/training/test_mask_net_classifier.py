"""COVID-CT-Mask-Net's three-class classifier: which slices train which class, the case rule, a training run
that writes weights the registered builder loads, and a refusal without all three classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inference.models._api import load_weights
from inference.models.covid_ct_mask_net import (
    CLASSES,
    CovidCTMaskNet,
    case_answer,
    covid_ct_mask_net,
    lesion_segmentation_model,
)
from inference.training.datasets.real_slices import RealSlices
from inference.training.recipes.mask_net_classifier import (
    MODEL_NAME,
    MaskNetClassifierConfig,
    three_class_slices,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _slices(case: str, infected: list[bool], val_every: int = 4) -> RealSlices:
    rng = np.random.default_rng(len(case))
    n = len(infected)
    images = []
    for k in range(n):
        image = rng.uniform(0.05, 0.2, (48, 56)).astype(np.float32)
        if infected[k]:
            image[10:30, 12:36] = 0.7
        images.append(image)
    return RealSlices(images, np.array(infected, np.int64), np.array(infected), np.arange(n) % val_every == 0,
                      np.full(n, case, dtype=object), np.arange(n), np.full(n, np.nan))


def test_infected_slices_of_sick_volumes_and_every_slice_of_healthy_ones_train():
    covid = _slices("P", [True, False, True])
    pneumonia = _slices("C", [False, True])
    control = _slices("N", [False, False])
    slices, classes = three_class_slices(covid, pneumonia, control)
    assert classes.tolist() == [2, 2, 1, 0, 0]
    assert slices.case.tolist() == ["P", "P", "C", "N", "N"] and slices.index.tolist() == [0, 2, 1, 0, 1]


def test_the_case_answer_averages_the_most_abnormal_slices():
    p = np.array([[0.9, 0.05, 0.05]] * 27 + [[0.1, 0.1, 0.8]] * 3)
    answer = case_answer(p)  # k = max(3, 10 % of 30) = 3: the three COVID-looking slices
    assert list(answer) == list(CLASSES)
    assert answer["covid"] == pytest.approx(0.8) and answer["control"] == pytest.approx(0.1)
    assert sum(case_answer(p[:2]).values()) == pytest.approx(1.0)  # fewer slices than k: all of them
    with pytest.raises(ValueError, match="no classified slice"):
        case_answer(np.zeros((0, 3)))


def test_training_writes_weights_the_registered_builder_loads(tmp_path):
    torch.manual_seed(0)
    model = CovidCTMaskNet(detector=lesion_segmentation_model(short_side=48))
    detector_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    card = train_classifier(model, _slices("P", [True] * 6 + [False] * 2), _slices("C", [True] * 5 + [False]),
                            _slices("N", [False] * 6), tmp_path, MaskNetClassifierConfig(epochs=3, device="cpu"),
                            sources=["P: COVID-19"], log=lambda _: None)
    written = json.loads((tmp_path / f"{MODEL_NAME}.card.json").read_text())
    assert written["sha256"] == card["sha256"] and written["classes"] == list(CLASSES)
    assert written["not_for_clinical_diagnosis"] is True and written["training_data"]["dataset"]
    assert written["validation_metrics"] and "held_out_accuracy" in written["validation_metrics"]
    assert written["training_data"]["slices"]["per_class"] == {"control": 6, "pneumonia": 5, "covid": 6}
    assert set(written["case_answers"]) == {"P", "C", "N"}
    for answer in written["case_answers"].values():
        assert sum(answer.values()) == pytest.approx(1.0, abs=1e-3)
    assert len(written["history"]) == 3 and 0.0 <= written["held_out_slabs"]["accuracy"] <= 1.0
    for k, v in model.backbone.state_dict().items():  # the detector stays as trained
        assert torch.equal(v, detector_before[k]), k
    loaded = covid_ct_mask_net(short_side=48)
    loaded.load_state_dict(load_weights(tmp_path / f"{MODEL_NAME}.pt", written["sha256"]))
    x = [torch.rand(3, 48, 56)]
    with torch.no_grad():
        assert loaded.eval()(x).shape == (1, 3)


def test_all_three_classes_are_needed(tmp_path):
    model = CovidCTMaskNet(detector=lesion_segmentation_model(short_side=48))
    with pytest.raises(ValueError, match="all three classes"):
        train_classifier(model, _slices("P", [True] * 4), _slices("C", [False] * 4), _slices("N", [False] * 4),
                         tmp_path, MaskNetClassifierConfig(epochs=1, device="cpu"), log=lambda _: None)

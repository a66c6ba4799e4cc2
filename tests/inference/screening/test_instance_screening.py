"""Screening with COVID-CT-Mask-Net: lesion instances and the three-class answer through `run` and `screen`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from app.cli import EXIT_OK, main
from inference.inferers.instances import InstanceClassifier, InstanceSegmenter
from inference.models.covid_ct_mask_net import (
    CLASSES,
    SEGMENTATION_MODEL,
    CovidCTMaskNet,
    covid_ct_mask_net,
    lesion_segmentation_model,
)
from inference.screening.config import ScreeningConfig
from inference.screening.pipelines.instances import INSTANCE_LESION_LABEL
from inference.screening.run import load_model, run, screening_models
from viewer.io.volumes import read_volume_file, write_volume
from viewer.synthetic.phantom import make_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model() -> InstanceClassifier:
    """Untrained parts at a small input: an untrained box head scores about 0.5, so instances appear."""
    torch.manual_seed(0)
    return InstanceClassifier("covid-ct-mask-net", segmenter=InstanceSegmenter(
        device="cpu", module=lesion_segmentation_model(short_side=64)), classifier=covid_ct_mask_net(short_side=64))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(12, 64, 64), spacing=(10.0, 4.0, 4.0), seed=0, n_ggo=3, n_consolidation=1)


def _lungs(p) -> np.ndarray:
    return (p.masks["lung_left"] * 1 + p.masks["lung_right"] * 2).astype(np.uint8)


def test_only_the_classifier_screens():
    names = {m.name for m in screening_models()}
    assert "covid-ct-mask-net" in names and SEGMENTATION_MODEL not in names
    with pytest.raises(ValueError, match="no case probability: not a screening model"):
        load_model(SEGMENTATION_MODEL, device="cpu")


def test_instances_and_three_class_answer_on_the_ct_grid(phantom):
    hu, lungs = phantom.volume.array, _lungs(phantom)
    pred = run(hu, phantom.volume.spacing, _model(), lung_labels=lungs, config=ScreeningConfig(instance_min_score=0.3))
    assert pred.classes == CLASSES and pred.input_kind == "instances"
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred.positive_probability == pred.probabilities["covid"]
    assert len(pred.slice_indices) == len(pred.slice_probabilities) > 0
    assert pred.instance_labels is not None and pred.instance_labels.shape == hu.shape
    ids = {r["id"] for r in pred.instances}
    assert ids and set(np.unique(pred.instance_labels)) - {0} == ids
    np.testing.assert_array_equal(pred.lesion_mask, np.where(pred.instance_labels > 0, INSTANCE_LESION_LABEL, 0))
    assert not pred.lesion_mask[lungs == 0].any()
    for r in pred.instances:
        assert r["score"] >= 0.3
        np.testing.assert_allclose(pred.heatmap[pred.instance_labels == r["id"]], r["score"], rtol=1e-6)
    assert pred.heatmap[pred.instance_labels == 0].max() == 0
    assert pred.lesion_ml > 0 and pred.severity > 0
    summary = json.loads(json.dumps(pred.summary()))
    assert summary["instances"] == pred.instances and set(summary["probabilities"]) == set(CLASSES)


def test_screen_writes_the_instance_label_volume_and_list(tmp_path, monkeypatch, phantom):
    original = InstanceClassifier.__init__

    def small(self, spec_or_name="covid-ct-mask-net", *, device="auto", segmenter=None, classifier=None):
        torch.manual_seed(0)
        original(self, spec_or_name, segmenter=InstanceSegmenter(device="cpu", module=lesion_segmentation_model(
            short_side=64)), classifier=covid_ct_mask_net(short_side=64))

    monkeypatch.setattr(InstanceClassifier, "__init__", small)
    path = write_volume(phantom.volume, tmp_path / "in" / "case1.nii.gz")
    out = tmp_path / "out"
    assert main(["screen", str(path), "--out", str(out), "--model", "covid-ct-mask-net", "--device", "cpu"]) == EXIT_OK
    summary = json.loads((out / "case1" / "prediction.json").read_text())
    labels = read_volume_file(out / "case1" / "instances.nii.gz").array
    lesions = read_volume_file(out / "case1" / "lesions.nii.gz").array
    assert labels.shape == lesions.shape == phantom.volume.array.shape
    assert set(np.unique(labels)) - {0} == {r["id"] for r in summary["instances"]}
    np.testing.assert_array_equal(lesions > 0, labels > 0)
    assert set(summary["probabilities"]) == set(CLASSES) and summary["probability"] == summary["probabilities"]["covid"]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "covid-ct-mask-net" and results["input_kind"] == "instances"


def test_one_shared_pass_gives_the_answer_of_separate_passes(phantom):
    torch.manual_seed(1)
    detector = lesion_segmentation_model(short_side=64)
    model = InstanceClassifier("covid-ct-mask-net", segmenter=InstanceSegmenter(device="cpu", module=detector),
                               classifier=CovidCTMaskNet(detector=detector))
    assert model.shared  # the classifier kept the segmentation model's detector
    hu, lungs, spacing = phantom.volume.array, _lungs(phantom), phantom.volume.spacing
    one = run(hu, spacing, model, lung_labels=lungs)
    model.shared = False
    two = run(hu, spacing, model, lung_labels=lungs)
    np.testing.assert_allclose(one.slice_probabilities, two.slice_probabilities, atol=1e-5)
    assert one.probabilities == pytest.approx(two.probabilities, abs=1e-5)
    np.testing.assert_array_equal(one.instance_labels, two.instance_labels)
    assert not _model().shared  # two different detectors

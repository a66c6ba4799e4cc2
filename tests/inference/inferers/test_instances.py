"""COVID-CT-Mask-Net's segmentation model run on slice images: lesion instances, their records and union mask,
and `segment-lesions --model covid-ct-mask-net` writing them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import EXIT_OK, main
from inference.core.types import Cancelled
from inference.inferers.instances import InstanceSegmenter
from inference.models import WeightsError, get_model
from inference.models.covid_ct_mask_net import SEGMENTATION_MODEL, lesion_segmentation_model
from inference.transforms.images import load_grey

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _untrained() -> torch.nn.Module:
    torch.manual_seed(0)
    return lesion_segmentation_model(short_side=64)


def _slice(h: int = 70, w: int = 90) -> np.ndarray:
    image = np.full((h, w), 0.1, np.float32)
    image[20:45, 30:60] = 0.8
    return image


def test_instances_come_ranked_on_the_images_grid_with_consistent_records():
    seg = InstanceSegmenter("covid-ct-mask-net", device="cpu", module=_untrained())
    assert seg.spec.name == SEGMENTATION_MODEL  # the classifier's name leads to its segmentation model
    found = seg.find(_slice())
    assert len(found) > 0  # an untrained box head scores about 0.5: above the model's own 0.05 floor
    assert found.masks.shape[1:] == (70, 90) and found.masks.dtype == bool
    assert np.all(np.diff(found.scores) <= 0)
    records = found.records()
    assert [r["rank"] for r in records] == list(range(1, len(found) + 1))
    assert [r["mask_area_px"] for r in records] == [int(m.sum()) for m in found.masks]
    json.dumps(records)
    kept = found.above(float(np.median(found.scores)))
    assert 0 < len(kept) <= len(found) and kept.scores.min() >= np.median(found.scores)
    np.testing.assert_array_equal(kept.labels(), kept.masks.any(axis=0).astype(np.uint8))


def test_bad_images_and_models_are_refused_by_name():
    seg = InstanceSegmenter(device="cpu", module=_untrained())
    with pytest.raises(ValueError, match="2-D grey image"):
        seg.find(np.zeros(5, np.float32))
    bad = _slice()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        seg.find(bad)
    with pytest.raises(ValueError, match="not a lesion-instance model"):
        InstanceSegmenter("dcn", device="cpu", module=_untrained())
    bare = dataclasses.replace(get_model(SEGMENTATION_MODEL), weights=None)
    with pytest.raises(WeightsError, match="no shipped weights"):
        InstanceSegmenter(bare, device="cpu")


def test_segment_lesions_writes_the_union_mask_and_the_instances(tmp_path, monkeypatch, capsys):
    original = InstanceSegmenter.__init__

    def small(self, spec_or_name="covid-ct-mask-net", *, device="auto", module=None):
        original(self, spec_or_name, device="cpu", module=_untrained())

    monkeypatch.setattr(InstanceSegmenter, "__init__", small)
    Image.fromarray((_slice() * 255).astype(np.uint8)).save(tmp_path / "s1.png")
    out = tmp_path / "out"
    rc = main(["segment-lesions", str(tmp_path / "s1.png"), "--model", "covid-ct-mask-net", "--out", str(out),
               "--min-score", "0.3"])
    assert rc == EXIT_OK
    mask = np.asarray(Image.open(out / "s1.png"))
    record = json.loads((out / "s1.json").read_text())
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 1}
    assert record["model"] == SEGMENTATION_MODEL and record["size"] == [90, 70] and record["mask"] == "s1.png"
    scores = [r["score"] for r in record["instances"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
    image = load_grey(tmp_path / "s1.png")
    again = InstanceSegmenter(device="cpu").find(image).above(0.3)  # the same untrained model, reseeded
    np.testing.assert_array_equal(mask, again.labels())
    assert [r["mask_area_px"] for r in record["instances"]] == [int(m.sum()) for m in again.masks]
    with pytest.raises(SystemExit) as usage:
        main(["segment-lesions", str(tmp_path / "s1.png"), "--model", "covid-ct-mask-net", "--out", str(out),
              "--min-score", "2"])
    assert usage.value.code == 2 and "not a score between 0 and 1" in capsys.readouterr().err


def test_volume_instances_lie_in_the_lungs_with_records_on_the_ct_grid():
    seg = InstanceSegmenter(device="cpu", module=_untrained())
    hu = np.full((4, 80, 100), 40.0, np.float32)
    lungs = np.zeros(hu.shape, bool)
    lungs[1:3, 20:60, 30:80] = True
    hu[lungs] = -850.0
    hu[1:3, 30:45, 40:60] = -300.0  # a ground-glass patch
    found = seg.segment_volume(hu, (2.0, 0.7, 0.7), lungs, min_score=0.3)
    assert found.labels.shape == hu.shape and found.labels.dtype == np.uint16
    assert not found.labels[~lungs].any()  # nothing outside the lungs, no slice without lung
    ids = {r["id"] for r in found.records}
    assert set(np.unique(found.labels)) - {0} == ids and len(ids) > 0
    for r in found.records:
        assert r["slice"] in (1, 2) and r["score"] >= 0.3
        assert r["area_mm2"] == pytest.approx(np.count_nonzero(found.labels == r["id"]) * 0.49, abs=0.01)
        x0, y0, x1, y1 = r["box"]
        zs, ys, xs = np.nonzero(found.labels == r["id"])
        assert [x0, y0, x1, y1] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] and set(zs) == {r["slice"]}
    assert [(r["slice"], -r["score"]) for r in found.records] == sorted((r["slice"], -r["score"])
                                                                        for r in found.records)
    best = max(r["score"] for r in found.records)
    np.testing.assert_array_equal(found.mask(best), np.isin(found.labels, [r["id"] for r in found.records
                                                                            if r["score"] >= best]))
    assert not found.mask(1.01).any()
    with pytest.raises(Cancelled):
        seg.segment_volume(hu, (2.0, 0.7, 0.7), lungs, cancel=lambda: True)
    with pytest.raises(ValueError, match="lung mask of its shape"):
        seg.segment_volume(hu, (2.0, 0.7, 0.7), lungs[:2])

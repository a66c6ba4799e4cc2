"""Screening with a lesion segmenter (DCN): inference.screening.pipelines.lesions through `run`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.core.types import Cancelled, InferenceError
from inference.inferers.lesions import HEATMAP_METHOD, LesionSegmenter
from inference.models.dcn import DCN
from inference.screening.pipelines.lesions import AGGREGATION, run_lesions
from inference.screening.run import run, screening_models
from viewer.synthetic.phantom import make_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(shape=(16, 64, 64), spacing=(18.0, 3.5, 3.5), seed=0, n_ggo=4, n_consolidation=2)


@pytest.fixture(scope="module")
def segmenter() -> LesionSegmenter:
    torch.manual_seed(0)
    model = DCN(base=8)
    with torch.no_grad():  # an untrained network marks lesions nowhere; make it call consolidation everywhere
        model.seg.head.bias.copy_(torch.tensor([0.0, 0.0, 50.0]))
    return LesionSegmenter("dcn", device="cpu", module=model)


def _lungs(p) -> np.ndarray:
    return (p.masks["lung_left"] * 1 + p.masks["lung_right"] * 2).astype(np.uint8)


def test_dcn_is_a_screening_model():
    assert "dcn" in {m.name for m in screening_models()}
    assert "lung-unet" not in {m.name for m in screening_models()}


def test_outputs_on_the_ct_grid_inside_the_lungs(phantom, segmenter):
    lungs = _lungs(phantom)
    ticks: list[float] = []
    pred = run(phantom.volume.array, phantom.volume.spacing, segmenter, lung_labels=lungs,
               progress=lambda f, _: ticks.append(f))
    shape = phantom.volume.array.shape
    assert pred.lesion_mask.shape == pred.heatmap.shape == pred.lung_mask.shape == shape
    assert set(np.unique(pred.lesion_mask)) == {0, 4}  # consolidation everywhere in the lungs, nothing outside
    assert np.array_equal(pred.lesion_mask > 0, lungs > 0)
    assert not pred.heatmap[lungs == 0].any() and 0 <= pred.heatmap.min() <= pred.heatmap.max() <= 1
    assert sum(pred.probabilities.values()) == pytest.approx(1.0)
    assert np.array_equal(pred.slice_indices, np.flatnonzero(lungs.any(axis=(1, 2))))
    assert pred.aggregation == AGGREGATION and pred.heatmap_method == HEATMAP_METHOD
    assert pred.input_kind == "segmentation" and pred.involvement_percent() == pytest.approx(100.0)
    voxel_ml = float(np.prod(phantom.volume.spacing)) / 1000
    by_kind = pred.summary()["lesion_ml_by_kind"]
    assert by_kind["GGO"] == 0 and by_kind["consolidation"] == pytest.approx((lungs > 0).sum() * voxel_ml, rel=1e-3)
    assert ticks == sorted(ticks) and ticks[-1] == 1.0


def test_case_probability_is_the_slice_probability_mapping(phantom, segmenter):
    pred = run_lesions(phantom.volume.array, phantom.volume.spacing, segmenter, lung_labels=_lungs(phantom))
    expected = segmenter.model.case_probability(pred.slice_probabilities)
    assert pred.positive_probability == pytest.approx(expected, abs=1e-6)


def test_no_lung_is_not_assessable_and_cancel_stops(phantom, segmenter):
    empty = np.zeros(phantom.volume.array.shape, np.uint8)
    with pytest.raises(InferenceError, match="no lung"):
        run(phantom.volume.array, phantom.volume.spacing, segmenter, lung_labels=empty)
    with pytest.raises(Cancelled):
        run(phantom.volume.array, phantom.volume.spacing, segmenter, lung_labels=_lungs(phantom), cancel=lambda: True)
    with pytest.raises(ValueError, match="lesion-attention"):
        segmenter.check_heatmap("grad-cam")


def test_attention_heat_map_shows_what_stands_above_the_lungs_baseline():
    from inference.screening.pipelines.lesions import attention_above_baseline

    lungs = np.zeros((2, 8, 8), bool)
    lungs[:, 1:7, 1:7] = True
    attention = np.full(lungs.shape, 0.5, np.float32)  # the LA maps' level over healthy lung
    attention[0, 3, 3] = 1.0
    attention[1, 4, 4] = 0.75
    attention[0, 0, 0] = 0.9  # outside the lungs
    heat = attention_above_baseline(attention, lungs)
    assert heat[0, 3, 3] == 1.0 and heat[1, 4, 4] == 0.5 and heat[0, 0, 0] == 0.0
    assert np.count_nonzero(heat) == 2 and heat.dtype == np.float32
    assert not attention_above_baseline(attention, np.zeros_like(lungs)).any()

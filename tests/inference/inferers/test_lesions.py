"""The lesion segmenter inferer (inference.inferers.lesions): geometry, a real DCN end to end, progress, weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from inference.core.types import Cancelled
from inference.inferers.lesions import LesionResult, LesionSegmenter
from inference.models._api import WeightsError, get_model
from inference.models.dcn import DCN, DCNOutput

SPACING = (5.0, 0.7, 0.7)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class GreyStub(nn.Module):
    """Marks its input: class 2 where the grey value is > 0.5, class 1 in (0.3, 0.5]; attention = the input."""

    def forward(self, x: torch.Tensor) -> DCNOutput:
        seg = torch.cat([torch.zeros_like(x), 3.0 * ((x > 0.3) & (x <= 0.5)), 3.0 * (x > 0.5)], dim=1)
        attention = (x, x[..., ::2, ::2], x[..., ::4, ::4], x[..., ::8, ::8])
        logits = torch.stack([torch.zeros(len(x)), x.mean(dim=(1, 2, 3)) * 10], dim=1)
        return DCNOutput(logits, seg, attention)


def _hu(grey: float) -> int:
    """The HU value the model's window turns into `grey`."""
    lo, hi = get_model("dcn").transforms.window_hu
    return int(round(lo + grey * (hi - lo)))


def _phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(HU, lungs, consolidation blob, GGO blob): a 12 x 150 x 210 body with two lungs in slices 2-9 and a
    bright heart between them (outside the lungs, inside the crop)."""
    nz, ny, nx = 12, 150, 210
    z, y, x = np.mgrid[:nz, :ny, :nx]
    hu = np.full((nz, ny, nx), _hu(0.0), np.int16)  # air around the body
    hu[((y - 75) / 70) ** 2 + ((x - 105) / 100) ** 2 <= 1] = _hu(0.15)  # no lesion for the stub
    hu[(y - 75) ** 2 + (x - 105) ** 2 <= 6**2] = _hu(0.9)  # the heart, 8+ px from the lungs
    in_z = (z >= 2) & (z <= 9)
    lungs = in_z & ((((y - 75) / 45) ** 2 + ((x - 60) / 35) ** 2 <= 1)
                    | (((y - 75) / 45) ** 2 + ((x - 150) / 35) ** 2 <= 1))
    hu[lungs] = _hu(0.05)
    blob = lungs & (z >= 4) & (z <= 7) & ((y - 70) ** 2 + (x - 60) ** 2 <= 20**2)
    hu[blob] = _hu(0.95)  # -> consolidation
    ggo = lungs & (z >= 3) & (z <= 6) & ((y - 80) ** 2 + (x - 150) ** 2 <= 14**2)
    hu[ggo] = _hu(0.4)  # -> GGO
    return hu, lungs, blob, ggo


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_labels_and_heat_land_on_the_ct_grid_exactly():
    hu, lungs, blob, ggo = _phantom()
    result = LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub(), batch_size=3).segment(
        hu, SPACING, lungs)
    assert isinstance(result, LesionResult)
    assert result.labels.shape == hu.shape and result.labels.dtype == np.uint8
    assert _dice(result.labels == 2, blob) > 0.95
    # the blob's edge passes through the GGO grey values: leave a 3-voxel rim around it out
    rim = ndimage.binary_dilation(blob, np.ones((1, 7, 7), bool))
    assert _dice((result.labels == 1) & ~rim, ggo) > 0.95
    assert not result.labels[~lungs].any()  # the heart, "consolidation" to the stub, lies outside the lungs
    assert (GreyStub()(torch.tensor([[[[0.9]]]])).seg_logits.argmax(dim=1) == 2).all()
    heat = result.heat
    assert heat.dtype == np.float32 and heat.shape == hu.shape and 0.0 <= heat.min() and heat.max() <= 1.0
    assert blob.ravel()[int(np.argmax(heat))]
    p = result.slice_probability
    assert p.dtype == np.float32 and p.shape == (hu.shape[0],)
    lung_slices = lungs.any(axis=(1, 2))
    assert np.isnan(p[~lung_slices]).all() and np.isfinite(p[lung_slices]).all()
    assert not result.labels[~lung_slices].any() and not heat[~lung_slices].any()


def test_an_untrained_dcn_runs_end_to_end():
    torch.manual_seed(0)
    hu, lungs, _, _ = _phantom()
    hu, lungs = hu[:5, ::2, ::2], lungs[:5, ::2, ::2]  # slices 2-4 hold lung
    spec = get_model("dcn")
    net = DCN(base=8)
    result = LesionSegmenter(spec, device="cpu", module=net).segment(hu, (5.0, 1.4, 1.4), lungs)
    assert result.labels.shape == hu.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1, 2} and not result.labels[~lungs].any()
    assert result.heat.dtype == np.float32 and result.heat.shape == hu.shape
    assert 0.0 <= result.heat.min() and result.heat.max() <= 1.0 and result.heat[2:].max() > 0
    p = result.slice_probability
    assert p.dtype == np.float32 and np.isnan(p[:2]).all() and ((p[2:] >= 0) & (p[2:] <= 1)).all()


def test_cancel_and_progress():
    hu, lungs, _, _ = _phantom()
    seg = LesionSegmenter("dcn", device="cpu", module=GreyStub(), batch_size=2)
    with pytest.raises(Cancelled):
        seg.segment(hu, SPACING, lungs, cancel=lambda: True)
    seen: list[float] = []
    seg.segment(hu, SPACING, lungs, progress=lambda f, _m: seen.append(f))
    assert len(seen) > 2 and seen == sorted(seen) and seen[-1] == 1.0
    empty = seg.segment(hu, SPACING, np.zeros_like(lungs))  # no lung: nothing to run, nothing found
    assert not empty.labels.any() and np.isnan(empty.slice_probability).all()


def test_flip_averaging_maps_every_flip_back():
    """A pointwise network gives the same answer on every flip: averaging them must change nothing."""
    hu, lungs, _, _ = _phantom()
    plain = LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub()).segment(hu, SPACING, lungs)
    tta = LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub(), tta=True).segment(hu, SPACING, lungs)
    assert np.array_equal(plain.labels, tta.labels)
    # the stub's coarse attention maps sample every 2nd-8th pixel, which a flip shifts: near-equal only
    assert np.abs(plain.heat - tta.heat).mean() < 0.01
    assert np.allclose(plain.slice_probability, tta.slice_probability, atol=1e-6, equal_nan=True)


def test_no_shipped_weights_is_a_clear_error():
    unshipped = dataclasses.replace(get_model("dcn"), weights=None)
    with pytest.raises(WeightsError, match="'dcn' has no shipped weights yet"):
        LesionSegmenter(unshipped, device="cpu")


def test_wrong_inputs_are_refused():
    hu, lungs, _, _ = _phantom()
    seg = LesionSegmenter("dcn", device="cpu", module=GreyStub())
    with pytest.raises(ValueError):
        seg.segment(hu, SPACING, lungs[:-1])
    with pytest.raises(ValueError):
        LesionSegmenter("light-squeezenet", device="cpu", module=GreyStub())


def test_precision_chooses_the_segmenters_arithmetic(monkeypatch):
    """"auto" is bfloat16 only on CPUs that compute it natively; the labels stay those of float32 on a stand-in
    network whose classes are far apart."""
    from inference.core import device as device_mod

    hu, lungs, _, _ = _phantom()
    fp32 = LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub())
    mixed = LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub(), precision="mixed")
    assert fp32.engine == "cpu (torch)" and mixed.engine == "cpu (torch, bfloat16)"
    assert np.array_equal(fp32.segment_labels(hu, SPACING, lungs), mixed.segment_labels(hu, SPACING, lungs))
    for native in (True, False):
        monkeypatch.setattr(device_mod, "native_cpu_bf16", lambda native=native: native)
        assert device_mod.segmenter_dtype(torch.device("cpu"), "auto") == (torch.bfloat16 if native else None)
    assert device_mod.segmenter_dtype(torch.device("cpu"), "fp32") is None
    with pytest.raises(ValueError, match="precision must be one of"):
        LesionSegmenter(get_model("dcn"), device="cpu", module=GreyStub(), precision="half")

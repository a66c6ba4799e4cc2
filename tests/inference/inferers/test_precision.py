"""Mixed precision: used only where a probe shows it moves no probability by more than 1e-3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import inference.inferers.slice as sc
from inference.core.device import PRECISIONS, mixed_dtype
from inference.inferers.slice import SliceClassifier
from inference.models._api import get_model
from inference.models.light_squeezenet import light_squeezenet


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random((180, 240), dtype=np.float32) for _ in range(n)]


def _classifier(precision: str) -> SliceClassifier:
    torch.manual_seed(0)
    return SliceClassifier(get_model("light-squeezenet"), device="cpu", tta=False, module=light_squeezenet(),
                           backend="torch", precision=precision)


def test_auto_and_fp32_run_float32_on_the_cpu():
    assert mixed_dtype(torch.device("cpu"), "auto") is None and mixed_dtype(torch.device("cpu"), "fp32") is None
    assert mixed_dtype(torch.device("cuda"), "auto") == torch.float16  # tried there, then probed
    for precision in ("auto", "fp32"):
        clf = _classifier(precision)
        assert clf.autocast is None and clf.engine == "cpu (torch)"
    with pytest.raises(ValueError, match="precision must be one of"):
        _classifier("fp8")


def test_mixed_precision_is_kept_only_when_the_probe_agrees(monkeypatch):
    reference = _classifier("fp32")
    images = _images(3)
    p_ref, cam_ref = reference.predict_with_cam(images)

    monkeypatch.setattr(sc, "MIXED_TOLERANCE", 10.0)  # anything passes: bfloat16 runs
    mixed = _classifier("mixed")
    assert mixed.autocast == torch.bfloat16 and mixed.engine == "cpu (torch, mixed precision bfloat16)"
    p_mixed, cam_mixed = mixed.predict_with_cam(images)  # Grad-CAM under autocast too
    assert p_mixed.dtype == np.float32 and cam_mixed.dtype == np.float32
    assert np.abs(p_mixed - p_ref).max() < 0.05 and not np.array_equal(p_mixed, p_ref)
    assert np.corrcoef(cam_mixed.ravel(), cam_ref.ravel())[0, 1] > 0.9

    monkeypatch.setattr(sc, "MIXED_TOLERANCE", 0.0)  # nothing passes: float32, and the reason is kept
    strict = _classifier("mixed")
    assert strict.autocast is None
    assert strict.engine.startswith("cpu (torch, float32: bfloat16 could move a probe probability by ")
    assert np.array_equal(strict.predict_with_cam(images)[0], p_ref)


def test_cli_offers_the_same_precisions():
    from app.cli import PRECISIONS as CLI_PRECISIONS
    from app.cli import build_parser

    assert CLI_PRECISIONS == PRECISIONS
    assert build_parser().parse_args(["screen", "x", "--out", "o", "--precision", "fp32"]).precision == "fp32"
    assert build_parser().parse_args(["predict", "x", "--out", "o.csv"]).precision == "auto"

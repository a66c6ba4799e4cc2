"""ONNX Runtime backend: same probabilities and CAMs as the torch reference, clear errors otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.inferers.onnx import choose_backend
from inference.inferers.slice import SliceClassifier
from inference.models._api import get_model
from inference.models.light_squeezenet import light_squeezenet, squeezenet_simple_bypass

pytest.importorskip("onnxruntime")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:300, :260]
    base = ((yy - 150) ** 2 / 120**2 + (xx - 130) ** 2 / 100**2 < 1).astype(np.float32) * 0.6
    return [np.clip(base + 0.2 * rng.random(base.shape, dtype=np.float32), 0, 1) for _ in range(n)]


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(3)
    net = light_squeezenet()
    spec = get_model("light-squeezenet")
    ref = SliceClassifier(spec, device="cpu", backend="torch", module=net)
    fast = SliceClassifier(spec, device="cpu", backend="onnx", module=net)
    return ref, fast


def test_onnx_matches_torch_probabilities_and_cams(pair):
    ref, fast = pair
    assert ref.engine == "cpu (torch)" and fast.engine == "cpu (onnxruntime)"
    images = _images(5)
    p_ref, p_fast = ref.predict_arrays(images, batch_size=3), fast.predict_arrays(images, batch_size=3)
    assert np.abs(p_ref.probabilities - p_fast.probabilities).max() < 1e-4
    q_ref, cam_ref = ref.predict_with_cam(images, "cam")
    q_fast, cam_fast = fast.predict_with_cam(images)  # ONNX Runtime's default heat map: the paper's CAM
    assert np.abs(q_ref - q_fast).max() < 1e-4
    assert cam_fast.shape == cam_ref.shape == (5, 224, 224)
    assert np.abs(cam_ref - cam_fast).max() < 1e-3


def test_grad_cam_is_refused_on_onnx_runtime(pair):
    ref, fast = pair
    assert ref.heatmap_methods() == ("grad-cam", "cam") and fast.heatmap_methods() == ("cam",)
    assert ref.check_heatmap() == "grad-cam" and fast.check_heatmap() == "cam"
    with pytest.raises(ValueError, match="ONNX backend computes no gradients"):
        fast.predict_with_cam(_images(1), "grad-cam")


def test_onnx_session_handles_any_batch_size(pair):
    _, fast = pair
    one = fast.predict_arrays(_images(1)).probabilities
    many = fast.predict_arrays(_images(1) * 7, batch_size=7).probabilities
    assert many.shape == (7, 2) and np.allclose(many, one, atol=1e-6)


def test_models_without_cam_run_on_onnx_too():
    spec = get_model("squeezenet-simple-bypass")
    net = squeezenet_simple_bypass()
    ref = SliceClassifier(spec, device="cpu", backend="torch", module=net)
    fast = SliceClassifier(spec, device="cpu", backend="onnx", module=net)
    images = _images(2, seed=1)
    assert np.abs(ref.predict_arrays(images).probabilities - fast.predict_arrays(images).probabilities).max() < 1e-4


def test_backend_choice_and_errors():
    cpu = torch.device("cpu")
    assert choose_backend("auto", cpu) == "torch"  # measured no faster here; see bench_inference
    assert choose_backend("auto", torch.device("cuda")) == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        choose_backend("tensorrt", cpu)
    with pytest.raises(ValueError, match="CPU only"):
        choose_backend("onnx", torch.device("cuda"))

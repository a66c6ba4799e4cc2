"""ONNX Runtime backend for 2D slice models on the CPU.

The torch module stays the reference and the training engine: it is exported to ONNX in
memory when a classifier is created (no file to keep in sync with the hash-checked weights)
and run by ONNX Runtime. Outputs agree with torch within 1e-4 in probability
(tests/test_onnx_backend.py). For the light SqueezeNet on a 2-core CPU it measured no faster
than channels-last torch (tests/benchmarks/bench_inference.py: 0.67x at batch 1, 1.08x for a
whole case), so `auto` stays on torch; `onnx` is there for CPUs and models where it wins.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from torch import nn

from inference.core.choices import BACKENDS
from inference.explain.cam import class_activation_map
from inference.models._api import CamLayers


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _LogitsAndCam(nn.Module):
    """What the graph computes: logits, and the positive-class CAM when `cam_layers` names one."""

    def __init__(self, model: nn.Module, class_index: int, cam_layers: CamLayers | None) -> None:
        super().__init__()
        self.model, self.class_index = model, class_index
        self.cam_layers = cam_layers if cam_layers is not None and cam_layers.cam else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        if self.cam_layers is not None:
            return class_activation_map(self.model, x, self.class_index, self.cam_layers.cam or "",
                                        self.cam_layers.classifier)
        return self.model(x)


class OnnxSliceRunner:
    """A slice model exported to ONNX and run by ONNX Runtime on (N, 1, size, size) float32 batches.

    `cam_layers` (the registry entry's): with a CAM layer, the graph computes the positive-class CAM too.
    """

    def __init__(self, model: nn.Module, size: int, class_index: int, threads: int | None = None,
                 cam_layers: CamLayers | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("the ONNX backend needs the onnxruntime package (pip install onnxruntime)") from None
        wrapper = _LogitsAndCam(model, class_index, cam_layers).eval()  # eval: dropout, batch norm in inference mode
        self.has_cam = wrapper.cam_layers is not None
        self.heatmaps: tuple[str, ...] = ("cam",) if self.has_cam else ()  # no gradients: no Grad-CAM
        outputs = ["logits", "cam"] if self.has_cam else ["logits"]
        buf = io.BytesIO()
        was_training = model.training
        try:
            with warnings.catch_warnings():
                # the legacy exporter warns about its own deprecation and about shape checks traced as
                # constants; inputs always have the model's fixed size, so those constants hold
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper, torch.zeros(1, 1, size, size, dtype=next(model.parameters()).dtype), buf,
                    input_names=["x"], output_names=outputs,
                    dynamic_axes={name: {0: "n"} for name in ["x", *outputs]},
                    opset_version=17, dynamo=False,
                )
        finally:
            model.train(was_training)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # no busy-waiting between calls: the GUI and the loader share these cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        self.size = size

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits (N, classes) and, for models with CAM, the positive-class CAM (N, size, size)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = self.session.run(None, {"x": x})
        return out[0], (out[1] if self.has_cam else None)


def choose_backend(name: str, device: torch.device) -> str:
    """`auto` is torch (the reference; ONNX Runtime measured no faster here, see the module docstring)."""
    name = (name or "auto").lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "torch"
    if name == "onnx" and device.type != "cpu":
        raise ValueError(f"the ONNX backend runs on the CPU only; use --backend torch for {device.type}")
    return name

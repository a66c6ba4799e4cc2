"""Running a registered 2D slice model on images or CT slices: probabilities and CAMs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.core.choices import HEATMAP_METHODS
from inference.core.device import MIXED_TOLERANCE, mixed_dtype, select_device
from inference.explain.cam import class_activation_map, grad_cam
from inference.inferers.onnx import OnnxSliceRunner, choose_backend
from inference.models._api import ModelSpec, get_model
from inference.transforms.images import load_grey
from inference.transforms.slice import SlicePreprocess

# HEATMAP_METHODS, best first: "grad-cam", Grad-CAM of the class log-odds at the registry entry's
# `cam_layers.grad_cam` layer (a fine one: the light SqueezeNet's Fire 2); "cam", the paper's class
# activation map over the pooled features (`cam_layers.cam`).


@dataclass(frozen=True)
class SlicePrediction:
    probabilities: np.ndarray  # (N, classes)
    classes: tuple[str, ...]
    seconds: float

    @property
    def positive(self) -> np.ndarray:
        return self.probabilities[:, -1]

    def predicted(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]


class SliceClassifier:
    """A slice model ready to run: weights loaded (hash-checked), pre-processing and heat-map layers from its
    registry entry (`spec.transforms`, a `SlicePreprocess`, exactly; `spec.cam_layers`).

    `backend`: `torch` (the reference), `onnx` (ONNX Runtime, CPU only) or `auto` (torch: ONNX Runtime
    measured no faster for these models on a 2-core CPU). Both give the same probabilities within 1e-4.
    """

    def __init__(self, model: str | ModelSpec = "light-squeezenet", device: str = "auto", tta: bool = True,
                 module: torch.nn.Module | None = None, backend: str = "auto", precision: str = "auto") -> None:
        self.spec = get_model(model) if isinstance(model, str) else model
        if self.spec.input_kind != "slice":
            raise ValueError(f"model {self.spec.name!r} takes {self.spec.input_kind}s, not slices")
        self.device = select_device(device)
        model = module if module is not None else self.spec.build(pretrained=True)
        # channels-last convolutions are about 1.45x faster on this CPU path (measured in bench_inference)
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        if not isinstance(self.spec.transforms, SlicePreprocess):
            raise ValueError(f"model {self.spec.name!r} has no slice pre-processing (transforms) in its entry")
        self.preprocess: SlicePreprocess = self.spec.transforms
        self.pre_size, self.size = self.preprocess.resize, self.preprocess.crop
        self.tta = tta
        self.positive_index = self.spec.classes.index(self.spec.positive_class)
        self.backend = choose_backend(backend, self.device)
        self._onnx: OnnxSliceRunner | None = None
        if self.backend == "onnx":
            try:
                self._onnx = OnnxSliceRunner(self.model, self.size, self.positive_index,
                                             cam_layers=self.spec.cam_layers)
            except Exception as exc:  # exporters and runtimes raise many types; `auto` falls back to torch
                if (backend or "auto").lower() != "auto":
                    raise ValueError(f"model {self.spec.name!r} could not run on ONNX Runtime: {exc}") from exc
                self.backend = "torch"

        self.autocast: torch.dtype | None = None
        self.precision_note = ""  # shown in `engine` whenever set: why float32, or which mixed precision
        dtype = mixed_dtype(self.device, precision)
        if dtype is not None and self._onnx is None:
            self._try_mixed(dtype)
        elif precision == "mixed":
            self.precision_note = ("float32: ONNX Runtime runs float32" if self._onnx is not None
                                   else f"float32: no mixed precision on {self.device.type} here")

    def _try_mixed(self, dtype: torch.dtype) -> None:
        """Use autocast to `dtype` only if it moves no probability of a probe batch by more than
        `MIXED_TOLERANCE`; otherwise stay in float32 and say why in `precision_note`."""
        x = self.prepare(_probe_images())
        with torch.no_grad():
            reference = _log_odds(self.model(x).float())
            with torch.autocast(self.device.type, dtype=dtype):
                mixed = _log_odds(self.model(x).float())
        # a probability moves at most a quarter of its log-odds change (dp = p (1 - p) dz): the probe's
        # probabilities may sit near 0 or 1, where the probability change alone would look harmless
        change = float((reference - mixed).abs().max()) / 4
        if change <= MIXED_TOLERANCE:
            self.autocast = dtype
            self.precision_note = f"mixed precision {str(dtype).removeprefix('torch.')}"
        else:
            self.precision_note = (f"float32: {str(dtype).removeprefix('torch.')} could move a probe probability "
                                   f"by {change:.1e}, over {MIXED_TOLERANCE:g}")

    def _autocast(self):
        """The autocast context of this classifier (none in float32: older torch rejects some device types
        even with autocast disabled)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @property
    def engine(self) -> str:
        """Where and how it runs, e.g. `cpu (onnxruntime)`, `cuda (torch)` or `cuda (torch, mixed precision
        float16)`; a refused `precision="mixed"` says why."""
        how = "onnxruntime" if self._onnx is not None else "torch"
        if self.precision_note:
            how += f", {self.precision_note}"
        return f"{self.device} ({how})"

    def _logits(self, x: torch.Tensor, with_cam: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, if asked, the positive-class CAM of a prepared batch, from the chosen backend."""
        if self._onnx is not None:
            logits, cam = self._onnx.run(x.cpu().numpy())
            return torch.from_numpy(logits), (torch.from_numpy(cam) if with_cam else None)
        with self._autocast():
            if with_cam:
                logits, cam = self._cam(x, self.positive_index)
                return logits.float(), cam.float()
            return self.model(x).float(), None

    def prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Grey images in [0, 1] of any size -> a standardized (N, 1, size, size) batch."""
        x = self.preprocess(images).to(self.device)
        return x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict_arrays(self, images: Sequence[np.ndarray], batch_size: int = 16) -> SlicePrediction:
        t0 = time.perf_counter()
        out = []
        for i in range(0, len(images), batch_size):
            x = self.prepare(images[i : i + batch_size])
            p = torch.softmax(self._logits(x)[0], dim=1)
            if self.tta:
                p = (p + torch.softmax(self._logits(torch.flip(x, dims=[-1]))[0], dim=1)) / 2
            out.append(p.float().cpu())
        probs = torch.cat(out).numpy() if out else np.zeros((0, len(self.spec.classes)), np.float32)
        return SlicePrediction(probs, self.spec.classes, time.perf_counter() - t0)

    def predict_files(self, paths: Sequence[str | Path], batch_size: int = 16) -> SlicePrediction:
        return self.predict_arrays([load_grey(p) for p in paths], batch_size)

    def heatmap_methods(self) -> tuple[str, ...]:
        """The heat maps this model makes on this backend, best first (see `HEATMAP_METHODS`)."""
        made = self._onnx.heatmaps if self._onnx is not None else HEATMAP_METHODS
        return tuple(m for m in self._layer_heatmaps() if m in made)

    def _layer_heatmaps(self) -> tuple[str, ...]:
        """The heat maps the registry entry names layers for, whatever the backend."""
        layers = self.spec.cam_layers
        if layers is None:
            return ()
        named = {"grad-cam": bool(layers.grad_cam), "cam": bool(layers.cam)}
        return tuple(m for m in HEATMAP_METHODS if named[m])

    def _cam(self, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.spec.cam_layers
        assert layers is not None and layers.cam
        return class_activation_map(self.model, x, index, layers.cam, layers.classifier)

    def _grad_cam(self, x: torch.Tensor, index: int,
                  proceed: Callable[[torch.Tensor], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.spec.cam_layers
        assert layers is not None and layers.grad_cam
        logits, maps = grad_cam(self.model, x, index, layers.grad_cam[:1], score="log-odds", proceed=proceed)
        return logits, maps[layers.grad_cam[0]]

    def check_heatmap(self, method: str | None = None) -> str:
        """The heat-map method to use: `method`, or by default the best the model offers on this backend
        (Grad-CAM on torch, the paper's CAM on ONNX Runtime).

        Raises:
            ValueError: the model does not offer it, or it is Grad-CAM on the ONNX backend (no gradients).
        """
        offered = self.heatmap_methods()
        method = method or (offered[0] if offered else "cam")
        if method in offered:
            return method
        if self._onnx is not None and method in self._layer_heatmaps():
            raise ValueError(f"the ONNX backend computes no gradients, so no {method!r} heat map: use "
                             f"{' or '.join(offered) or 'no heat map'} with it, or the torch backend")
        raise ValueError(f"model {self.spec.name!r} has no {method!r} heat map"
                         + (f"; it offers {', '.join(offered)}" if offered else ""))

    def _maps(self, x: torch.Tensor, index: int, method: str | None,
              proceed: Callable[[torch.Tensor], bool] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and raw maps of class `index` (see `check_heatmap`); `proceed` as in `grad_cam` (Grad-CAM only:
        the other maps cost no backward pass)."""
        method = self.check_heatmap(method)
        if method == "cam" and index == self.positive_index:
            return self._logits(x, with_cam=True)  # type: ignore[return-value]
        with self._autocast():
            if method == "grad-cam":
                logits, maps = self._grad_cam(x, index, proceed)
            else:
                logits, maps = self._cam(x, index)
        return logits.float(), maps.float()

    @torch.no_grad()
    def cam(self, images: Sequence[np.ndarray], class_name: str | None = None,
            method: str | None = None) -> np.ndarray:
        """Heat maps (N, size, size) on the model's input grid, scaled to [0, 1] per image.

        `method`: "grad-cam" or "cam" (`HEATMAP_METHODS`); by default the first the model offers."""
        index = self.spec.classes.index(class_name or self.spec.positive_class)
        _, cam = self._maps(self.prepare(images), index, method)
        return _unit_range(cam.float().cpu().numpy())

    @torch.no_grad()
    def predict_with_cam(self, images: Sequence[np.ndarray], method: str | None = None,
                         min_probability: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Positive-class probabilities (N,) and heat maps (N, size, size) in [0, 1] from one pass (forward,
        and backward for Grad-CAM; plus a mirrored forward pass for the probabilities when `tta` is on);
        `method` as in `cam`. Grad-CAM skips its backward pass (the maps are zero) when no image of the batch
        reaches `min_probability`."""
        x = self.prepare(images)
        flipped = torch.softmax(self._logits(torch.flip(x, dims=[-1]))[0], dim=1) if self.tta else None

        def probabilities(logits: torch.Tensor) -> torch.Tensor:
            p = torch.softmax(logits.float(), dim=1)
            return (p + flipped) / 2 if flipped is not None else p

        def any_reaches(logits: torch.Tensor) -> bool:
            return bool((probabilities(logits)[:, self.positive_index] >= min_probability).any())

        logits, cam = self._maps(x, self.positive_index, method, any_reaches if min_probability > 0 else None)
        p = probabilities(logits)
        return p[:, self.positive_index].float().cpu().numpy(), _unit_range(cam.float().cpu().numpy())

    def cam_to_image(self, cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Undo `prepare`'s geometry: a (size, size) map back onto an (H, W) image."""
        o = self.preprocess.offset
        canvas = np.zeros((self.pre_size, self.pre_size), np.float32)
        canvas[o : o + self.size, o : o + self.size] = cam
        h, w = shape
        n = max(h, w)
        sq = torch.nn.functional.interpolate(torch.from_numpy(canvas)[None, None], size=(n, n), mode="bilinear",
                                             align_corners=False)[0, 0].numpy()
        y0, x0 = (n - h) // 2, (n - w) // 2
        out = sq[y0 : y0 + h, x0 : x0 + w]
        # rescale over the image itself: the padding added by `prepare` must not set the range
        lo, hi = float(out.min()), float(out.max())
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def _log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Each class's log-odds against all the others, (N, classes)."""
    log_p = torch.log_softmax(logits, dim=1)
    return log_p - torch.log1p(-log_p.exp().clamp(max=1 - 1e-7))


def _probe_images(n: int = 4, size: int = 256) -> list[np.ndarray]:
    """Deterministic slice-like test images: smooth texture, a bright blob, noise (values in [0, 1])."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for k in range(n):
        blob = 0.5 * np.exp(-40 * ((xx - 0.3 - 0.1 * k) ** 2 + (yy - 0.5) ** 2))
        texture = 0.2 * np.sin(6 * xx + k) * np.cos(4 * yy)
        images.append(np.clip(0.3 + texture + blob + 0.05 * rng.standard_normal((size, size)), 0, 1))
    return images


def _unit_range(maps: np.ndarray) -> np.ndarray:
    """Scale each map of an (N, H, W) stack to [0, 1]."""
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)

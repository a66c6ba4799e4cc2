"""Screening a CT volume: the front door, which loads a registered model and sends the volume to the pipeline
of the model's input kind (`pipelines.slice` for 2D slice models, `pipelines.volume` for 3D ones,
`pipelines.lesions` for lesion segmenters with a case-level answer such as DCN, `pipelines.instances` for
COVID-CT-Mask-Net's lesion instances and three-class answer).

Input convention: HU array (z, y, x) with z toward the head, y toward posterior, x toward
the patient's left (the viewer's canonical orientation), and its (z, y, x) spacing in mm.
"""

from __future__ import annotations

import time

import numpy as np

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, ProgressFn
from inference.inferers.instances import InstanceClassifier
from inference.inferers.lesions import LesionSegmenter
from inference.inferers.slice import SliceClassifier
from inference.inferers.volume import VolumeClassifier
from inference.models._api import ModelSpec, get_model, list_models
from inference.screening.config import ScreeningConfig
from inference.screening.pipelines.instances import run_instances
from inference.screening.pipelines.lesions import run_lesions
from inference.screening.pipelines.slice import run_slices
from inference.screening.pipelines.volume import run_volume

__all__ = ["ScreeningConfig", "ScreeningModel", "load_model", "run", "screening_models"]

#: a screening model ready to run, as `load_model` returns it
ScreeningModel = SliceClassifier | VolumeClassifier | LesionSegmenter | InstanceClassifier


def screening_models() -> list[ModelSpec]:
    """Registered models that screen a CT (`ModelSpec.screens`: one probability per case), with shipped weights
    or not."""
    return [m for m in list_models() if m.screens]


def load_model(model: str | ModelSpec, device: str = "auto", backend: str = "auto",
               precision: str = "auto") -> ScreeningModel:
    """A registered screening model ready to run: a `SliceClassifier`, `VolumeClassifier`, `LesionSegmenter` or
    `InstanceClassifier` by its input kind.

    `precision`: for slice models "auto" (mixed precision on CUDA where a probe shows it changes no probability
    by more than 1e-3), "fp32" or "mixed" (`inference.core.device.PRECISIONS`); for lesion segmenters "auto"
    is bfloat16 on CPUs that compute it natively (`inference.core.device.segmenter_dtype`).

    Raises:
        UnknownModelError: no such model. ValueError: not a screening model, or `backend` not available for it.
        WeightsError: its weights are missing or altered.
    """
    spec = get_model(model) if isinstance(model, str) else model
    if not spec.screens:
        raise ValueError(f"model {spec.name!r} ({spec.input_kind}) gives no case probability: not a "
                         "screening model")
    if spec.input_kind in ("volume", "segmentation", "instances"):
        if (backend or "auto").lower() not in ("auto", "torch"):
            raise ValueError(f"model {spec.name!r} runs on torch only (backend {backend!r} is for slice models)")
        if spec.input_kind == "volume":
            return VolumeClassifier(spec, device=device)
        if spec.input_kind == "instances":
            return InstanceClassifier(spec, device=device)
        return LesionSegmenter(spec, device=device, precision=precision)
    # no mirror TTA per slice: the case probability already averages many slices, and it doubles the cost
    return SliceClassifier(spec, device=device, tta=False, backend=backend, precision=precision)


def run(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    model: str | ModelSpec | ScreeningModel = "light-squeezenet",
    *,
    device: str = "auto",
    backend: str = "auto",
    config: ScreeningConfig | None = None,
    lung_labels: np.ndarray | None = None,
    lungs: str = "threshold",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Prediction:
    """Screen one CT volume with a slice or a volume model; the GUI calls this from a worker thread.

    Args:
        lungs: lung mask method used when `lung_labels` is None: "threshold" or "unet".

    Raises:
        Cancelled: `cancel()` returned True.
        ValueError: the volume is not 3D, or the model or lung method cannot be used.
    """
    cfg = config or ScreeningConfig()
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    t0 = time.perf_counter()
    if isinstance(model, (str, ModelSpec)):
        model = load_model(model, device, backend)
    if isinstance(model, SliceClassifier):
        return run_slices(volume, spacing, model, config=cfg, lung_labels=lung_labels, lungs=lungs,
                          progress=progress, cancel=cancel, started=t0)
    if isinstance(model, InstanceClassifier):
        return run_instances(volume, spacing, model, config=cfg, lung_labels=lung_labels, lungs=lungs,
                             progress=progress, cancel=cancel, started=t0)
    if isinstance(model, LesionSegmenter):
        return run_lesions(volume, spacing, model, lungs=lungs, lung_labels=lung_labels, progress=progress,
                           cancel=cancel)
    return run_volume(volume, spacing, model, lungs=lungs, lung_labels=lung_labels, progress=progress,
                      cancel=cancel, config=cfg)

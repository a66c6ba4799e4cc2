"""The model registry: every AI method registered by name, with its weights metadata.

A model entry carries what the pipeline needs to run it (builder, pre-processing as an executable
object, input kind, classes, the layers its heat maps are read from) and what a user needs to trust
it (the weights file, its SHA-256, training data, metrics, intended use), following torchvision's
`Weights` idea. This module imports no model: each model module registers itself, and importing
`inference.models` (the parent of this module) imports them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from inference.core.types import InferenceError, UnknownModelError

MODELS_DIR = Path(__file__).resolve().parents[2] / "resources" / "models"
INPUT_KINDS = ("slice", "volume", "segmentation", "instances")


class WeightsError(InferenceError):
    """Weights are missing, altered or unreadable; the message says which file and why."""


class Preprocess(Protocol):
    """A model's pre-processing as code (e.g. `inference.transforms.slice.SlicePreprocess`)."""

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for model cards and listings."""
        ...


@dataclass(frozen=True)
class CamLayers:
    """Where `inference.explain.cam` reads a network's heat maps, by (dotted) attribute name.

    cam: the method returning the maps that the classifier global-average-pools (the paper's CAM), or None;
    classifier: the linear layer over those pooled maps;
    grad_cam: the modules whose outputs Grad-CAM weights by the gradients of the class score.
    """

    cam: str | None = None
    classifier: str = "fc"
    grad_cam: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightsInfo:
    """A shipped weights file and its model card (a JSON file beside it)."""

    file: str  # name inside resources/models
    sha256: str
    card: str  # model card (JSON) name inside resources/models

    def path(self, root: Path = MODELS_DIR) -> Path:
        return root / self.file

    def card_data(self, root: Path = MODELS_DIR) -> dict[str, Any]:
        try:
            return json.loads((root / self.card).read_text())
        except (OSError, ValueError):
            return {}


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline and the user need to know about one registered model."""

    name: str
    builder: Callable[..., nn.Module]
    input_kind: str  # "slice" (2D) or "volume" (3D) classifier, "segmentation" (per-pixel classes), or
    # "instances" (lesion instances of a slice and a class from them: COVID-CT-Mask-Net)
    classes: tuple[str, ...]
    positive_class: str
    description: str
    transforms: Preprocess | None = None  # what the network's input is made of, as code
    cam_layers: CamLayers | None = None  # heat maps this network offers (None: none)
    notes: dict[str, Any] = field(default_factory=dict)  # card notes on the pipeline around the transforms
    weights: WeightsInfo | None = None
    screens: bool = False  # gives one probability per case: a choice for `screen`, the worklist and Analyze

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The pre-processing as plain data: `transforms.describe()` and the `notes`."""
        return {**(self.transforms.describe() if self.transforms is not None else {}), **self.notes}

    def build(self, pretrained: bool = True, **kwargs: Any) -> nn.Module:
        """The network, with its shipped weights loaded (hash-checked) unless `pretrained` is False."""
        model = self.builder(num_classes=len(self.classes), **kwargs)
        if pretrained:
            if self.weights is None:
                raise WeightsError(f"model {self.name!r} has no shipped weights")
            model.load_state_dict(load_weights(self.weights.path(), self.weights.sha256))
        model.eval()
        return model

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.builder(num_classes=len(self.classes)).parameters())

    def card(self) -> dict[str, Any]:
        return self.weights.card_data() if self.weights else {}


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    if spec.input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {spec.input_kind!r}")
    if spec.positive_class not in spec.classes:
        raise ValueError(f"positive class {spec.positive_class!r} is not among {spec.classes}")
    _REGISTRY[spec.name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    """The registered model `name`.

    Raises:
        UnknownModelError: no model has that name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"no model named {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def list_models() -> list[ModelSpec]:
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(path: str | Path, sha256: str) -> dict[str, torch.Tensor]:
    """A state dict, after checking the file's SHA-256; tensors come back as float32."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file missing (reinstall LungLens or retrain the model)")
    actual = sha256_of(path)
    if actual != sha256:
        raise WeightsError(f"{path}: SHA-256 {actual[:16]}... does not match the registered {sha256[:16]}...; "
                           "the file was altered or corrupted, refusing to load it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error is a bad file
        raise WeightsError(f"{path}: cannot read weights: {exc}") from None
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}

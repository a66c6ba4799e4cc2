"""What a training run reports: its result (best epoch, metrics, files written) and the validation ROC plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.core.metrics import roc_curve


@dataclass
class TrainResult:
    """The outcome of a training run: the best epoch, its validation metrics, the history and the files written."""

    best_epoch: int
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    weights: Path | None = None
    card: Path | None = None


def fp16_state(state: dict) -> dict:
    """A state dict with its floating-point tensors in float16 (the shipped weights' dtype)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def save_atomic(obj: object, path: Path) -> None:
    """`torch.save` through a temporary file: an interrupted save leaves the previous file intact."""
    import torch  # reports stays importable without torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def write_card(out: Path, name: str, card: dict, *, history: list, seconds: float, intended_use: str) -> Path:
    """OUT/<name>.card.json: `card` followed by what every card ends with (the training history, its time, the
    intended use and "not for clinical diagnosis")."""
    card.update(history=history, training_seconds=round(seconds, 1), intended_use=intended_use,
                not_for_clinical_diagnosis=True)
    path = out / f"{name}.card.json"
    path.write_text(json.dumps(card, indent=1, default=str))
    return path


def write_roc_png(labels: np.ndarray, scores: np.ndarray, path: Path, auc: float) -> None:
    """A small ROC plot drawn with Pillow (no plotting library needed)."""
    from PIL import Image, ImageDraw

    fpr, tpr, _ = roc_curve(labels, scores)
    size, m = 360, 40
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    span = size - 2 * m

    def xy(x: float, y: float) -> tuple[float, float]:
        return m + x * span, size - m - y * span

    d.rectangle([xy(0, 1), xy(1, 0)], outline="black")
    d.line([xy(0, 0), xy(1, 1)], fill=(170, 170, 170))
    d.line([xy(float(a), float(b)) for a, b in zip(fpr, tpr)], fill=(200, 30, 30), width=2)
    d.text((m, 10), f"ROC (validation), AUC {auc:.3f}", fill="black")
    d.text((size // 2 - 40, size - m + 12), "false-positive rate", fill="black")
    d.text((4, m - 14), "TPR", fill="black")
    img.save(path)

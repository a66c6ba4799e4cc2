"""Training a 2D slice classifier (the light SqueezeNet) on a COVID-CT-style folder.

The paper's recipe (SGD with momentum, lr x0.8 every 5 epochs, rotation, scale 1.1-1.3,
Gaussian noise) plus what a careful engineer adds on 425 training images: horizontal
flips, contrast jitter, label smoothing, an exponential moving average of the weights
and flip test-time augmentation. Every choice is a `TrainConfig` field; model selection
uses the validation split only.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.core.metrics import binary_metrics
from inference.core.types import ProgressFn
from inference.models._api import sha256_of
from inference.screening.fusion import SliceFusion, fit_fusion
from inference.training.averaging import ema_update
from inference.training.datasets.info import read_dataset_info
from inference.training.datasets.real_slices import RealSlices
from inference.training.datasets.slices import read_split
from inference.training.reports import TrainResult, fp16_state, write_roc_png
from inference.transforms.common import ResizeSquare, normalizer
from inference.transforms.images import load_grey

#: where progress goes unless the caller passes its own `log` (the CLI prints it)
_log = logging.getLogger(__name__).info

CLASSES = ("NonCOVID", "COVID")


@dataclass
class TrainConfig:
    size: int = 224
    pre_size: int = 268  # images are padded square and resized to this, then cropped to `size`
    epochs: int = 40
    batch_size: int = 32
    lr: float = 0.08  # the paper's Bayesian optimum was about 0.09
    momentum: float = 0.85  # the paper's Bayesian optimum was about 0.85
    weight_decay: float = 5e-4
    lr_drop: float = 0.8  # the paper: lr x0.8 every 5 epochs
    lr_drop_every: int = 5
    warmup_epochs: int = 1
    rotation_deg: float = 30.0  # the paper rotates 0-90 deg; 30 keeps slices plausible (configurable)
    scale: tuple[float, float] = (1.1, 1.3)  # the paper's zoom range, relative to the padded square
    shift: float = 0.06
    hflip: bool = True
    contrast: float = 0.25
    noise_sd: float = 0.08  # additive Gaussian noise, in units of the standardized image
    label_smoothing: float = 0.1
    balance_classes: bool = True  # weight the loss by inverse class frequency
    ema_decay: float = 0.95  # per step; 0 disables the moving average
    tta: bool = True
    normalize: str = "per-image"  # or "fixed" (see inference.transforms.common.NORMALIZATIONS)
    seed: int = 0
    threads: int = 0  # 0: all cores
    classes: tuple[str, ...] = CLASSES
    init: str | None = None  # start from these weights (a state dict file) instead of He initialisation
    # learning without forgetting: the dataset's own images (not the real CT slices) also learn this teacher's
    # softened outputs, so that learning real CT does not unlearn what the teacher knew of the dataset
    teacher: str | None = None  # a state dict file of the same architecture
    distill_weight: float = 0.0
    distill_temperature: float = 2.0


def preload(paths, pre_size: int) -> torch.Tensor:
    """All images as (N, 1, pre_size, pre_size) grey tensors in [0, 1]."""
    return preload_arrays([load_grey(p) for p in paths], pre_size)


def preload_arrays(images, pre_size: int) -> torch.Tensor:
    """Grey images in [0, 1] (any sizes) as one (N, 1, pre_size, pre_size) tensor, padded square and resized."""
    resize = ResizeSquare(pre_size)
    if len(images) == 0:
        return torch.zeros(0, 1, pre_size, pre_size)
    return torch.from_numpy(np.stack([resize(np.asarray(im, np.float32)) for im in images]))[:, None]


def eval_batch(images: torch.Tensor, size: int, normalize: str = "per-image") -> torch.Tensor:
    """Centre crop `size` from pre-sized images and normalize (the inference pre-processing)."""
    n = images.shape[-1]
    o = (n - size) // 2
    return normalizer(normalize)(images[..., o : o + size, o : o + size])


def augment(images: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random rotation, zoom, shift, flip, contrast and noise on a batch; returns size x size crops."""
    b = images.shape[0]
    pre = images.shape[-1]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    theta = torch.deg2rad(uniform(-cfg.rotation_deg, cfg.rotation_deg))
    # zoom relative to the centre crop the evaluation uses (pre_size / size)
    base = pre / cfg.size
    zoom = uniform(*cfg.scale) / ((cfg.scale[0] + cfg.scale[1]) / 2) * base
    flip = torch.where(torch.rand(b, generator=gen) < (0.5 if cfg.hflip else 0.0), -1.0, 1.0)
    cos, sin = torch.cos(theta) / zoom, torch.sin(theta) / zoom
    mat = torch.zeros(b, 2, 3)
    mat[:, 0, 0], mat[:, 0, 1] = cos * flip, -sin
    mat[:, 1, 0], mat[:, 1, 1] = sin * flip, cos
    mat[:, 0, 2], mat[:, 1, 2] = uniform(-cfg.shift, cfg.shift), uniform(-cfg.shift, cfg.shift)
    grid = nn.functional.affine_grid(mat, (b, 1, cfg.size, cfg.size), align_corners=False)
    out = nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    c = uniform(1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None]
    mean = out.mean(dim=(2, 3), keepdim=True)
    out = normalizer(cfg.normalize)((out - mean) * c + mean)
    return out + cfg.noise_sd * torch.rand(b, 1, 1, 1, generator=gen) * torch.randn(out.shape, generator=gen)


@torch.no_grad()
def predict_scores(model: nn.Module, images: torch.Tensor, size: int, tta: bool, batch: int = 64,
                   normalize: str = "per-image") -> np.ndarray:
    """Positive-class probabilities of pre-sized images (optionally averaged with their mirror)."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = eval_batch(images[i : i + batch], size, normalize)
        p = torch.softmax(model(x), dim=1)
        if tta:
            p = (p + torch.softmax(model(torch.flip(x, dims=[-1])), dim=1)) / 2
        out.append(p[:, -1])
    return torch.cat(out).numpy()


def _lr_at(cfg: TrainConfig, epoch: float) -> float:
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
    return cfg.lr * cfg.lr_drop ** math.floor(epoch / cfg.lr_drop_every)


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    builder: Callable[..., nn.Module] | None = None,
    model_name: str = "light-squeezenet",
    log: Callable[[str], None] = _log,
    progress: ProgressFn | None = None,
    real: RealSlices | None = None,
    real_sources: list[str] | None = None,
) -> TrainResult:
    """Train on the `train` split, select the epoch with the best validation ROC AUC, write weights and card.

    `real`: slices of real CT volumes (`inference.training.datasets.real_slices`); those outside the held-out
    slabs join the training images, the held-out ones form a second validation set, and the epoch kept is the
    one with the best mean of the two validation AUCs. `real_sources` describes them for the card.
    """
    cfg = cfg or TrainConfig()
    from inference.models.light_squeezenet import light_squeezenet

    builder = builder or light_squeezenet
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    train_split = read_split(data_dir, "train", cfg.classes)
    val_split = read_split(data_dir, "val", cfg.classes)
    log(f"train {len(train_split.paths)} images, val {len(val_split.paths)}; loading")
    x_train, y_train = preload(train_split.paths, cfg.pre_size), torch.from_numpy(train_split.labels)
    x_val, y_val = preload(val_split.paths, cfg.pre_size), val_split.labels
    real = real if real is not None else RealSlices.empty()
    real_train, real_val = real.subset(~real.val), real.subset(real.val)
    if len(real):
        log(f"real CT slices: {len(real_train)} train ({int(real_train.labels.sum())} COVID), "
            f"{len(real_val)} val ({int(real_val.labels.sum())} COVID)")
        x_train = torch.cat([x_train, preload_arrays(real_train.images, cfg.pre_size)])
        y_train = torch.cat([y_train, torch.from_numpy(real_train.labels)])
    x_real_val = preload_arrays(real_val.images, cfg.pre_size)
    has_real_val = 0 < real_val.labels.sum() < len(real_val)

    model = builder(num_classes=len(cfg.classes))
    if cfg.init:
        load_state(model, cfg.init)
    ema = copy.deepcopy(model) if cfg.ema_decay > 0 else None
    teacher = _teacher(builder, cfg)
    n_dataset = len(train_split.paths)  # rows of x_train before the real slices
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    counts = torch.bincount(y_train, minlength=len(cfg.classes)).float().clamp(min=1)
    class_weight = (counts.sum() / (len(counts) * counts)) if cfg.balance_classes else None
    loss_fn = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=cfg.label_smoothing)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x_train)
    steps = max(1, n // cfg.batch_size)
    best: tuple[float, float] = (-1.0, -1.0)
    result = TrainResult(best_epoch=-1, metrics={})
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        t0, total = time.time(), 0.0
        for step in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(cfg, epoch + step / steps)
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = augment(x_train[idx], cfg, gen)
            logits = model(x)
            loss = loss_fn(logits, y_train[idx])
            if teacher is not None:
                loss = loss + cfg.distill_weight * distillation(logits, teacher, x, idx < n_dataset,
                                                                cfg.distill_temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            if ema is not None:
                ema_update(ema, model, cfg.ema_decay)
            if progress is not None:
                progress((epoch + (step + 1) / steps) / cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs}")
        scored = ema if ema is not None else model
        scores = predict_scores(scored, x_val, cfg.size, cfg.tta, normalize=cfg.normalize)
        m = binary_metrics(y_val, scores)
        m.update(epoch=epoch + 1, loss=total / steps, seconds=time.time() - t0)
        selection = m["roc_auc"]
        if has_real_val:
            real_scores = predict_scores(scored, x_real_val, cfg.size, cfg.tta, normalize=cfg.normalize)
            m["real_val_slice_auc"] = binary_metrics(real_val.labels, real_scores)["roc_auc"]
            selection = (m["roc_auc"] + m["real_val_slice_auc"]) / 2
        result.history.append(m)
        real_note = f"  real-slice AUC {m['real_val_slice_auc']:.3f}" if has_real_val else ""
        log(f"epoch {epoch + 1:3d}  loss {m['loss']:.3f}  val acc {m['accuracy']:.3f}  F1 {m['f1']:.3f}  "
            f"AUC {m['roc_auc']:.3f}{real_note}  ({m['seconds']:.0f} s)")
        key = (selection, m["accuracy"])
        if key > best:
            best = key
            result.best_epoch, result.metrics = epoch + 1, m
            torch.save({k: v.detach().clone() for k, v in scored.state_dict().items()}, out / "best_fp32.pt")
            write_roc_png(y_val, scores, out / "roc_val.png", m["roc_auc"])
    result = finish(out, cfg, result, model, x_val, y_val, train_split.labels, time.time() - t_start,
                    model_name=model_name, data_dir=Path(data_dir), log=log)
    if len(real):
        _card_real(result, real_train, real_val, real_sources or [])
        if np.isfinite(real_val.share).all() and has_real_val:
            fuse_into_card(result.card, model, real_val, cfg, log=log)
    return result


def _teacher(builder: Callable[..., nn.Module], cfg: TrainConfig) -> nn.Module | None:
    if not cfg.teacher or cfg.distill_weight <= 0:
        return None
    return load_state(builder(num_classes=len(cfg.classes)), cfg.teacher).eval()


def load_state(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the (fp16 or fp32) state dict of the file `path`, in float32."""
    model.load_state_dict({k: v.float() for k, v in torch.load(path, weights_only=True).items()})
    return model


def distillation(logits: torch.Tensor, teacher: nn.Module, x: torch.Tensor, rows: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """KL divergence from the teacher's softened outputs to the student's on `rows` of the batch (times T^2,
    Hinton et al.); 0 when no row is selected. The teacher runs in eval mode on the same augmented images."""
    if not bool(rows.any()):
        return logits.new_zeros(())
    with torch.no_grad():
        target = torch.softmax(teacher(x[rows]) / temperature, dim=1)
    log_p = torch.log_softmax(logits[rows] / temperature, dim=1)
    return nn.functional.kl_div(log_p, target, reduction="batchmean") * temperature**2


def fuse_into_card(card_path: Path, model: nn.Module, real_val: RealSlices, cfg: TrainConfig, *,
                   log: Callable[[str], None] = _log) -> SliceFusion:
    """Fit the slice fusion (`inference.screening.fusion`) on the held-out real slices, scored as screening
    scores them (no mirror averaging), and store it with its validation AUCs under "slice_fusion" in the card.

    Raises:
        ValueError: the held-out slices lack lesion shares or hold one class only.
    """
    if not np.isfinite(real_val.share).all():
        raise ValueError("the held-out real slices have no lesion shares (is the lesion segmenter installed?)")
    p = predict_scores(model, preload_arrays(real_val.images, cfg.pre_size), cfg.size, tta=False,
                       normalize=cfg.normalize)
    fusion = fit_fusion(p, real_val.share, real_val.labels)
    auc = {"classifier": binary_metrics(real_val.labels, p)["roc_auc"],
           "lesion_share": binary_metrics(real_val.labels, real_val.share)["roc_auc"],
           "fused": binary_metrics(real_val.labels, fusion(p, real_val.share))["roc_auc"]}
    card = json.loads(card_path.read_text())
    card["slice_fusion"] = {**fusion.to_card(),
                            "fitted_on": f"the {len(real_val)} held-out real CT slices "
                                         f"({int(real_val.labels.sum())} COVID), L2-regularized logistic regression",
                            "held_out_slice_auc": {k: round(v, 4) for k, v in auc.items()}}
    card_path.write_text(json.dumps(card, indent=2))
    log(f"slice fusion {fusion}; held-out real-slice AUC {auc}")
    return fusion


def _card_real(result: TrainResult, real_train: RealSlices, real_val: RealSlices, sources: list[str]) -> None:
    """Record the real CT slices in the card: sources, counts, the held-out slabs' AUC and the selection rule."""
    assert result.card is not None
    card = json.loads(result.card.read_text())
    card["training_data"]["real_ct_slices"] = {
        "sources": sources,
        "train": {"slices": len(real_train), "covid": int(real_train.labels.sum())},
        "val": {"slices": len(real_val), "covid": int(real_val.labels.sum())},
        "preprocessing": "every lung slice cropped and windowed as screening does (inference.screening.steps."
                         "slice_plan / slice_image); slabs 40 mm thick along z, every 5th held out",
    }
    card["selection"] = ("epoch with the best mean of two validation ROC AUCs: COVID-CT's official val split and "
                         "the held-out slabs of the real CT slices (both used for selection only)")
    card["validation_metrics"]["real_val_slice_auc"] = result.metrics.get("real_val_slice_auc")
    result.card.write_text(json.dumps(card, indent=2))


def finish(out: Path, cfg: TrainConfig, result: TrainResult, model: nn.Module, x_val: torch.Tensor,
           y_val: np.ndarray, train_labels: np.ndarray, seconds: float, *, model_name: str = "light-squeezenet",
           data_dir: Path | None = None, log: Callable[[str], None] = _log) -> TrainResult:
    """Write the shipped files from `out/best_fp32.pt`: weights (fp16 when lossless on val), card, history.

    Also usable on the checkpoint of a run that was stopped early (`result.best_epoch`/`metrics` from its log).
    """
    state = torch.load(out / "best_fp32.pt", weights_only=True)
    weights = out / f"{model_name}.pt"
    half = fp16_state(state)
    model.load_state_dict({k: v.float() for k, v in half.items()})
    fp16_scores = predict_scores(model, x_val, cfg.size, cfg.tta, normalize=cfg.normalize)
    fp16 = binary_metrics(y_val, fp16_scores)
    lossless = abs(fp16["accuracy"] - result.metrics["accuracy"]) < 1e-9 and abs(
        fp16["roc_auc"] - result.metrics["roc_auc"]) < 2e-3
    torch.save(half if lossless else state, weights)
    result.weights = weights
    dataset = read_dataset_info(data_dir)
    card = {
        "name": model_name,
        "architecture": "Light SqueezeNet (Polsinelli et al.): modified Fire modules (BN + ELU), transposed-conv "
                        "skip from Fire 9 to Fire 2, 128-filter 1x1 weighting, GAP, 2 classes",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "classes": list(cfg.classes),
        "weights_file": weights.name,
        "weights_dtype": "float16" if lossless else "float32",
        "sha256": sha256_of(weights),
        "preprocessing": {"input": "one grey channel", "pad_to_square": True, "resize": cfg.pre_size,
                          "centre_crop": cfg.size, "normalize": cfg.normalize,
                          "ct_volume_window_hu": [-1350, 150]},
        "training_data": {
            "dataset": dataset["name"],
            "description": dataset["description"],
            "images": {c: int((train_labels == i).sum()) for i, c in enumerate(cfg.classes)},
            "terms": dataset["terms"],
        },
        "selection": "epoch with the best ROC AUC on the official val split (val used for selection only)",
        "best_epoch": result.best_epoch,
        "validation_metrics": {k: result.metrics[k] for k in
                               ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")},
        "validation_counts": {"images": int(len(y_val)), "covid": int(y_val.sum())},
        "paper_test_metrics": {"accuracy": 0.83, "sensitivity": 0.85, "specificity": 0.81, "precision": 0.8173,
                               "f1": 0.8333},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "trained_on": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "training_minutes": round(seconds / 60, 1),
        "intended_use": "research and education: triage support and teaching on CT slice images; a second look, "
                        "never a diagnosis",
        "limitations": "; ".join(filter(None, (
            f"trained on {len(train_labels)} images, validated on {len(y_val)}: the metrics carry wide confidence "
            "intervals at this size" if len(y_val) < 1000 else "", dataset["limitations"]))),
        "not_for_clinical_diagnosis": True,
    }
    (out / f"{model_name}.card.json").write_text(json.dumps(card, indent=2))
    (out / "history.json").write_text(json.dumps(result.history, indent=2))
    result.card = out / f"{model_name}.card.json"
    log(f"best epoch {result.best_epoch}: {json.dumps(card['validation_metrics'])}")
    return result



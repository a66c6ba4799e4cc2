"""Training DCN (paper 4) on radiologists' lesion masks (COVID-SemiSeg layout), with k-fold validation.

Data: the slices of `read_lesion_slices(data_dir)` (8-bit JPEGs exported with the window
`EXPORT_WINDOW_HU`, GGO / consolidation masks), split by `kfold` (seeded) into `folds` folds; one fold is
held out for validation (`fold`), `cross_validate` runs every fold. Optional `extra` slices, arrays
`(image01, labels, is_covid)` from the caller (e.g. `inference.training.datasets.phantom_lesions` on
phantoms), always train. Every slice is padded to a square and resized to `size` (labels: nearest) once.

Targets: segmentation = the mask; classification = 1 (COVID) for the COVID-SemiSeg slices (all have
lesions) and the extra slices flagged COVID, 0 for the others. COVID-SemiSeg holds no negatives, so
without `extra` the classification branch only ever sees COVID slices.

Each epoch: every positive slice once and a fresh random draw of negatives (`negatives_per_positive` x
the positives: the paper's under-sampling), augmented on the fly (flips, 90-degree rotations: the
slices are transposed, see `lesion_slices`; small rotations, scale, a smooth elastic warp; gamma, gain,
offset and noise on the grey levels). With a fold held out, a contiguous block of the negatives is held out
too, so that the patient level (`_patient_level`) is fitted on out-of-fold slice probabilities only.
Optional self-training (`SelfTraining`): unlabelled slices with a teacher's labels, drawn per epoch like the
negatives. Loss `dcn_loss` (w = 1 for slices with lesion pixels, lambda 1), Adam 1e-3 x 0.95 per epoch
(the paper); the segmentation head starts with a background prior (`background_prior`, not in the paper);
optionally a moving average of the weights is scored and kept (`ema_decay`). After each epoch the held-out
fold is scored: per-slice Dice of lesion vs background, mean over slices (as Inf-Net reports), and
per-class Dice (GGO, consolidation; pooled over the fold's pixels), at the model's size. The epoch with the
best mean Dice is kept (`select_best`; optimistic, as it is chosen on the slices it is scored on), or the
last epoch, and written in fp16. Deterministic for a seed.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import pickle
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from inference.core.types import ProgressFn
from inference.models._api import sha256_of
from inference.models.dcn import (
    DCN,
    EXPORT_WINDOW_HU,
    MODEL_NAME,
    SEG_CLASSES,
    SHIPPED_BASE,
    SIZE,
    averaged_outputs,
    dcn_loss,
    load_slice_network,
)
from inference.training.averaging import ema_update
from inference.training.datasets.lesion_slices import kfold, read_lesion_slices
from inference.training.datasets.phantom_lesions import ExtraSlice
from inference.training.datasets.volumes import DatasetError
from inference.training.recipes.spm import SPMConfig, fit_spm
from inference.training.reports import TrainResult, fp16_state, save_atomic

#: where progress goes unless the caller passes its own `log` (the CLI prints it)
_log = logging.getLogger(__name__).info


@dataclass
class DCNTrainConfig:
    epochs: int = 60
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.95  # per epoch (the paper)
    size: int = SIZE  # model input side; reduced from the paper's 512 for CPU training
    base: int = SHIPPED_BASE  # U-Net / ResNet width (64: the paper's)
    folds: int = 5
    fold: int = 0  # the held-out fold (cross_validate runs them all)
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    time_limit_min: float = 0.0  # stop after the epoch that passes this (0: no limit)
    negatives_per_positive: float = 0.5  # negatives drawn per epoch, relative to the positives
    flip_p: float = 0.5  # each of the two axes
    rot90: bool = True  # a random multiple of 90 degrees
    scale: tuple[float, float] = (0.8, 1.25)
    rotate_deg: float = 20.0  # a random in-plane rotation in +- this, on top of the 90-degree ones
    elastic: float = 0.03  # peak displacement of a smooth random field, as a fraction of the side (0: off)
    intensity: float = 0.1  # gain in 1 +- this, offset in +- half of it (grey units)
    gamma: tuple[float, float] = (0.7, 1.4)  # a random gamma on the [0, 1] grey levels
    noise: float = 0.02  # sd of added Gaussian noise, at most (grey units)
    pseudo_per_positive: float = 1.0  # self-training: pseudo-labelled slices drawn per epoch, relative to the positives
    select_best: bool = True  # keep the epoch best on the held-out fold (optimistic); False: the last epoch
    ema_decay: float = 0.0  # per step: score and ship a moving average of the weights (0: the weights as trained)
    background_prior: float = 3.0  # initial background logit bias of the segmentation head (lesion p ~ 0.05)
    resume: bool = False  # continue from OUT/dcn.checkpoint.pt (written after every epoch)

    def must_match(self) -> dict:
        """The settings a checkpoint has to share with the run that resumes it."""
        keep = ("batch_size", "lr", "lr_decay", "size", "base", "folds", "fold", "seed", "negatives_per_positive",
                "flip_p", "rot90", "scale", "rotate_deg", "elastic", "intensity", "gamma", "noise", "ema_decay",
                "pseudo_per_positive", "select_best", "background_prior")
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k in keep}


CHECKPOINT = f"{MODEL_NAME}.checkpoint.pt"
OUT_OF_FOLD = f"{MODEL_NAME}.oof.json"  # a fold's slice probabilities of its held-out positives and negatives
ALL_SLICES = -1  # `fold` value: train on every slice, hold none out (the final model after cross-validation)


@dataclass(frozen=True)
class SelfTraining:
    """Unlabelled slices that train with a teacher's labels (pseudo-labels, as Semi-Inf-Net): the teacher's
    flip-averaged segmentation, fixed for the run; the classification target is the slice's own flag."""

    images: Sequence[tuple[np.ndarray, bool]]  # (grey image in [0, 1], is COVID)
    teacher: Path  # DCN weights; for `cross_validate` a folder: fold<k>/dcn.pt per fold, dcn.pt for the final
    source: str = ""


@dataclass
class _Slices:
    """Pre-processed slices: images (N, S, S) float32 in [0, 1], labels (N, S, S) uint8, class (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    covid: torch.Tensor


def square(image: np.ndarray, size: int, *, nearest: bool = False) -> np.ndarray:
    """Pad to a centred square with 0 and resize to size x size (bilinear, or nearest for labels)."""
    h, w = image.shape
    n = max(h, w)
    sq = np.zeros((n, n), np.float32)
    y0, x0 = (n - h) // 2, (n - w) // 2
    sq[y0:y0 + h, x0:x0 + w] = image
    t = torch.from_numpy(sq)[None, None]
    if nearest:
        return F.interpolate(t, size=(size, size), mode="nearest-exact")[0, 0].numpy()
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0, 0].numpy()


def _prepare(items: Sequence[tuple[np.ndarray, np.ndarray, bool]], size: int) -> _Slices:
    if not items:
        return _Slices(torch.zeros(0, size, size), torch.zeros(0, size, size, dtype=torch.uint8),
                       torch.zeros(0, dtype=torch.long))
    images = np.stack([square(np.asarray(im, np.float32), size) for im, _, _ in items])
    labels = np.stack([square(np.asarray(lab, np.float32), size, nearest=True) for _, lab, _ in items])
    covid = torch.tensor([int(bool(c)) for _, _, c in items], dtype=torch.long)
    return _Slices(torch.from_numpy(images).clamp_(0, 1), torch.from_numpy(labels).to(torch.uint8), covid)


def augment(x: torch.Tensor, y: torch.Tensor, cfg: DCNTrainConfig,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Flips, 90-degree and small rotations, scale, a smooth elastic warp (labels nearest), then gamma, gain,
    offset and noise on the grey levels of a batch (N, S, S); (N, 1, S, S) images and (N, S, S) labels."""
    xs, ys = [], []
    for i in range(len(x)):
        a, b = x[i], y[i]
        if cfg.rot90:
            k = int(torch.randint(4, (1,), generator=gen))
            a, b = torch.rot90(a, k, (0, 1)), torch.rot90(b, k, (0, 1))
        for dim in (0, 1):
            if float(torch.rand(1, generator=gen)) < cfg.flip_p:
                a, b = a.flip(dim), b.flip(dim)
        xs.append(a)
        ys.append(b)
    x, y = torch.stack(xs)[:, None].float(), torch.stack(ys)[:, None].float()
    n, side = len(x), x.shape[-1]
    lo, hi = math.log(cfg.scale[0]), math.log(cfg.scale[1])
    zoom = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen))
    angle = math.radians(cfg.rotate_deg) * (2 * torch.rand(n, generator=gen) - 1)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    mat = torch.zeros(n, 2, 3)
    mat[:, 0, 0], mat[:, 0, 1], mat[:, 1, 0], mat[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    if cfg.elastic > 0:  # coarse random control points, smoothly upsampled (grid units span 2 per side)
        coarse = torch.randn(n, 2, 5, 5, generator=gen)
        field = F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=True)
        field = field / field.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6)
        grid = grid + 2 * cfg.elastic * field.permute(0, 2, 3, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    glo, ghi = math.log(cfg.gamma[0]), math.log(cfg.gamma[1])
    gamma = torch.exp(glo + (ghi - glo) * torch.rand(n, 1, 1, 1, generator=gen))
    gain = 1 + cfg.intensity * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    offset = 0.5 * cfg.intensity * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    noise = cfg.noise * torch.rand(n, 1, 1, 1, generator=gen) * torch.randn(x.shape, generator=gen)
    x = x.clamp(0.0, 1.0).pow(gamma) * gain + offset + noise
    return x.clamp(0.0, 1.0), y[:, 0].round().long()


def slice_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-slice Dice of lesion (any class > 0) vs background, (N,); 1 where both are empty."""
    p, t = (pred > 0).flatten(1), (target > 0).flatten(1)
    inter, denom = (p & t).sum(1).double(), (p.sum(1) + t.sum(1)).double()
    return torch.where(denom > 0, 2 * inter / denom.clamp(min=1), torch.ones_like(denom))


@torch.no_grad()
def evaluate(model: nn.Module, val: _Slices, batch_size: int = 8, *, tta: bool = False) -> dict[str, float]:
    """Mean per-slice lesion Dice, its sd, per-class Dice (pooled) and the mean P(COVID) of the fold; `tta`:
    segmentation probabilities averaged over the four flips of each slice (as `LesionSegmenter(tta=True)`)."""
    model.eval()
    preds, probs = [], []
    for i in range(0, len(val.images), batch_size):
        out = averaged_outputs(model, val.images[i:i + batch_size, None], tta=tta)
        preds.append(out.seg.argmax(1))
        probs.append(out.p[:, 1])
    pred, target = torch.cat(preds), val.labels.long()
    dice = slice_dice(pred, target)
    m = {"dice_mean": float(dice.mean()), "dice_sd": float(dice.std(unbiased=False))}
    for k, name in enumerate(SEG_CLASSES[1:], start=1):
        p, t = pred == k, target == k
        denom = int(p.sum() + t.sum())
        m[f"dice_{name.lower()}"] = float(2 * (p & t).sum() / denom) if denom else 1.0
    m["p_covid_mean"] = float(torch.cat(probs).mean())
    return m


@torch.no_grad()
def slice_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 8) -> np.ndarray:
    """P(COVID) of every slice (N, S, S) by the classification branch, float64 (N,)."""
    model.eval()
    probs = [model(images[i:i + batch_size, None]).logits.softmax(1)[:, 1] for i in range(0, len(images), batch_size)]
    return torch.cat(probs).double().numpy() if probs else np.zeros(0)


_DICE_KEYS = ("dice_mean", "dice_sd", "dice_ggo", "dice_consolidation")


def _patient_level(model: DCN, pos: np.ndarray, neg: np.ndarray, seed: int, weights: Path,
                   log: Callable[[str], None]) -> dict[str, object]:
    """Fit `model.spm` (`recipes.spm`), rewrite `weights` (fp16) and return the card's patient-level entry."""
    cfg = SPMConfig(seed=seed)
    m = fit_spm(model.spm, pos, neg, cfg)
    torch.save(fp16_state(model.state_dict()), weights)
    log(f"slice probability mapping: composed-case ROC AUC {m['val_roc_auc']:.4f}, accuracy {m['val_accuracy']:.4f} "
        f"({len(pos)} positive, {len(neg)} negative slices)")
    return {"method": "slice probability mapping (FC 100-256-128-1, BCE), fitted after the slice network",
            "training": "cases composed from slice probabilities (no patient-level labels here): positives from "
                        "held-out annotated slices, negatives from held-out blocks of the negative CTs' slices "
                        "(other slices of the same CTs were trained on)",
            "positive_slice_p_mean": round(float(np.mean(pos)), 4),
            "negative_slice_p_mean": round(float(np.mean(neg)), 4),
            **cfg.describe(),
            "composed_val_roc_auc": round(m["val_roc_auc"], 4),
            "composed_val_accuracy": round(m["val_accuracy"], 4)}


def train(data_dir: str | Path, out: str | Path, cfg: DCNTrainConfig | None = None, *,
          extra: Sequence[ExtraSlice] | None = None, extra_source: str = "", self_training: SelfTraining | None = None,
          progress: ProgressFn | None = None, log: Callable[[str], None] = _log) -> TrainResult:
    """Train DCN with fold `cfg.fold` held out; write `dcn.pt` (fp16), `dcn.card.json`, `dcn.history.json`.

    Raises:
        DatasetError: `data_dir` does not follow the COVID-SemiSeg layout or has fewer slices than folds, or
            the self-training teacher cannot be read as DCN weights of this width.
    """
    cfg = cfg or DCNTrainConfig()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(Path(data_dir), Path(out), cfg, extra or (), extra_source, self_training, progress, log)
    finally:
        torch.set_num_threads(threads)


def cross_validate(data_dir: str | Path, out: str | Path, cfg: DCNTrainConfig | None = None, *,
                   extra: Sequence[ExtraSlice] | None = None, extra_source: str = "", final: bool = False,
                   self_training: SelfTraining | None = None, progress: ProgressFn | None = None,
                   log: Callable[[str], None] = _log) -> TrainResult:
    """Train every fold into `out/fold<k>/`; the shipped files in `out` are fold `cfg.fold`'s (`final`: a model
    trained on every slice for the folds' median best epoch count), and its card gains the cross-validated
    Dice (mean +- sd over the folds' mean per-slice Dice). `time_limit_min` is the folds' run, shared evenly
    by the folds still to run. With `cfg.resume`, a fold an earlier run finished (its card, weights and
    history, no checkpoint) is kept and the others resume from their checkpoints."""
    cfg = cfg or DCNTrainConfig()
    out = Path(out)
    t0, results = time.time(), []
    steps = cfg.folds + int(final)
    for k in range(cfg.folds):
        left = cfg.time_limit_min - (time.time() - t0) / 60 if cfg.time_limit_min else 0.0
        fold_cfg = replace(cfg, fold=k, time_limit_min=max(left / (cfg.folds - k), 1e-3) if left else 0.0)
        sub = None if progress is None else (lambda f, msg, k=k: progress((k + f) / steps, f"fold {k}: {msg}"))
        log(f"fold {k + 1}/{cfg.folds}")
        done = _finished_fold(out / f"fold{k}") if cfg.resume else None
        if done is not None:
            log(f"fold {k + 1} was finished by an earlier run (best epoch {done.best_epoch}): kept")
        st = None if self_training is None else replace(self_training,
                                                        teacher=self_training.teacher / f"fold{k}" / f"{MODEL_NAME}.pt")
        results.append(done or train(data_dir, out / f"fold{k}", fold_cfg, extra=extra, extra_source=extra_source,
                                     self_training=st, progress=sub, log=log))
    dices = np.array([r.metrics["dice_mean"] for r in results])
    cv = {"folds": cfg.folds, "dice_mean": round(float(dices.mean()), 4), "dice_sd": round(float(dices.std()), 4),
          "per_fold": [round(float(d), 4) for d in dices]}
    tta = [json.loads(r.card.read_text()).get("validation_metrics_fp16_tta", {}) for r in results if r.card]
    if len(tta) == len(results) and all("dice_mean" in t for t in tta):
        means = np.array([t["dice_mean"] for t in tta])  # the folds' mean per-slice Dice with flip averaging
        cv["tta_dice_mean"], cv["tta_dice_sd"] = round(float(means.mean()), 4), round(float(means.std()), 4)
        for key in ("dice_ggo", "dice_consolidation"):
            cv[f"tta_{key}_mean"] = round(float(np.mean([t[key] for t in tta])), 4)
    for name in SEG_CLASSES[1:]:
        vals = np.array([r.metrics[f"dice_{name.lower()}"] for r in results])
        cv[f"dice_{name.lower()}_mean"], cv[f"dice_{name.lower()}_sd"] = (round(float(vals.mean()), 4),
                                                                          round(float(vals.std()), 4))
    shipped = results[cfg.fold]
    if final:
        epochs = max(1, int(round(float(np.median([r.best_epoch for r in results]))))) if cfg.select_best \
            else cfg.epochs
        log(f"final model: every slice, {epochs} epochs"
            + (" (the folds' median best epoch)" if cfg.select_best else ""))
        sub = None if progress is None else (lambda f, msg: progress((cfg.folds + f) / steps, f"final: {msg}"))
        st = None if self_training is None else replace(self_training,
                                                        teacher=self_training.teacher / f"{MODEL_NAME}.pt")
        shipped = train(data_dir, out / "final", replace(cfg, fold=ALL_SLICES, epochs=epochs, time_limit_min=0.0),
                        extra=extra, extra_source=extra_source, self_training=st, progress=sub, log=log)
    assert shipped.weights is not None and shipped.card is not None
    card = json.loads(shipped.card.read_text())
    card["cross_validation"] = cv
    card["shipped_fold"] = "final (every slice)" if final else cfg.fold
    if final:  # no held-out slices of its own: the folds' figures are its estimate
        card["validation_metrics"] = {f"cv_{k}": cv[f"{k}_mean"] for k in ("dice", "dice_ggo", "dice_consolidation")}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped.weights, out / shipped.weights.name)
    if any(not e[2] for e in (extra or ())):  # refit the patient level on every fold's out-of-fold slices
        card["patient_level"] = _patient_level_cv(out, cfg, log)
        card["sha256"] = sha256_of(out / shipped.weights.name)
    (out / shipped.card.name).write_text(json.dumps(card, indent=2))
    shutil.copyfile(shipped.card.with_name(f"{MODEL_NAME}.history.json"), out / f"{MODEL_NAME}.history.json")
    log(f"{cfg.folds}-fold Dice {cv['dice_mean']:.4f} +- {cv['dice_sd']:.4f} "
        f"(GGO {cv['dice_ggo_mean']:.4f}, consolidation {cv['dice_consolidation_mean']:.4f})")
    metrics = {**shipped.metrics, "cv_dice_mean": cv["dice_mean"], "cv_dice_sd": cv["dice_sd"]}
    return TrainResult(shipped.best_epoch, metrics, shipped.history, out / shipped.weights.name,
                       out / shipped.card.name)


def _patient_level_cv(out: Path, cfg: DCNTrainConfig, log: Callable[[str], None]) -> dict[str, object]:
    """`_patient_level` for the shipped model, fitted on every fold's out-of-fold slice probabilities (each
    fold model on its held-out annotated slices and held-out negative slices: `OUT_OF_FOLD`)."""
    pos, neg = [], []
    for k in range(cfg.folds):
        path = out / f"fold{k}" / OUT_OF_FOLD
        if not path.is_file():
            raise DatasetError(f"{path}: missing; train the fold again (without --resume) to fit the patient level")
        oof = json.loads(path.read_text())
        pos.append(np.asarray(oof["positive"], np.float64))
        neg.append(np.asarray(oof["negative"], np.float64))
    model = DCN(base=cfg.base)
    _load_weights(model, out / f"{MODEL_NAME}.pt")
    entry = _patient_level(model, np.concatenate(pos), np.concatenate(neg), cfg.seed, out / f"{MODEL_NAME}.pt", log)
    return {**entry, "slices": f"out-of-fold: each of the {cfg.folds} fold models on its held-out annotated "
                               "slices and its held-out block of negative slices"}


def _finished_fold(folder: Path) -> TrainResult | None:
    """The result of a fold an earlier run finished (card, weights and history; no checkpoint), else None."""
    card, weights, history = (folder / f"{MODEL_NAME}{s}" for s in (".card.json", ".pt", ".history.json"))
    if (folder / CHECKPOINT).exists() or not (card.is_file() and weights.is_file() and history.is_file()):
        return None
    data = json.loads(card.read_text())
    return TrainResult(int(data["best_epoch"]), dict(data["validation_metrics"]), json.loads(history.read_text()),
                       weights, card)


def _load_weights(model: DCN, path: Path) -> None:
    state = torch.load(path, weights_only=True, map_location="cpu")
    load_slice_network(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def _train(data_dir: Path, out: Path, cfg: DCNTrainConfig, extra: Sequence[ExtraSlice], extra_source: str,
           self_training: SelfTraining | None, progress: ProgressFn | None,
           log: Callable[[str], None]) -> TrainResult:
    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.size <= 0 or cfg.size % 16:
        raise ValueError(f"size must be a positive multiple of 16, got {cfg.size}")
    torch.manual_seed(cfg.seed)
    data = read_lesion_slices(data_dir)
    if cfg.fold == ALL_SLICES:
        train_idx, val_idx = np.arange(len(data)), np.zeros(0, np.int64)
    elif len(data) < cfg.folds or not 0 <= cfg.fold < cfg.folds:
        raise DatasetError(f"{data_dir}: {len(data)} slices cannot make {cfg.folds} folds "
                           f"with fold {cfg.fold} held out")
    else:
        train_idx, val_idx = kfold(len(data), cfg.folds, cfg.seed)[cfg.fold]
    items = [(s.image, s.labels, True) for s in data.slices]
    train_extra, held_extra = _split_negatives(extra, cfg)
    tr = _prepare([items[i] for i in train_idx] + train_extra, cfg.size)
    val = _prepare([items[i] for i in val_idx], cfg.size)
    pos = np.flatnonzero(tr.covid.numpy() == 1)
    neg = np.flatnonzero(tr.covid.numpy() == 0)
    pseudo, st_info = np.zeros(0, np.int64), {}
    if self_training is not None and len(self_training.images):
        tr, pseudo, st_info = _add_pseudo_labelled(tr, self_training, cfg, log)
    held = "none held out" if cfg.fold == ALL_SLICES else f"fold {cfg.fold} of {cfg.folds}"
    log(f"{len(train_idx)} training and {len(val_idx)} validation slices of {data_dir.name} ({held}); "
        f"{len(train_extra)} extra slices ({len(neg)} negatives; {len(held_extra)} more held out); size {cfg.size}")

    model = DCN(base=cfg.base)
    with torch.no_grad():  # a background prior (as RetinaNet's): lesions start rare, not at 1/3 of every pixel
        model.seg.head.bias.copy_(torch.tensor([cfg.background_prior, 0.0, 0.0]))
    # the slice network; the patient-level SPM is fitted after it (`_patient_level`)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("spm.")], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=cfg.lr_decay)
    ema = copy.deepcopy(model) if cfg.ema_decay > 0 else None
    rng = np.random.default_rng([cfg.seed, 3])
    gen = torch.Generator().manual_seed(cfg.seed)
    result = TrainResult(best_epoch=-1, metrics={})
    best, best_state = -1.0, None
    n_neg = min(len(neg), int(round(cfg.negatives_per_positive * len(pos))))
    n_pseudo = min(len(pseudo), int(round(cfg.pseudo_per_positive * len(pos))))
    start, spent = 0, 0.0
    if cfg.resume and (out / CHECKPOINT).is_file():
        start, best, best_state, spent = _resume(out / CHECKPOINT, cfg, len(tr.images), model, opt, sched, rng, gen,
                                                 result, ema)
        log(f"resumed after epoch {start} (best so far: epoch {result.best_epoch}, Dice {best:.4f})")
    t_start -= spent
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, running = time.time(), 0.0
        drawn = [pos, rng.choice(neg, n_neg, replace=False)]
        if n_pseudo:
            drawn.append(rng.choice(pseudo, n_pseudo, replace=False))
        order = rng.permutation(np.concatenate(drawn).astype(np.int64))
        steps = max(1, math.ceil(len(order) / cfg.batch_size))
        for step in range(steps):
            idx = torch.from_numpy(order[step * cfg.batch_size:(step + 1) * cfg.batch_size])
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            x, y = augment(tr.images[idx], tr.labels[idx], cfg, gen)
            loss = dcn_loss(model(x), y, tr.covid[idx], (y > 0).flatten(1).any(1))
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            opt.step()
            if ema is not None:
                ema_update(ema, model, cfg.ema_decay)
            running += float(loss.total.detach())
            if progress is not None:
                progress((epoch + (step + 1) / steps) / cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs}")
        sched.step()
        scored = ema if ema is not None else model
        m = evaluate(scored, val, cfg.batch_size) if len(val.images) else {}
        m.update(epoch=epoch + 1, loss=running / steps, lr=opt.param_groups[0]["lr"], seconds=time.time() - t0)
        result.history.append(m)
        scores = (f"val Dice {m['dice_mean']:.4f}  GGO {m['dice_ggo']:.4f}  consolidation "
                  f"{m['dice_consolidation']:.4f}  " if "dice_mean" in m else "")
        log(f"epoch {epoch + 1:3d}  loss {m['loss']:.4f}  {scores}({m['seconds']:.0f} s)")
        if "dice_mean" not in m or not cfg.select_best or m["dice_mean"] > best:  # else the last epoch
            best, best_state = m.get("dice_mean", -1.0), copy.deepcopy(scored.state_dict())
            result.best_epoch, result.metrics = epoch + 1, m
        save_atomic({"epochs_done": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "numpy_rng": rng.bit_generator.state,
                     "generator": gen.get_state(), "ema": ema.state_dict() if ema is not None else {},
                     "best": best, "best_state": best_state,
                     "best_epoch": result.best_epoch, "best_metrics": result.metrics, "history": result.history,
                     "seconds": time.time() - t_start,
                     "settings": {**cfg.must_match(), "train_slices": len(tr.images)}}, out / CHECKPOINT)
        if cfg.time_limit_min and time.time() - t_start > 60 * cfg.time_limit_min and epoch + 1 < cfg.epochs:
            log(f"time limit of {cfg.time_limit_min} min reached after epoch {epoch + 1}; `--resume` continues")
            break
    if best_state is None:
        raise DatasetError("no epoch ran (epochs must be >= 1)")
    negatives = _prepare(held_extra, cfg.size) if held_extra else _Slices(tr.images[neg], tr.labels[neg],
                                                                            tr.covid[neg])
    return _finish(out, cfg, result, model, best_state, val, negatives, data_dir, len(train_idx), len(val_idx),
                   len(extra), extra_source, time.time() - t_start, log, st_info)


def _add_pseudo_labelled(tr: _Slices, st: SelfTraining, cfg: DCNTrainConfig,
                         log: Callable[[str], None]) -> tuple[_Slices, np.ndarray, dict[str, object]]:
    """`tr` with the self-training slices appended (labels from the teacher), their indices, the card entry."""
    teacher = DCN(base=cfg.base)
    try:
        _load_weights(teacher, st.teacher)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise DatasetError(f"{st.teacher}: not DCN weights of width {cfg.base} to teach with ({exc})") from None
    images = _prepare([(im, np.zeros(im.shape, np.uint8), covid) for im, covid in st.images], cfg.size)
    teacher.eval()
    with torch.no_grad():
        labels = torch.cat([averaged_outputs(teacher, images.images[i:i + cfg.batch_size, None], tta=True)
                            .seg.argmax(1).to(torch.uint8) for i in range(0, len(images.images), cfg.batch_size)])
    share = float((labels > 0).float().mean())
    log(f"self-training: {len(labels)} slices labelled by {st.teacher} (lesion {100 * share:.1f} % of pixels)")
    start = len(tr.images)
    merged = _Slices(torch.cat([tr.images, images.images]), torch.cat([tr.labels, labels]),
                     torch.cat([tr.covid, images.covid]))
    info = {"pseudo_labelled_slices": len(labels), "source": st.source or "unnamed",
            "covid_flagged": int(images.covid.sum()), "teacher_sha256": sha256_of(st.teacher),
            "pseudo_lesion_pixel_share": round(share, 4),
            "labels": "the teacher's flip-averaged segmentation (hard labels, fixed for the run); the "
                      "classification target is the slice's own COVID flag",
            "per_epoch": f"{cfg.pseudo_per_positive} x the positives, drawn afresh each epoch"}
    return merged, np.arange(start, len(merged.images)), info


def _split_negatives(extra: Sequence[ExtraSlice], cfg: DCNTrainConfig) -> tuple[list[ExtraSlice], list[ExtraSlice]]:
    """(training extras, held-out negatives): with a fold held out, the fold's contiguous block of the negative
    slices (neighbouring slices of one CT stay together) is held out as well, so that the patient level is
    fitted on slice probabilities of negatives the slice network never saw. Every slice trains the final model."""
    negatives = [i for i, e in enumerate(extra) if not e[2]]
    if cfg.fold == ALL_SLICES or len(negatives) < cfg.folds:
        return list(extra), []
    held = set(np.array_split(np.asarray(negatives), cfg.folds)[cfg.fold].tolist())
    return [e for i, e in enumerate(extra) if i not in held], [extra[i] for i in sorted(held)]


def _resume(path: Path, cfg: DCNTrainConfig, n_train: int, model: nn.Module, opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator, gen: torch.Generator,
            result: TrainResult, ema: nn.Module | None) -> tuple[int, float, dict[str, torch.Tensor] | None, float]:
    """Restore a checkpoint; (epochs done, best Dice, best state, seconds spent). DatasetError when it does not fit."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DatasetError(f"{path}: not a DCN training checkpoint ({exc})") from None
    want = {**cfg.must_match(), "train_slices": n_train}
    if state.get("settings") != want:
        raise DatasetError(f"{path}: trained with {state.get('settings')}, not {want}; resume with the same "
                           "settings and data or use another --out")
    load_slice_network(model, state["model"])
    if ema is not None:
        load_slice_network(ema, state["ema"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    rng.bit_generator.state = state["numpy_rng"]
    gen.set_state(state["generator"])
    result.history = list(state["history"])
    result.best_epoch, result.metrics = int(state["best_epoch"]), dict(state["best_metrics"])
    return int(state["epochs_done"]), float(state["best"]), state["best_state"], float(state["seconds"])


def _finish(out: Path, cfg: DCNTrainConfig, result: TrainResult, model: DCN, state: dict[str, torch.Tensor],
            val: _Slices, negatives: _Slices, data_dir: Path, n_train: int, n_val: int, n_extra: int,
            extra_source: str, seconds: float, log: Callable[[str], None],
            self_training: dict[str, object]) -> TrainResult:
    """Write fp16 weights, the card and the history; the card's fp16 Dice is re-measured from the fp16 weights."""
    out.mkdir(parents=True, exist_ok=True)
    load_slice_network(model, state)
    half = fp16_state(model.state_dict())
    weights = out / f"{MODEL_NAME}.pt"
    torch.save(half, weights)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in half.items()})
    fp16 = evaluate(model, val, cfg.batch_size) if len(val.images) else {}
    tta = evaluate(model, val, cfg.batch_size, tta=True) if len(val.images) else {}
    result.weights, result.card = weights, out / f"{MODEL_NAME}.card.json"
    patient_level: dict[str, object] = {"fitted": False, "why": "no negative slices to fit it on"}
    if len(val.images) < 2:
        patient_level = {"fitted": False, "why": "no held-out positive slices to fit it on"}
    elif len(negatives.images):
        pos = slice_probabilities(model, val.images, cfg.batch_size)
        neg = slice_probabilities(model, negatives.images, cfg.batch_size)
        (out / OUT_OF_FOLD).write_text(json.dumps({"positive": pos.tolist(), "negative": neg.tolist()}))
        patient_level = _patient_level(model, pos, neg, cfg.seed, weights, log)
    card = {
        "name": MODEL_NAME,
        "architecture": f"DCN (Gao et al., MedIA 2021): U-Net segmentation branch + ResNet-50 classification "
                        f"branch joined by 4 lesion-attention modules; width base {cfg.base}",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "classes": ["NonCOVID", "COVID"],
        "segmentation_classes": list(SEG_CLASSES),
        "weights_file": weights.name,
        "weights_dtype": "float16",
        "sha256": sha256_of(weights),
        "patient_level": patient_level,
        "preprocessing": {
            "input": "axial CT slice, one grey channel in [0, 1]",
            "ct_window_hu": list(EXPORT_WINDOW_HU),
            "window_note": "the window the COVID-SemiSeg JPEGs were exported with (estimated by histogram "
                           "matching, tests/benchmarks/eval_export_window.py); use it at inference too",
            "pad_to_square": True,
            "resize": cfg.size,
            "labels_resize": "nearest",
        },
        "training_data": {
            "dataset": f"COVID-SemiSeg (Inf-Net) training slices from {data_dir.name}: {n_train} train, "
                       + (f"{n_val} validation (fold {cfg.fold} of {cfg.folds}, seed {cfg.seed})"
                          if cfg.fold != ALL_SLICES else "none held out (every slice trains)"),
            "extra_slices": n_extra,
            "extra_negatives": len(negatives.images),
            "extra_source": extra_source or "none",
            "self_training": self_training or "none",
            "classification_labels": "COVID (1) = every COVID-SemiSeg slice and extra slices flagged COVID; "
                                     "NonCOVID (0) = extra slices not flagged",
            "terms": "COVID-SemiSeg: non-commercial research use only; not shipped with LungLens and not "
                     "redistributed. Phantom slices are synthetic.",
        },
        "selection": ("epoch with the best mean per-slice Dice (lesion vs background) on the held-out fold "
                      "(an optimistic estimate: chosen on the slices it is measured on)"
                      if cfg.fold != ALL_SLICES and cfg.select_best else
                      f"the last of {cfg.epochs} epochs, fixed in advance (the held-out Dice is not used to choose)"
                      if not cfg.select_best else
                      f"the last of {cfg.epochs} epochs (no held-out slices; cross-validation chose the count)"),
        "best_epoch": result.best_epoch,
        "validation_metrics": {k: round(result.metrics[k], 4) for k in _DICE_KEYS if k in result.metrics},
        "validation_metrics_fp16": {k: round(fp16[k], 4) for k in _DICE_KEYS if k in fp16},
        "validation_metrics_fp16_tta": {k: round(tta[k], 4) for k in _DICE_KEYS if k in tta},
        "metrics_note": "Dice at the model's input size on resized labels; mean over slices as Inf-Net reports; "
                        "per-class Dice pooled over the fold's pixels; _tta: averaged over the four flips of each "
                        "slice (segment-lesions does so by default)",
        "deviations": [
            f"input {cfg.size} x {cfg.size} instead of the paper's 512 x 512 (CPU training)",
            "trained on CPU",
            "from scratch: no ImageNet-pretrained ResNet-50 can be downloaded here",
            *([f"width base {cfg.base} instead of 64"] if cfg.base != 64 else []),
            f"segmentation head initialized with a background prior (bias {cfg.background_prior}); without it the "
            "Dice-only loss collapsed on small phantom lesions",
            f"augmentation chosen here: flips, 90-degree and +-{cfg.rotate_deg:g}-degree rotations, scale "
            f"{cfg.scale[0]:g}-{cfg.scale[1]:g}, elastic warp {cfg.elastic:g}, gamma "
            f"{cfg.gamma[0]:g}-{cfg.gamma[1]:g}, gain/offset {cfg.intensity:g}, noise {cfg.noise:g}",
            *([f"the shipped weights are a moving average of the trained ones (EMA, decay {cfg.ema_decay:g} per "
               "step)"] if cfg.ema_decay else []),
            *(["negative slices come from DICOM CTs (COVID-SemiSeg has none), stored as JPEG like the annotated "
               "images"] if n_extra else []),
        ],
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "trained_on": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} thread(s)",
        "training_minutes": round(seconds / 60, 1),
        "intended_use": "research and education: lesion (GGO, consolidation) segmentation and COVID slice "
                        "classification on axial CT slices; a research tool, never a diagnosis",
        "limitations": "about 50 annotated slices from one source (COVID-SemiSeg), all COVID-19 with lesions; the "
                       "classification branch's negatives are the CTs given as negatives only",
        "not_for_clinical_diagnosis": True,
    }
    result.card.write_text(json.dumps(card, indent=2))
    (out / f"{MODEL_NAME}.history.json").write_text(json.dumps(result.history, indent=2))
    log(f"best epoch {result.best_epoch}: {json.dumps(card['validation_metrics'])}")
    return result

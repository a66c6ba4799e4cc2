"""Training DeCoVNet on a folder of labelled CT volumes (layout: `inference.training.datasets.volumes`).

The paper's recipe: Adam at a constant learning rate of 1e-5, 100 epochs, batch size 1 (the slice
count varies), cross-entropy, on-the-fly augmentation: a centred in-plane crop of 0.7-1 of the
plane resized back, rotation within +-25 deg, left-right flip with p = 0.5 and a contrast factor
0.5-1.5 (the same geometry for both channels; the contrast for the CT only). As in the reference
code, the smaller class is oversampled to balance each epoch. Model selection: the epoch with the
best validation ROC AUC (then accuracy). Outputs in OUT: `<name>.pt` (fp16 when that changes no
validation probability by more than 1e-3), `<name>.card.json` (validation accuracy, sensitivity,
specificity, precision, F1, ROC AUC and the lesion-localization hit rate), `roc_val.png`,
`history.json`, `best_fp32.pt` and `checkpoint.pt` (model, optimizer, random state and history after the
last epoch: `--resume` continues from it, so a long CPU training can run in several sittings; with
`--time-limit` each sitting ends cleanly and writes the weights of the best epoch so far).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.core.device import select_device
from inference.core.metrics import binary_metrics
from inference.core.types import ProgressFn
from inference.explain.cam import grad_cam
from inference.explain.lesion_localization import LocalizationConfig, hit_rate, localize
from inference.models._api import sha256_of
from inference.models.decovnet import CAM_DEPTHS, decovnet
from inference.training.datasets.info import read_dataset_info
from inference.training.datasets.lesion_transplant import LesionPart, lesion_parts, transplant
from inference.training.datasets.volumes import (
    CLASSES,
    LESION_MASK_FILE,
    DatasetError,
    Reader,
    VolumeCase,
    find_cases,
    split_cases,
)
from inference.training.reports import fp16_state, save_atomic, write_roc_png
from inference.transforms.volume import (
    SIZE,
    WINDOW_HU,
    Z_SPACING_MM,
    PreparedVolume,
    VolumePreprocessor,
    to_ct_grid,
    to_network_grid,
)

#: where progress goes unless the caller passes its own `log` (the CLI prints it)
_log = logging.getLogger(__name__).info



@dataclass
class VolumeTrainConfig:
    epochs: int = 100  # the paper
    lr: float = 1e-5  # the paper: Adam, constant
    weight_decay: float = 0.0
    size: tuple[int, int] = SIZE
    z_spacing_mm: float = Z_SPACING_MM
    window_hu: tuple[float, float] = WINDOW_HU
    augment: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)
    rotation_deg: float = 25.0
    hflip: float = 0.5
    contrast: tuple[float, float] = (0.5, 1.5)
    balance_classes: bool = True
    val_fraction: float = 0.25  # used when the folder names no split
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: leave torch's setting
    model_name: str = "decovnet"
    resume: bool = False  # continue from OUT/checkpoint.pt (written after every epoch)
    time_limit_min: float = 0.0  # stop after the epoch that passes it (0: none); the best epoch so far is kept
    # deviations for CPU training (the paper: None, 0, 0): the CT channel zeroed beyond this many network voxels
    # of the lungs (`VolumePreprocessor.lungs_only`), a linear learning-rate warm-up, gradient-norm clipping
    lungs_only: int | None = None
    warmup_steps: int = 0
    clip_norm: float = 0.0  # 0: no clipping
    # a negative training case becomes a COVID one with this probability by receiving `transplant_parts` (at least,
    # at most) lesions of the COVID cases that have a lesion mask (`inference.training.datasets.lesion_transplant`)
    transplant: float = 0.0
    transplant_parts: tuple[int, int] = (1, 11)
    steps_per_epoch: int = 0  # 0: one pass over the (balanced) training cases; else that many steps (few cases)

    def preprocessor(self) -> VolumePreprocessor:
        """The network input these settings train on (and the card records for screening)."""
        return VolumePreprocessor(self.window_hu, self.size, self.z_spacing_mm, lungs_only=self.lungs_only)

    def must_match(self) -> dict:
        """The settings a checkpoint has to share with the run that resumes it."""
        return {"size": list(self.size), "z_spacing_mm": self.z_spacing_mm, "window_hu": list(self.window_hu),
                "seed": self.seed, "val_fraction": self.val_fraction, "lr": self.lr, "weight_decay": self.weight_decay,
                "augment": self.augment, "balance_classes": self.balance_classes, "lungs_only": self.lungs_only,
                "warmup_steps": self.warmup_steps, "clip_norm": self.clip_norm, "transplant": self.transplant,
                "transplant_parts": list(self.transplant_parts), "steps_per_epoch": self.steps_per_epoch}


@dataclass
class VolumeTrainResult:
    best_epoch: int
    metrics: dict[str, float]
    localization: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    weights: Path | None = None
    card: Path | None = None


def augment(x: torch.Tensor, cfg: VolumeTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """The paper's augmentation of one (2, T, H, W) input: crop-zoom, rotation, flip (all slices alike), contrast."""
    _, _, h, w = x.shape

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen))

    scale = uniform(*cfg.crop_scale)
    theta = math.radians(uniform(-cfg.rotation_deg, cfg.rotation_deg))
    flip = -1.0 if float(torch.rand((), generator=gen)) < cfg.hflip else 1.0
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    half = torch.diag(torch.tensor([w / 2.0, h / 2.0]))  # normalised -> pixel coordinates, so rotation is rigid
    mat = scale * torch.linalg.inv(half) @ rot @ torch.diag(torch.tensor([flip, 1.0])) @ half
    theta_mat = torch.cat([mat, torch.zeros(2, 1)], dim=1).to(x)
    slices = x.permute(1, 0, 2, 3)  # (T, 2, H, W): one 2D transform for every slice
    grid = nn.functional.affine_grid(theta_mat.expand(len(slices), 2, 3), list(slices.shape), align_corners=False)
    out = nn.functional.grid_sample(slices, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.permute(1, 0, 2, 3).contiguous()
    c = uniform(*cfg.contrast)
    mean = out[0].mean()
    out[0] = ((out[0] - mean) * c + mean).clamp(0.0, 1.0)
    out[1] = (out[1] > 0.5).to(out)
    return out


def prepare_case(case: VolumeCase, pre: VolumePreprocessor, reader: Reader | None = None) -> PreparedVolume:
    """The network input of one case (lungs from `segment_lungs` when the case has no mask)."""
    hu, spacing, lungs = case.load(reader)
    if lungs is None:
        lungs = _segment(hu, spacing)
    return pre(hu, spacing, lungs)


def _segment(hu: np.ndarray, spacing) -> np.ndarray:
    from inference.lungs.threshold import segment_lungs

    return segment_lungs(hu, spacing).lungs


def compact(prepared: PreparedVolume) -> PreparedVolume:
    """The same input stored as uint8 (the 8-bit CT and the 0/1 mask, times 255): a quarter of the memory."""
    return PreparedVolume((prepared.tensor * 255).round().to(torch.uint8), prepared.grid)


def network_input(prepared: PreparedVolume, device: torch.device | None = None) -> torch.Tensor:
    """(1, 2, T, H, W) float32 in [0, 1] from a prepared (or compacted) volume."""
    x = prepared.tensor
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    return x[None].to(device) if device is not None else x[None]


@torch.no_grad()
def predict_probabilities(model: nn.Module, inputs: Sequence[PreparedVolume], device: torch.device) -> np.ndarray:
    """Positive-class probability of each prepared volume (batch size 1)."""
    model.eval()
    return np.array([float(torch.softmax(model(network_input(p, device)), dim=1)[0, -1]) for p in inputs])


def train(data_dir: str | Path, out_dir: str | Path, cfg: VolumeTrainConfig | None = None, *,
          reader: Reader | None = None, log: Callable[[str], None] = _log,
          progress: ProgressFn | None = None) -> VolumeTrainResult:
    """Train on the train split, keep the epoch with the best validation ROC AUC, write weights and card."""
    cfg = cfg or VolumeTrainConfig()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    cases = find_cases(data_dir)
    splits = split_cases(cases, data_dir, cfg.val_fraction, cfg.seed)
    train_cases, val_cases = splits["train"], splits["val"]
    log(f"train {len(train_cases)} cases, val {len(val_cases)}; pre-processing")
    pre = cfg.preprocessor()
    # kept in memory as uint8; a disk cache is the next step for sets that do not fit
    x_train = [compact(prepare_case(c, pre, reader)) for c in train_cases]
    parts: list[LesionPart] = []
    donors: list[VolumeCase] = []
    if cfg.transplant > 0:
        donors = [c for c in train_cases + splits.get("donors", []) if (c.folder / LESION_MASK_FILE).is_file()]
        if not any(c.label == COVID for c in donors):
            raise DatasetError(f"{data_dir}: transplants need a COVID case with a {LESION_MASK_FILE} among the "
                               "training cases or the donors (splits.json)")
        prepared = {c.name: x for c, x in zip(train_cases, x_train)}
        parts = transplant_parts(donors, [prepared[c.name] if c.name in prepared
                                          else compact(prepare_case(c, pre, reader)) for c in donors])
        log(f"{len(parts)} lesion parts to transplant from {len(donors)} case(s)")
    x_val = [compact(prepare_case(c, pre, reader)) for c in val_cases]
    y_train = np.array([c.label for c in train_cases])
    y_val = np.array([c.label for c in val_cases])

    model = decovnet(num_classes=len(CLASSES)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    result = VolumeTrainResult(best_epoch=-1, metrics={})
    best: tuple[float, float, float] = (-math.inf, -math.inf, -math.inf)
    start = 0
    if cfg.resume and (out / CHECKPOINT).is_file():
        start, best = resume_from(out / CHECKPOINT, cfg, model, opt, gen, result, [c.name for c in val_cases])
        log(f"resumed after epoch {start} (best so far: epoch {result.best_epoch})")
    for epoch in range(start, cfg.epochs):
        model.train()
        order = epoch_order(y_train, cfg.balance_classes, gen, cfg.steps_per_epoch)
        t0, total = time.time(), 0.0
        for step, i in enumerate(order):
            x, y = network_input(x_train[i])[0], int(y_train[i])
            if y != COVID and parts and float(torch.rand((), generator=gen)) < cfg.transplant:
                count = int(torch.randint(cfg.transplant_parts[0], cfg.transplant_parts[1] + 1, (), generator=gen))
                x, y = transplant(x, parts, count, gen), COVID
            x = augment(x, cfg, gen) if cfg.augment else x
            loss = loss_fn(model(x[None].to(device)), torch.tensor([y], device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.warmup_steps:
                done = epoch * len(order) + step  # steps before this one (epochs are equally long)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, (done + 1) / cfg.warmup_steps)
            if cfg.clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            total += float(loss.detach())
            if progress is not None:
                progress((epoch + (step + 1) / len(order)) / cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs}")
        scores = predict_probabilities(model, x_val, device)
        m = binary_metrics(y_val, scores)
        m.update(epoch=epoch + 1, loss=total / len(order), seconds=time.time() - t0)
        result.history.append(m)
        log(f"epoch {epoch + 1:3d}  loss {m['loss']:.3f}  val acc {m['accuracy']:.3f}  F1 {m['f1']:.3f}  "
            f"AUC {m['roc_auc']:.3f}  ({m['seconds']:.0f} s)")
        key = (_num(m["roc_auc"]), m["accuracy"], -m["loss"])
        if key > best:
            best = key
            result.best_epoch, result.metrics = epoch + 1, m
            save_atomic({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out / "best_fp32.pt")
        save_checkpoint(out / CHECKPOINT, cfg, model, opt, gen, result, epoch + 1, best, [c.name for c in val_cases])
        if cfg.time_limit_min and time.time() - t_start > cfg.time_limit_min * 60 and epoch + 1 < cfg.epochs:
            log(f"time limit reached after epoch {epoch + 1}; `--resume` continues from here")
            break
    return finish(out, cfg, result, model, val_cases, x_val, y_train, time.time() - t_start, device,
                  reader=reader, data_dir=Path(data_dir), log=log, donors=[c.name for c in donors])


CHECKPOINT = "checkpoint.pt"
COVID = CLASSES.index("COVID")


def transplant_parts(cases: Sequence[VolumeCase], inputs: Sequence[PreparedVolume]) -> list[LesionPart]:
    """The lesion parts of the COVID cases with a lesion mask, on their network grids."""
    parts: list[LesionPart] = []
    for case, prepared in zip(cases, inputs):
        if case.label != COVID:
            continue
        mask = case.lesion_mask(prepared.grid.ct_shape)
        if mask is not None:
            parts += lesion_parts(network_input(prepared)[0, 0], to_network_grid(mask, prepared.grid))
    return parts


def save_checkpoint(path: Path, cfg: VolumeTrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                    gen: torch.Generator, result: VolumeTrainResult, epochs_done: int,
                    best: tuple[float, float, float], val_names: Sequence[str]) -> None:
    """Everything `resume_from` needs, written atomically (an interrupted save leaves the previous one)."""
    save_atomic({"epochs_done": epochs_done, "model": model.state_dict(), "optimizer": opt.state_dict(),
                  "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "best": list(best),
                  "best_epoch": result.best_epoch, "best_metrics": result.metrics, "history": result.history,
                  "settings": {**cfg.must_match(), "val_cases": list(val_names)}}, path)


def resume_from(path: Path, cfg: VolumeTrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                gen: torch.Generator, result: VolumeTrainResult,
                val_names: Sequence[str]) -> tuple[int, tuple[float, float, float]]:
    """Restore a `save_checkpoint` state; returns (epochs done, best key). DatasetError when it does not fit."""
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DatasetError(f"{path}: not a training checkpoint ({exc})") from None
    settings = dict(state.get("settings", {}))
    if settings.pop("val_cases", None) != list(val_names):
        raise DatasetError(f"{path}: its validation cases differ from this folder's split (cases added or "
                           "removed?); resume on the same data or use another --out")
    if settings != cfg.must_match():
        raise DatasetError(f"{path}: trained with {settings}, not {cfg.must_match()}; "
                           "resume with the same settings or use another --out")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    result.history = list(state["history"])
    result.best_epoch, result.metrics = int(state["best_epoch"]), dict(state["best_metrics"])
    return int(state["epochs_done"]), tuple(state["best"])  # type: ignore[return-value]


def epoch_order(labels: np.ndarray, balance: bool, gen: torch.Generator, steps: int = 0) -> list[int]:
    """Every training index once, plus (when balancing) random repeats of the smaller class, shuffled; with `steps`,
    such passes one after the other, cut to that many steps."""
    if steps:
        order: list[int] = []
        while len(order) < steps:
            order += epoch_order(labels, balance, gen)
        return order[:steps]
    idx = list(range(len(labels)))
    if balance:
        groups = [np.nonzero(labels == k)[0] for k in np.unique(labels)]
        most = max(len(g) for g in groups)
        for g in groups:
            extra = torch.randint(len(g), (most - len(g),), generator=gen).tolist()
            idx += [int(g[j]) for j in extra]
    return [idx[j] for j in torch.randperm(len(idx), generator=gen).tolist()]


def localization_hits(model: nn.Module, cases: Sequence[VolumeCase], inputs: Sequence[PreparedVolume],
                      scores: np.ndarray, device: torch.device, reader: Reader | None = None,
                      config: LocalizationConfig | None = None) -> dict[str, float]:
    """The hit rate over the COVID cases with lesion boxes that the model calls positive (the paper's), and over all.

    Keys: `hit_rate`, `hits`, `cases` (predicted positive) and `hit_rate_all_covid`, `cases_all_covid`.
    """
    covid = CLASSES.index("COVID")
    centres, boxes, positive = [], [], []
    model.eval()
    for case, prepared, p in zip(cases, inputs, scores):
        if case.label != covid or not case.lesion_boxes:
            continue
        _, maps = grad_cam(model, network_input(prepared, device), covid, CAM_DEPTHS, score="logit", scale=True)
        hu, spacing, lungs = case.load(reader)
        if lungs is None:
            lungs = _segment(hu, spacing)
        cams = {d: to_ct_grid(m[0].cpu(), prepared.grid) for d, m in maps.items()}
        centres.append(localize(hu, lungs, spacing, cams, config).centre)
        boxes.append(case.lesion_boxes)
        positive.append(p >= 0.5)
    pos_centres = [c for c, keep in zip(centres, positive) if keep]
    pos_boxes = [b for b, keep in zip(boxes, positive) if keep]
    rate = hit_rate(pos_centres, pos_boxes)
    return {"hit_rate": rate, "hits": int(round(rate * len(pos_centres))) if pos_centres else 0,
            "cases": len(pos_centres), "hit_rate_all_covid": hit_rate(centres, boxes),
            "cases_all_covid": len(centres)}


def finish(out: Path, cfg: VolumeTrainConfig, result: VolumeTrainResult, model: nn.Module,
           val_cases: Sequence[VolumeCase], x_val: Sequence[PreparedVolume], y_train: np.ndarray, seconds: float,
           device: torch.device, *, reader: Reader | None = None, data_dir: Path | None = None,
           log: Callable[[str], None] = _log, donors: Sequence[str] = ()) -> VolumeTrainResult:
    """From `out/best_fp32.pt`: weights (fp16 when lossless), hit rate, ROC plot, model card, history."""
    state = torch.load(out / "best_fp32.pt", weights_only=True)
    model.load_state_dict(state)
    scores = predict_probabilities(model, x_val, device)
    half = fp16_state(state)
    model.load_state_dict({k: v.float() for k, v in half.items()})
    lossless = bool(np.abs(predict_probabilities(model, x_val, device) - scores).max() <= 1e-3)
    if not lossless:
        model.load_state_dict(state)
    weights = out / f"{cfg.model_name}.pt"
    torch.save(half if lossless else state, weights)
    y_val = np.array([c.label for c in val_cases])
    result.weights = weights
    result.localization = localization_hits(model, val_cases, x_val, scores, device, reader)
    write_roc_png(y_val, scores, out / "roc_val.png", result.metrics["roc_auc"])
    dataset = read_dataset_info(data_dir)
    card = {
        "name": cfg.model_name,
        "architecture": "DeCoVNet (Zheng, Wang et al.): stem Conv3d(2,16) 5x7x7 + BN + ReLU + max-pool; "
                        "ResBlock-A(16,64), depth max-pool, ResBlock-B(64,128); progressive classifier of three "
                        "3D convs (64, 32, 32) with 3D max-pooling, global max pooling, FC(32, 2)",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "classes": list(CLASSES),
        "weights_file": weights.name,
        "weights_dtype": "float16" if lossless else "float32",
        "sha256": sha256_of(weights),
        "preprocessing": {**cfg.preprocessor().describe(),
                          "lung_mask": "lungs.nii.gz of the case, else segment_lungs (threshold method)"},
        "training_data": {"dataset": dataset["name"], "description": dataset["description"],
                          "cases": {c: int((y_train == i).sum()) for i, c in enumerate(CLASSES)},
                          "terms": dataset["terms"],
                          **({"transplant_donors": list(donors)} if cfg.transplant > 0 else {})},
        "selection": "epoch with the best validation ROC AUC, then accuracy",
        "best_epoch": result.best_epoch,
        "validation_metrics": {k: result.metrics[k] for k in
                               ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")},
        "validation_counts": {"cases": int(len(y_val)), "covid": int(y_val.sum())},
        "localization": {**result.localization, "method": "CAM region (res_b, clf1, clf2) overlapping the largest "
                         "3D component of 7x7 local variance most; hit = its centre inside a labelled lesion box; "
                         "hit_rate over validation COVID cases predicted positive (the paper), hit_rate_all_covid "
                         "over every validation COVID case with boxes"},
        "paper_test_metrics": {"roc_auc": 0.959},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "trained_on": f"{platform.processor() or platform.machine()}, {device.type}, torch {torch.__version__}",
        "training_minutes": round(seconds / 60, 1),
        "intended_use": "research and education: case-level triage support with lesion localization; a second look, "
                        "never a diagnosis",
        "not_for_clinical_diagnosis": True,
    }
    result.card = out / f"{cfg.model_name}.card.json"
    result.card.write_text(json.dumps(_json_safe(card), indent=2))
    (out / "history.json").write_text(json.dumps(_json_safe(result.history), indent=2))
    log(f"best epoch {result.best_epoch}: {json.dumps(card['validation_metrics'])}; "
        f"hit rate {result.localization['hit_rate']:.3f} over {result.localization['cases']} case(s)")
    return result


def _json_safe(value):
    """NaN (an undefined metric) becomes null, so the files are strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def _num(x: float) -> float:
    return -1.0 if math.isnan(x) else x

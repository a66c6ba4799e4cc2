"""Training COVID-CT-Mask-Net's segmentation model (paper 3) on radiologists' lesion masks.

Data: a folder laid out as COVID-SemiSeg (`Imgs/`, `GT-multiclass/` or `GT/`; `read_lesion_slices`); each
8-connected lesion region of at least 100 px is one instance of the class "lesion" (`lesion_instances`).

Recipe (the paper gives the network, not a from-scratch recipe; what differs from it is in the card): AdamW at
3e-4, weight decay 1e-4, a linear warm-up over the first `warmup_steps` steps, then the learning rate constant until
the last quarter of the epochs (x0.1 there); batch size 1; a fixed number of epochs (nothing is chosen on held-out
slices). The RoI head samples its training RoIs as torchvision's Mask R-CNN does (512 per image, 25 % positive at
IoU 0.5) instead of the authors' 256 at 75 % and IoU 0.75: from scratch on 50 slices, their strict matching left
the heads almost without positives (5 training slices, 200 steps: training Dice 0.26 against 0.50). SGD
(momentum 0.9, lr 0.01-0.02) had learned nothing in 320 steps (held-out Dice 0).

Augmentation (the paper uses none; with 50 slices from scratch it is needed): left-right flips, the short side
drawn from a range around `short_side`, a contrast/brightness jitter.

`cross_validate` trains k models on k folds and measures each on its held-out slices (COCO mask mAP@[.5:.95],
AP50, mean per-slice Dice of the union of detections scoring at least `score_threshold`), then one model on every
slice: the weights that ship.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher

from inference.core.device import select_device
from inference.models._api import sha256_of
from inference.models.covid_ct_mask_net import SEGMENTATION_MODEL, SHORT_SIDE, lesion_segmentation_model
from inference.training.datasets.lesion_instances import (
    MIN_INSTANCE_PX,
    InstanceSample,
    instance_sample,
    instances_of,
)
from inference.training.datasets.lesion_slices import kfold, read_lesion_slices
from inference.training.instance_metrics import dice, mask_average_precision
from inference.training.reports import fp16_state, save_atomic, write_card

MODEL_NAME = SEGMENTATION_MODEL
_log = logging.getLogger(__name__).info


@dataclass
class MaskNetTrainConfig:
    epochs: int = 36
    lr: float = 3e-4  # AdamW
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    roi_fg_iou: float = 0.5  # RoI head training: IoU for a positive (the authors': 0.75)
    roi_batch: int = 512  # RoIs sampled per image (the authors': 256)
    roi_positive_fraction: float = 0.25  # (the authors': 0.75)
    short_side: int = SHORT_SIDE  # the short side the network sees (paper: 512)
    scale_jitter: float = 0.15  # the short side drawn from short_side x [1 - j, 1 + j] in training
    hflip: float = 0.5
    contrast: tuple[float, float] = (0.8, 1.25)
    truncation: str = "T1"
    score_threshold: float = 0.5  # detections kept for the semantic mask and Dice
    folds: int = 5
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0: leave torch's setting


def build(cfg: MaskNetTrainConfig) -> MaskRCNN:
    """The segmentation model at the config's input size."""
    model = lesion_segmentation_model(2, cfg.truncation, cfg.short_side)
    model.roi_heads.proposal_matcher = Matcher(cfg.roi_fg_iou, cfg.roi_fg_iou, allow_low_quality_matches=False)
    model.roi_heads.fg_bg_sampler = BalancedPositiveNegativeSampler(cfg.roi_batch, cfg.roi_positive_fraction)
    return model


def _augmented(s: InstanceSample, cfg: MaskNetTrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, dict]:
    image, target = s.image, dict(s.target)
    if float(torch.rand((), generator=gen)) < cfg.hflip:
        w = image.shape[-1]
        image = image.flip(-1)
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
        target["boxes"], target["masks"] = boxes, target["masks"].flip(-1)
    lo, hi = cfg.contrast
    c = lo * (hi / lo) ** float(torch.rand((), generator=gen))  # log-uniform contrast about mid-grey
    b = (float(torch.rand((), generator=gen)) - 0.5) * 0.1
    image = ((image - 0.5) * c + 0.5 + b).clamp(0.0, 1.0)
    return image, target


def train_model(samples: Sequence[InstanceSample], cfg: MaskNetTrainConfig, *,
                log: Callable[[str], None] = _log) -> tuple[MaskRCNN, list[dict[str, float]]]:
    """Train a segmentation model on `samples` for `cfg.epochs` epochs; the model and the loss per epoch."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = select_device(cfg.device)
    model = build(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * len(samples)
    decay_at = int(0.75 * steps)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return cfg.lr * warm * (0.1 if step >= decay_at else 1.0)

    gen = torch.Generator().manual_seed(cfg.seed)
    sizes = [max(64, round(cfg.short_side * f)) for f in np.linspace(1 - cfg.scale_jitter, 1 + cfg.scale_jitter, 7)]
    history, step = [], 0
    for epoch in range(cfg.epochs):
        model.train()
        t0, totals = time.time(), {}
        for i in torch.randperm(len(samples), generator=gen).tolist():
            image, target = _augmented(samples[i], cfg, gen)
            model.transform.min_size = (sizes[int(torch.randint(len(sizes), (), generator=gen))],)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            losses = model([image.to(device)], [{k: v.to(device) for k, v in target.items()}])
            loss = sum(losses.values())
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"loss {float(loss.detach())} at epoch {epoch + 1}, step {step}: lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            step += 1
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
        row = {k: v / len(samples) for k, v in totals.items()}
        row.update(epoch=epoch + 1, loss=sum(row.values()), seconds=time.time() - t0)
        history.append(row)
        parts = ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in row.items() if k.startswith("loss_"))
        log(f"epoch {epoch + 1:3d}  loss {row['loss']:.3f} ({parts})  ({row['seconds']:.0f} s)")
    model.transform.min_size = (cfg.short_side,)
    return model.eval(), history


@torch.no_grad()
def predict(model: MaskRCNN, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lesion instances of one slice image (H, W) in [0, 1]: scores (P,), boxes (P, 4: x0, y0, x1, y1) and
    binary masks (P, H, W), ranked by score."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].expand(3, -1, -1).to(device)
    out = model([x])[0]
    masks = (out["masks"][:, 0] >= 0.5).cpu().numpy()
    return out["scores"].cpu().numpy(), out["boxes"].cpu().numpy(), masks


def evaluate(model: MaskRCNN, samples: Sequence[InstanceSample], labels: Sequence[np.ndarray],
             score_threshold: float = 0.5) -> dict[str, float]:
    """Mask mAP@[.5:.95], AP50, AP75 against the samples' instances, and the mean per-slice Dice of the union of
    detections scoring at least `score_threshold` against every lesion pixel (`labels` > 0)."""
    preds, truths, dices = [], [], []
    for s, lab in zip(samples, labels):
        scores, _, masks = predict(model, s.image[0].numpy())
        preds.append((scores, masks))
        truths.append(s.target["masks"].numpy().astype(bool))
        union = masks[scores >= score_threshold].any(axis=0) if len(masks) else np.zeros(lab.shape, bool)
        dices.append(dice(union, lab > 0))
    out = mask_average_precision(preds, truths)
    out["dice"] = float(np.mean(dices))
    return out


def cross_validate(data_dir: str | Path, out_dir: str | Path, cfg: MaskNetTrainConfig | None = None, *,
                   log: Callable[[str], None] = _log) -> dict[str, object]:
    """k-fold cross-validation (metrics per fold, mean and sd), then the shipped model on every slice: writes
    OUT/<MODEL_NAME>.pt (float16) and OUT/<MODEL_NAME>.card.json; returns the card."""
    cfg = cfg or MaskNetTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = read_lesion_slices(data_dir)
    samples = [instance_sample(s) for s in data.slices]
    labels = [s.labels for s in data.slices]
    t_start = time.time()
    folds = []
    for k, (tr, va) in enumerate(kfold(len(samples), cfg.folds, cfg.seed) if cfg.folds > 1 else []):
        log(f"fold {k + 1}/{cfg.folds}: {len(tr)} train, {len(va)} held out")
        model, _ = train_model([samples[i] for i in tr], cfg, log=log)
        m = evaluate(model, [samples[i] for i in va], [labels[i] for i in va], cfg.score_threshold)
        log(f"fold {k + 1}: mask mAP {m['map']:.3f}, AP50 {m['ap50']:.3f}, Dice {m['dice']:.3f}")
        folds.append(m)
        (out / "folds.json").write_text(json.dumps(folds, indent=1))
    log(f"final model: every one of the {len(samples)} slices")
    model, history = train_model(samples, cfg, log=log)
    weights = out / f"{MODEL_NAME}.pt"
    save_atomic(fp16_state(model.state_dict()), weights)
    summary = {key: {"mean": float(np.mean([f[key] for f in folds])), "sd": float(np.std([f[key] for f in folds]))}
               for key in ("map", "ap50", "ap75", "dice")} if folds else {}
    card = {
        "name": MODEL_NAME,
        "architecture": f"Mask R-CNN, ResNet18-{cfg.truncation} + one FPN level (COVID-CT-Mask-Net, paper 3)",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "classes": ["background", "lesion"],
        "weights_file": weights.name,
        "weights_dtype": "float16",
        "sha256": sha256_of(weights),
        "preprocessing": {"input": "axial CT slice as three identical channels in [0, 1] (the 8-bit export's grey "
                                   "values / 255)", "normalisation": "ImageNet mean and std (a global mean/std)",
                          "short_side": cfg.short_side, "long_side_max": 2 * cfg.short_side},
        "instances": f"8-connected lesion regions (GGO and consolidation merged) of at least {MIN_INSTANCE_PX} px",
        "training_data": {"dataset": f"COVID-SemiSeg (Inf-Net) training slices in {Path(data_dir).name}: "
                                     f"{len(samples)} slices, "
                                     f"{sum(len(instances_of(lab)) for lab in labels)} instances",
                          "terms": "COVID-SemiSeg: non-commercial research use only; not shipped with LungLens"},
        "recipe": asdict(cfg),
        "validation_metrics": {f"cv_{k}": round(v["mean"], 4) for k, v in summary.items()},
        "cross_validation": {"folds": folds, "summary": summary,
                             "note": f"{cfg.folds} folds (seed {cfg.seed}); each fold's model trained for the "
                                     f"fixed {cfg.epochs} epochs and measured once on its held-out slices; Dice "
                                     f"of the union of detections scoring >= {cfg.score_threshold}"},
    }
    write_card(out, MODEL_NAME, card, history=history, seconds=time.time() - t_start,
               intended_use="research and teaching: lesion instances on axial chest-CT slices. Not for clinical "
                            "diagnosis.")
    log(f"wrote {weights} and its card")
    return card

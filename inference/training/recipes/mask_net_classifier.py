"""Training COVID-CT-Mask-Net's three-class classifier (paper 3) on real CT slices.

The classifier is the trained segmentation model without its mask branch plus the module S
(`inference.models.covid_ct_mask_net.CovidCTMaskNet`). Data: every lung slice of real CT volumes, cropped and
windowed as the instance path sees them (the lungs' box, COVID-SemiSeg's export window), with the radiologists'
slice labels: slices labelled infected in a COVID-19 volume are class 2 (COVID-19), in a pneumonia volume class 1
(common pneumonia); every lung slice of a volume without infection is class 0 (control). Unlabelled slices of the
infected volumes are left out (a slice without lesion from a sick patient is neither). Slabs 40 mm thick are
held out in turn (`inference.training.datasets.real_slices`): every 5th slab validates.

Recipe (deviations from the paper in the card): the detector stays fixed, BatchNorm included (the paper also
trains the backbone's BatchNorm affines, 0.8 % of the trainable parameters): each slice's ranked detections are
computed once, and only S learns, on rows filled at random in rank order for every step (the authors' filling);
Adam, class-balanced cross-entropy, a fixed number of epochs.

The case answer (`case_answer`): the three-class probabilities averaged over the case's k most abnormal slices
(lowest P(control); k as screening's top-k rule), so a few infected slices are not outvoted by the healthy rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from inference.core.device import select_device
from inference.models._api import sha256_of
from inference.models.covid_ct_mask_net import CLASSES, ROI_BATCH, CovidCTMaskNet, case_answer, fill_rows
from inference.training.datasets.real_slices import RealSlices
from inference.training.reports import fp16_state, save_atomic, write_card

MODEL_NAME = "covid-ct-mask-net"
_log = logging.getLogger(__name__).info


@dataclass
class MaskNetClassifierConfig:
    epochs: int = 60
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 32
    seed: int = 0
    device: str = "auto"


def three_class_slices(covid: RealSlices, pneumonia: RealSlices, control: RealSlices) -> tuple[RealSlices, np.ndarray]:
    """The training slices and their classes (0 control, 1 pneumonia, 2 COVID-19), see the module docstring.
    `covid` and `pneumonia` hold every lung slice of their volumes with `infected` from the slice labels."""
    parts, classes = RealSlices.empty(), []
    for slices, cls in ((covid, 2), (pneumonia, 1), (control, 0)):
        keep = slices.infected if cls else np.ones(len(slices), bool)
        parts.extend(slices.subset(keep))
        classes += [cls] * int(keep.sum())
    return parts, np.array(classes, np.int64)


@torch.no_grad()
def ranked_rows(model: CovidCTMaskNet, images: Sequence[np.ndarray], device: torch.device,
                log: Callable[[str], None] = _log) -> list[torch.Tensor]:
    """Each slice's ranked valid detections (`CovidCTMaskNet.ranked_rows`), on the CPU."""
    model.eval().to(device)
    out = []
    for n, image in enumerate(images):
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].expand(3, -1, -1).to(device)
        out.append(model.ranked_rows([x])[0].cpu())
        if (n + 1) % 100 == 0:
            log(f"detections of {n + 1}/{len(images)} slices")
    return out


def _batch(rows: Sequence[torch.Tensor], idx: Sequence[int], gen: torch.Generator | None) -> torch.Tensor:
    return torch.stack([fill_rows(rows[i], ROI_BATCH, gen) for i in idx]).flatten(1)


def slice_probabilities(model: CovidCTMaskNet, rows: Sequence[torch.Tensor]) -> np.ndarray:
    """(n, 3) class probabilities from precomputed rows, filled evenly (as at inference)."""
    with torch.no_grad():
        model.s_module.eval()
        logits = model.s_module(_batch(rows, range(len(rows)), None)) if len(rows) else torch.zeros(0, 3)
    return torch.softmax(logits, dim=1).numpy()


def train_classifier(model: CovidCTMaskNet, covid: RealSlices, pneumonia: RealSlices, control: RealSlices,
                     out_dir: str | Path, cfg: MaskNetClassifierConfig | None = None, *, sources: Sequence[str] = (),
                     log: Callable[[str], None] = _log) -> dict[str, object]:
    """Train S of `model` (its detector already trained); write OUT/covid-ct-mask-net.pt (float16) and its card;
    return the card."""
    cfg = cfg or MaskNetClassifierConfig()
    torch.manual_seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    device = select_device(cfg.device)
    slices, classes = three_class_slices(covid, pneumonia, control)
    if len(slices) == 0 or len(np.unique(classes[~slices.val])) < len(CLASSES):
        raise ValueError("the classifier needs training slices of all three classes (COVID-19 and pneumonia "
                         "volumes with infected slices, and volumes without infection)")
    log(f"{len(slices)} slices ({np.bincount(classes, minlength=3).tolist()} control/pneumonia/COVID-19), "
        f"{int(slices.val.sum())} held out; detections")
    rows = ranked_rows(model, slices.images, device, log)
    train_idx, val_idx = np.flatnonzero(~slices.val), np.flatnonzero(slices.val)
    counts = np.bincount(classes[train_idx], minlength=3).astype(np.float64)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(counts.sum() / (3 * counts), dtype=torch.float32))
    s = model.s_module.cpu().train()
    opt = torch.optim.Adam(s.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    for epoch in range(cfg.epochs):
        s.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            loss = loss_fn(s(_batch(rows, idx, gen)), torch.from_numpy(classes[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch + 1, "loss": total / len(order)}
        if len(val_idx):
            p = slice_probabilities(model, [rows[i] for i in val_idx])
            row["val_accuracy"] = float((p.argmax(1) == classes[val_idx]).mean())
        history.append(row)
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:
            log(f"epoch {epoch + 1:3d}  loss {row['loss']:.3f}  held-out accuracy {row.get('val_accuracy', 0):.3f}")
    metrics = _held_out(model, rows, classes, val_idx)
    cases = _case_answers(model, covid, pneumonia, control, device, log)
    weights = out / f"{MODEL_NAME}.pt"
    model.cpu()
    save_atomic(fp16_state(model.state_dict()), weights)
    card = {
        "name": MODEL_NAME,
        "architecture": "COVID-CT-Mask-Net (paper 3): the segmentation model's ResNet18-T1 + one FPN level, RPN "
                        f"and box head, a fixed batch of {ROI_BATCH} ranked detections, module S 640-512-512-3",
        "classes": list(CLASSES),
        "weights_file": weights.name,
        "weights_dtype": "float16",
        "sha256": sha256_of(weights),
        "training_data": {"dataset": f"{len(slices)} lung slices of {len(sources)} real CT volumes, labelled by "
                                     "the radiologists' slice labels",
                          "slices": {"total": len(slices), "held_out": int(slices.val.sum()),
                                     "per_class": dict(zip(CLASSES, np.bincount(classes, minlength=3).tolist()))},
                          "volumes": list(sources)},
        "recipe": asdict(cfg),
        "validation_metrics": held_out_figures(metrics),
        "held_out_slabs": metrics,
        "case_answers_note": "every lung slice of each training volume (training and held-out slabs mixed): not an "
                             "independent estimate",
        "case_answers": cases,
    }
    write_card(out, MODEL_NAME, card, history=history, seconds=time.time() - t0,
               intended_use="research and teaching: a three-class answer (control, common pneumonia, COVID-19) "
                            "for chest-CT slices and volumes. Not for clinical diagnosis.")
    log(f"wrote {weights} and its card")
    return card


def _held_out(model: CovidCTMaskNet, rows: Sequence[torch.Tensor], classes: np.ndarray,
              val_idx: np.ndarray) -> dict[str, object]:
    if len(val_idx) == 0:
        return {}
    p = slice_probabilities(model, [rows[i] for i in val_idx])
    y, pred = classes[val_idx], p.argmax(1)
    confusion = np.zeros((3, 3), np.int64)
    np.add.at(confusion, (y, pred), 1)
    recall = {c: (float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None)
              for k, c in enumerate(CLASSES)}
    return {"slices": int(len(val_idx)), "accuracy": float((pred == y).mean()), "sensitivity": recall,
            "confusion_rows_true_cols_predicted": confusion.tolist()}


def _case_answers(model: CovidCTMaskNet, covid: RealSlices, pneumonia: RealSlices, control: RealSlices,
                  device: torch.device, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    answers = {}
    for part in (covid, pneumonia, control):
        for case in dict.fromkeys(part.case.tolist()):
            mine = part.subset(part.case == case)
            p = slice_probabilities(model, ranked_rows(model, mine.images, device, log))
            answers[str(case)] = {k: round(v, 4) for k, v in case_answer(p).items()}
    return answers


def held_out_figures(metrics: dict) -> dict[str, float]:
    """The held-out slabs' accuracy and per-class sensitivity as flat numbers (a class with no held-out slice has
    none), as every model card's `validation_metrics`."""
    if not metrics:  # no held-out slab
        return {}
    out = {"held_out_accuracy": round(float(metrics["accuracy"]), 4)}
    out.update({f"held_out_sensitivity_{name}": round(float(v), 4)
                for name, v in metrics["sensitivity"].items() if v is not None})
    return out

"""Training the 2D lung U-Net on pseudo-labels from the threshold method (DeCoVNet's recipe, paper 1).

Data: any mix of case folders in `inference.training.datasets.volumes`'s layout (`<case>/ct.nii.gz`; their
`lungs.nii.gz` is NOT used), single `ct.nii.gz` folders, volume files, and (through a `reader`
callable, e.g. a DICOM loader from the app) series folders. The labels of every volume are
`segment_lungs` (threshold method): 1 left lung, 2 right lung. Volumes of a folder with many cases
are sampled less often per volume: a source is drawn with probability proportional to the square
root of its volume count.

Every slice is pre-processed as at inference (`inference.lungs.unet`: window, aspect-kept resize to
128 px, air padding) once, up front. Augmentation, on the fly: lesion pasting (synthetic ground-glass
and consolidation blobs of -750..+50 HU with texture, mostly centred on the lung border and clipped to
the pseudo-label lung, the label stays lung), rotation, scale, shift, left-right flips with the two
lung labels swapped, HU shift and scale, blur and noise. Loss: cross-entropy + soft Dice of the two
lungs. AdamW with a cosine schedule; the epoch with the best validation Dice against pseudo-labels of
held-out volumes (half of them with pasted lesions) is kept. Deterministic for a seed (one thread).
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
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from inference.lungs.threshold import segment_lungs
from inference.lungs.unet import SquareFit, window
from inference.models._api import sha256_of
from inference.models.lung_unet import MODEL_NAME, SIZE, WINDOW_HU, lung_unet
from inference.training.datasets.volumes import CT_FILE, DatasetError, Reader, read_nifti
from inference.training.reports import TrainResult, fp16_state

#: where progress goes unless the caller passes its own `log` (the CLI prints it)
_log = logging.getLogger(__name__).info

HU_PER_UNIT = WINDOW_HU[1] - WINDOW_HU[0]  # windowed value 1.0 spans this many HU


@dataclass
class TrainConfig:
    epochs: int = 12
    slices_per_epoch: int = 1024
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    limit: int = 0  # at most this many volumes per multi-case folder (a seeded choice); 0: all
    val_fraction: float = 0.1  # of the volumes of each multi-case folder, held out for selection
    val_slices: int = 192  # validation slices (each once clean and once with pasted lesions)
    empty_fraction: float = 0.12  # sampled slices without lung (neck, abdomen)
    lesion_p: float = 0.6  # slices that get pasted lesions
    lesions: tuple[int, int] = (1, 3)  # blobs per lesion slice
    lesion_radius_px: tuple[float, float] = (4.0, 30.0)  # at the 128 px model size
    lesion_hu: tuple[float, float] = (-750.0, 50.0)
    border_p: float = 0.85  # blobs centred on the lung border (else anywhere in the lung)
    rotation_deg: float = 10.0
    scale: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.08
    flip_p: float = 0.5  # left-right flip, lung labels swapped
    hu_shift: float = 40.0
    hu_scale: float = 0.05
    noise_hu: float = 25.0
    blur_p: float = 0.3
    dice_weight: float = 1.0
    seed: int = 0
    threads: int = 0  # 0: leave torch's default
    time_limit_min: float = 0.0  # stop after the epoch that passes this (0: no limit)


@dataclass
class SliceSet:
    """Pre-processed slices: windowed images (N, S, S) float16, labels (N, S, S) uint8, source bookkeeping."""

    images: torch.Tensor
    labels: torch.Tensor
    volume: np.ndarray  # (N,) volume index
    has_lung: np.ndarray  # (N,) bool
    volumes: list[dict] = field(default_factory=list)  # name, source, slices


# ----------------------------------------------------------------------------------------------
# data


def find_volumes(sources: Sequence[str | Path], reader: Reader | None = None, limit: int = 0,
                 seed: int = 0) -> list[tuple[str, str, Callable[[], tuple[np.ndarray, tuple[float, float, float]]]]]:
    """(name, source, load) for every volume under `sources`; see the module docstring for what counts."""
    out = []
    for i, src in enumerate(sources):
        path = Path(src)
        if not path.exists():
            raise DatasetError(f"{path}: no such file or folder")
        if path.is_dir() and (path / CT_FILE).is_file():
            out.append((path.name, path.name, _loader(read_nifti, path / CT_FILE)))
        elif path.is_dir() and (cases := sorted(p for p in path.iterdir() if (p / CT_FILE).is_file())):
            name, used = _dataset_name(path), f"{min(limit or len(cases), len(cases))} of {len(cases)}"
            source = f"{name} ({used})" if name == path.name else f"{name} ({path.name}, {used})"
            if limit and len(cases) > limit:
                pick = np.random.default_rng([seed, i]).choice(len(cases), limit, replace=False)
                cases = [cases[j] for j in sorted(pick)]
            out += [(f"{path.name}/{c.name}", source, _loader(read_nifti, c / CT_FILE)) for c in cases]
        elif reader is not None:
            out.append((path.name, path.name, _loader(reader, path)))
        elif path.is_file():
            out.append((path.name, path.name, _loader(read_nifti, path)))
        else:
            raise DatasetError(f"{path}: no {CT_FILE} here or in its sub-folders (DICOM needs a reader)")
    return out


def _dataset_name(folder: Path) -> str:
    """The "name" in the folder's dataset.json, else the folder's name."""
    try:
        return str(json.loads((folder / "dataset.json").read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return folder.name


def _loader(read: Reader, path: Path) -> Callable[[], tuple[np.ndarray, tuple[float, float, float]]]:
    return lambda: read(path)


def prepare_volume(hu: np.ndarray, spacing: tuple[float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """A volume's slices as the net sees them (N, S, S) float16 and its pseudo-labels (N, S, S) uint8."""
    labels = segment_lungs(hu, spacing).label_map()
    fit = SquareFit.of(hu.shape[1:], spacing[1:], SIZE)  # type: ignore[arg-type]
    images, labs = [], []
    for k0 in range(0, hu.shape[0], 32):
        x = window(torch.from_numpy(np.ascontiguousarray(hu[k0:k0 + 32])))[:, None]
        images.append(fit.to_model(x)[:, 0].half())
        onehot = F.one_hot(torch.from_numpy(labels[k0:k0 + 32]).long(), 3).permute(0, 3, 1, 2).float()
        lab = fit.to_model(onehot)
        lab[:, 0] += (lab.sum(dim=1) < 0.5).float()  # the padding is background
        labs.append(lab.argmax(dim=1).to(torch.uint8))
    return torch.cat(images), torch.cat(labs)


def load_slices(volumes, log: Callable[[str], None] = _log) -> SliceSet:
    """Read and pre-process every volume of `volumes` (from `find_volumes`)."""
    images, labels, vol_idx, info = [], [], [], []
    for n, (name, source, load) in enumerate(volumes):
        t0 = time.time()
        hu, spacing = load()
        img, lab = prepare_volume(hu, spacing)
        images.append(img)
        labels.append(lab)
        vol_idx.append(np.full(len(img), n))
        info.append({"name": name, "source": source, "slices": int(len(img)), "shape": list(hu.shape),
                     "spacing": [round(float(s), 3) for s in spacing]})
        log(f"  {name}: {hu.shape}, lung on {int((lab > 0).any(dim=(1, 2)).sum())} slices "
            f"({time.time() - t0:.1f} s)")
    lab_all = torch.cat(labels)
    return SliceSet(torch.cat(images), lab_all, np.concatenate(vol_idx),
                    (lab_all > 0).flatten(1).sum(dim=1).numpy() >= 20, info)


# ----------------------------------------------------------------------------------------------
# augmentation


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """A smooth random field (about unit SD) on a size x size grid."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return ndimage.zoom(coarse, size / cells, order=1)[:size, :size]


def paste_lesions(image: np.ndarray, label: np.ndarray, cfg: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """`image` (windowed, S x S) with synthetic GGO/consolidation blobs inside the lungs of `label`.

    Blobs are ellipses with a bumpy outline, mostly centred on a lung's border pixel, clipped to that
    lung; below -300 HU they raise only darker pixels (ground glass), above it they replace the lung
    (consolidation). Value = level + smooth texture + noise, with a soft rim.
    """
    out = image.astype(np.float32, copy=True)
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(cfg.lesions[0], cfg.lesions[1] + 1))):
        sides = [v for v in (1, 2) if (label == v).sum() >= 30]
        if not sides:
            break
        lung = label == sides[int(rng.integers(len(sides)))]
        pool = lung & ~ndimage.binary_erosion(lung) if rng.uniform() < cfg.border_p else lung
        ys, xs = np.nonzero(pool)
        j = int(rng.integers(len(ys)))
        r = rng.uniform(*cfg.lesion_radius_px)
        ry, rx, ang = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3), rng.uniform(0, np.pi)
        dy, dx = yy - ys[j], xx - xs[j]
        u = (dx * np.cos(ang) + dy * np.sin(ang)) / rx
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / ry
        f = 1.0 - np.sqrt(u * u + v * v) + 0.25 * _smooth_noise(rng, size, 8)
        alpha = np.clip(f / 0.12, 0.0, 1.0) * lung
        if not alpha.any():
            continue
        level = rng.uniform(*cfg.lesion_hu)
        hu = (level + rng.uniform(10, 45) * _smooth_noise(rng, size, 16)
              + rng.uniform(5, 20) * rng.standard_normal((size, size)).astype(np.float32))
        val = np.clip((hu - WINDOW_HU[0]) / HU_PER_UNIT, 0.0, 1.0)
        if level < -300.0:
            val = np.maximum(val, out)  # ground glass: vessels denser than the opacity stay visible
        out += alpha * (val - out)
    return out


def augment(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Geometric (rotation, scale, shift, flip with label swap) and intensity augmentation of a batch."""
    b, s = images.shape[0], images.shape[-1]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    theta = torch.deg2rad(uniform(-cfg.rotation_deg, cfg.rotation_deg))
    zoom = torch.exp(uniform(math.log(cfg.scale[0]), math.log(cfg.scale[1])))
    flip = torch.rand(b, generator=gen) < cfg.flip_p
    sx = torch.where(flip, -1.0, 1.0)
    mat = torch.zeros(b, 2, 3)
    mat[:, 0, 0], mat[:, 0, 1] = torch.cos(theta) / zoom * sx, -torch.sin(theta) / zoom
    mat[:, 1, 0], mat[:, 1, 1] = torch.sin(theta) / zoom * sx, torch.cos(theta) / zoom
    mat[:, 0, 2], mat[:, 1, 2] = uniform(-cfg.shift, cfg.shift), uniform(-cfg.shift, cfg.shift)
    grid = F.affine_grid(mat, (b, 1, s, s), align_corners=False)
    x = F.grid_sample(images[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="zeros",
                      align_corners=False)[:, 0].long()
    swapped = torch.where(y == 1, 2, torch.where(y == 2, 1, y))
    y = torch.where(flip[:, None, None], swapped, y)  # a mirrored left lung is on the right
    blur = (torch.rand(b, generator=gen) < cfg.blur_p).float() * uniform(0.2, 0.7)
    x = x + blur[:, None, None, None] * (F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x)
    gain = uniform(1 - cfg.hu_scale, 1 + cfg.hu_scale)[:, None, None, None]
    offset = (uniform(-cfg.hu_shift, cfg.hu_shift) / HU_PER_UNIT)[:, None, None, None]
    noise = (uniform(0, cfg.noise_hu) / HU_PER_UNIT)[:, None, None, None]
    x = x * gain + offset + noise * torch.randn(x.shape, generator=gen)
    return x.clamp(0.0, 1.0), y


def loss_fn(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy + soft Dice loss of the two lung classes (over the batch)."""
    ce = F.cross_entropy(logits, target)
    prob = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    dice = (2 * inter + 1.0) / (prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3)) + 1.0)
    return ce + dice_weight * (1.0 - dice.mean())


# ----------------------------------------------------------------------------------------------
# training


def _split(volumes: list, cfg: TrainConfig) -> tuple[list, list]:
    """Hold out `val_fraction` of each multi-case source (seeded); single volumes always train."""
    by_source: dict[str, list[int]] = {}
    for i, (_, source, _) in enumerate(volumes):
        by_source.setdefault(source, []).append(i)
    val: set[int] = set()
    rng = np.random.default_rng([cfg.seed, 7])
    for idx in by_source.values():
        if len(idx) >= 5:
            n = max(1, int(round(cfg.val_fraction * len(idx))))
            val |= {idx[j] for j in rng.choice(len(idx), n, replace=False)}
    return [v for i, v in enumerate(volumes) if i not in val], [v for i, v in enumerate(volumes) if i in val]


def _val_batches(data: SliceSet, cfg: TrainConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation batches: lung slices, each clean and with deterministic pasted lesions."""
    rng = np.random.default_rng([cfg.seed, 11])
    idx = np.flatnonzero(data.has_lung)
    idx = np.sort(rng.choice(idx, min(cfg.val_slices, len(idx)), replace=False))
    clean = data.images[idx].float()
    pasted = torch.from_numpy(np.stack([paste_lesions(data.images[i].float().numpy(), data.labels[i].numpy(),
                                                      cfg, rng) for i in idx]))
    lab = data.labels[idx].long()
    x, y = torch.cat([clean, pasted]), torch.cat([lab, lab])
    return [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]


@torch.no_grad()
def evaluate(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Dice of each lung against the pseudo-labels, on the clean and the lesion-pasted half."""
    model.eval()
    preds = torch.cat([model(x[:, None].contiguous(memory_format=torch.channels_last)).argmax(dim=1)
                       for x, _ in batches])
    target = torch.cat([y for _, y in batches])
    half = len(target) // 2
    out = {}
    for part, sl in (("clean", slice(0, half)), ("lesions", slice(half, None))):
        for v, side in ((1, "left"), (2, "right")):
            p, t = preds[sl] == v, target[sl] == v
            out[f"dice_{side}_{part}"] = float(2 * (p & t).sum() / max(int(p.sum() + t.sum()), 1))
    out["dice_mean"] = float(np.mean(list(out.values())))
    out["agreement"] = float((preds == target).float().mean())
    return out


def train(sources: Sequence[str | Path], out_dir: str | Path, cfg: TrainConfig | None = None, *,
          reader: Reader | None = None, log: Callable[[str], None] = _log) -> TrainResult:
    """Train on pseudo-labels of every volume under `sources`; write weights, card and history to `out_dir`."""
    cfg = cfg or TrainConfig()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(sources, Path(out_dir), cfg, reader, log)
    finally:
        torch.set_num_threads(threads)


def _train(sources: Sequence[str | Path], out: Path, cfg: TrainConfig, reader: Reader | None,
           log: Callable[[str], None]) -> TrainResult:
    t_start = time.time()
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    volumes = find_volumes(sources, reader, cfg.limit, cfg.seed)
    train_vols, val_vols = _split(volumes, cfg)
    if not train_vols or not val_vols:
        raise DatasetError("need at least 5 volumes in one folder of cases (some are held out for validation)")
    log(f"{len(train_vols)} training and {len(val_vols)} validation volumes; pseudo-labels (threshold method)")
    data = load_slices(train_vols, log)
    val = load_slices(val_vols, log)
    val_batches = _val_batches(val, cfg)
    log(f"{len(data.images)} training slices ({int(data.has_lung.sum())} with lung), "
        f"{len(val_batches)} validation batches; prepared in {time.time() - t_start:.0f} s")

    model = lung_unet().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, cfg.slices_per_epoch // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    rng = np.random.default_rng([cfg.seed, 3])
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = _Sampler(data, rng, cfg)
    result = TrainResult(best_epoch=-1, metrics={})
    best = -1.0
    for epoch in range(cfg.epochs):
        model.train()
        t0, running = time.time(), 0.0
        for step in range(steps_per_epoch):
            k = epoch * steps_per_epoch + step
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (k + 1) / cfg.warmup_steps) * 0.5 * (1 + math.cos(math.pi * k / total))
            x, y = sampler.batch(cfg.batch_size)
            x, y = augment(x, y, cfg, gen)
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y, cfg.dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += float(loss.detach())
        m = evaluate(model, val_batches)
        m.update(epoch=epoch + 1, loss=running / steps_per_epoch, seconds=time.time() - t0)
        result.history.append(m)
        log(f"epoch {epoch + 1:3d}  loss {m['loss']:.4f}  val Dice clean {m['dice_left_clean']:.4f}/"
            f"{m['dice_right_clean']:.4f}  with lesions {m['dice_left_lesions']:.4f}/{m['dice_right_lesions']:.4f}"
            f"  ({m['seconds']:.0f} s, {(time.time() - t_start) / 60:.1f} min)")
        if m["dice_mean"] > best:
            best = m["dice_mean"]
            result.best_epoch, result.metrics = epoch + 1, m
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out / "best_fp32.pt")
        if cfg.time_limit_min and time.time() - t_start > 60 * cfg.time_limit_min:
            log(f"time limit of {cfg.time_limit_min} min reached after epoch {epoch + 1}")
            break
    return finish(out, cfg, result, model, val_batches, data.volumes, val.volumes, time.time() - t_start, log=log)


class _Sampler:
    """Draws training slices: source ~ sqrt(its volume count), then a volume, then a slice; pastes lesions."""

    def __init__(self, data: SliceSet, rng: np.random.Generator, cfg: TrainConfig) -> None:
        self.data, self.rng, self.cfg = data, rng, cfg
        sources = sorted({v["source"] for v in data.volumes})
        vol_source = np.array([sources.index(v["source"]) for v in data.volumes])
        counts = np.bincount(vol_source, minlength=len(sources)).astype(float)
        weight = np.sqrt(counts) / counts  # per volume
        self.p_vol = weight[vol_source] / weight[vol_source].sum()
        self.lung = [np.flatnonzero((data.volume == i) & data.has_lung) for i in range(len(data.volumes))]
        self.empty = [np.flatnonzero((data.volume == i) & ~data.has_lung) for i in range(len(data.volumes))]

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(n):
            v = int(self.rng.choice(len(self.p_vol), p=self.p_vol))
            empty = len(self.empty[v]) and self.rng.uniform() < self.cfg.empty_fraction
            pool = self.empty[v] if empty else self.lung[v]
            if not len(pool):
                pool = self.empty[v]
            i = int(pool[self.rng.integers(len(pool))])
            img, lab = self.data.images[i].float().numpy(), self.data.labels[i].numpy()
            if self.data.has_lung[i] and self.rng.uniform() < self.cfg.lesion_p:
                img = paste_lesions(img, lab, self.cfg, self.rng)
            images.append(torch.from_numpy(np.ascontiguousarray(img)))
            labels.append(torch.from_numpy(lab))
        return torch.stack(images), torch.stack(labels)


def finish(out: Path, cfg: TrainConfig, result: TrainResult, model: nn.Module,
           val_batches: list[tuple[torch.Tensor, torch.Tensor]], train_volumes: list[dict], val_volumes: list[dict],
           seconds: float, *, log: Callable[[str], None] = _log) -> TrainResult:
    """Write the shipped files from `out/best_fp32.pt`: weights (fp16 when lossless on val), card, history."""
    state = torch.load(out / "best_fp32.pt", weights_only=True)
    half = fp16_state(state)
    model.load_state_dict({k: v.float() for k, v in half.items()})
    fp16 = evaluate(model, val_batches)
    lossless = abs(fp16["dice_mean"] - result.metrics["dice_mean"]) < 1e-4 and abs(
        fp16["agreement"] - result.metrics["agreement"]) < 1e-4
    weights = out / f"{MODEL_NAME}.pt"
    torch.save(half if lossless else state, weights)
    result.weights = weights
    sources: dict[str, dict] = {}
    for v in train_volumes:
        s = sources.setdefault(v["source"], {"name": v["source"], "volumes": 0, "slices": 0})
        s["volumes"] += 1
        s["slices"] += v["slices"]
    card = {
        "name": MODEL_NAME,
        "architecture": "2D U-Net (Ronneberger et al.): 4 levels of two 3x3 conv + BN + ReLU (16-32-64-128 "
                        "channels), 2x2 max-pooling, 2x2 transposed-conv up, skip concatenation, 1x1 head",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "classes": ["background", "left lung", "right lung"],
        "weights_file": weights.name,
        "weights_dtype": "float16" if lossless else "float32",
        "sha256": sha256_of(weights),
        "preprocessing": {"input": "each axial slice, one grey channel", "ct_window_hu": list(WINDOW_HU),
                          "resize": f"physical aspect kept, longer side {SIZE} px, centred, air-padded square",
                          "output": "logits cropped, resized bilinearly to the CT grid, argmax",
                          "postprocessing": "per lung the largest 26-connected 3-D component (>= 2 mL), "
                                            "axial hole filling"},
        "training_data": {
            "dataset": "pseudo-labels from the threshold method (segment_lungs) on "
                       + ", ".join(f"{s['name']} ({s['volumes']} vol.)" for s in sources.values()),
            "labels": "segment_lungs (inference.lungs.threshold, threshold method) on every training volume; "
                      "no ground-truth mask was used for training",
            "terms": "phantoms are synthetic; real series are used under their own terms (research use only) and "
                     "are not redistributed with LungLens",
            "sources": list(sources.values()),
            "validation_volumes": [v["name"] for v in val_volumes],
        },
        "selection": "epoch with the best mean Dice against pseudo-labels of the held-out volumes' slices, each "
                     "slice clean and with pasted lesions",
        "best_epoch": result.best_epoch,
        "validation_metrics": {k: round(result.metrics[k], 4) for k in
                               ("dice_left_clean", "dice_right_clean", "dice_left_lesions", "dice_right_lesions")},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "trained_on": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} thread(s)",
        "training_minutes": round(seconds / 60, 1),
        "intended_use": "research and education: the lung mask of DeCoVNet's pipeline and of screening; a "
                        "research tool, never a diagnosis",
        "limitations": "trained on pseudo-labels of a threshold method (its errors are learned too) from synthetic "
                       "phantoms and a few real research-use-only series; no trachea/bronchi output; not validated "
                       "against expert masks on real scans",
        "not_for_clinical_diagnosis": True,
    }
    (out / f"{MODEL_NAME}.card.json").write_text(json.dumps(card, indent=2))
    (out / "history.json").write_text(json.dumps(result.history, indent=2))
    result.card = out / f"{MODEL_NAME}.card.json"
    log(f"best epoch {result.best_epoch}: {json.dumps(card['validation_metrics'])}; weights {card['weights_dtype']}")
    return result

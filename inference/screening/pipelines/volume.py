"""Screening a CT volume with a 3D model (DeCoVNet, paper 1): P(COVID), CAM heat map, localized lesion, burden.

Same conventions as `inference.screening.run.run`: HU (z, y, x) in the canonical orientation, spacing in mm,
`progress(fraction, message)` with non-decreasing fractions, `Cancelled` when `cancel()` is True.

Pipeline:
1. lungs: the given label map, else `segment_lungs_by(lungs, ...)` ("threshold" or "unet");
2. the `VolumePreprocessor` of the model's registry entry (`transforms`: window, in-plane size and z spacing;
   never assumed here);
3. one forward pass with Grad-CAM at the entry's depths (`cam_layers.grad_cam`, DeCoVNet's `CAM_DEPTHS`):
   P(COVID) and one map per depth, each scaled to [0, 1];
4. heat map: the voxel-wise mean of the depths' maps on the network grid, put on the CT grid by
   `to_ct_grid`, zero outside the lungs, rescaled so its maximum in the lungs is 1, times P(COVID);
   the mean keeps what the depths agree on (a single depth's Grad-CAM is noisy); each depth still
   competes on its own in step 5;
5. localization (the paper): `localize` on a working grid (the CT strided to about `work_spacing_mm`,
   which keeps the 7 x 7 variance window near the paper's scale and the cost near a second): R3dcc from
   the local variance, CAM regions per depth, the one overlapping R3dcc most is the lesion;
6. lesion mask: the slice path's rule (`screening.steps.lesion_mask`: lung voxels of -750..+50 HU, vessels
   removed, where the heat map reaches `cam_threshold`), plus, when P(COVID) >= `positive_threshold`,
   the localized lesion's voxels of that density; labels 3 (ground glass) and 4 (consolidation);
7. burden per zone and severity by `screening.steps.zone_burden`, as for slice models.

A volume model has no per-slice probabilities: `slice_indices` and `slice_probabilities` are empty.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from inference.core.prediction import Prediction
from inference.core.types import CancelFn, ProgressFn
from inference.explain.lesion_localization import LocalizationConfig, localize
from inference.inferers.volume import VolumeClassifier
from inference.models._api import ModelSpec
from inference.screening.config import ScreeningConfig
from inference.screening.steps import (
    cancel_checker,
    lesion_ml_by_kind,
    lesion_step,
    lung_step,
    progress_reporter,
    zone_burden,
)
from inference.transforms.volume import VolumeGrid, to_ct_grid

__all__ = ["AGGREGATION", "VolumeClassifier", "VolumeScreeningConfig", "run_volume", "sample_map", "work_steps"]

AGGREGATION = "volume (one 3D pass)"


@dataclass(frozen=True)
class VolumeScreeningConfig:
    lesions: ScreeningConfig = field(default_factory=ScreeningConfig)  # HU ranges, vessel opening, cam_threshold
    localization: LocalizationConfig = field(default_factory=LocalizationConfig)
    work_spacing_mm: tuple[float, float] = (2.0, 1.4)  # (z, in-plane) of the localization grid; coarser CTs as they are
    positive_threshold: float = 0.5  # the localized lesion joins the lesion mask from this P(COVID) on


def run_volume(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    model: str | ModelSpec | VolumeClassifier = "decovnet",
    *,
    device: str = "auto",
    lungs: str = "threshold",
    lung_labels: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    config: VolumeScreeningConfig | ScreeningConfig | None = None,
) -> Prediction:
    """Screen one CT volume with a 3D model (see the module docstring); the GUI calls it from a worker.

    Args:
        lungs: lung mask method when `lung_labels` is None ("threshold" or "unet").
        config: a `VolumeScreeningConfig`, or a `ScreeningConfig` for the lesion-mask thresholds alone.

    Raises:
        Cancelled: `cancel()` returned True.
        ValueError: the volume is not 3D, or the model is not a volume model.
    """
    cfg = config if isinstance(config, VolumeScreeningConfig) else VolumeScreeningConfig(
        lesions=config or ScreeningConfig())
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")

    report, check = progress_reporter(progress), cancel_checker(cancel)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    clf = model if isinstance(model, VolumeClassifier) else VolumeClassifier(model, device=device)
    method = clf.check_heatmap(cfg.lesions.heatmap)
    timings["model_load"] = time.perf_counter() - t0
    lung_labels = lung_step(volume, spacing, lungs, lung_labels, report, cancel, timings)
    in_lungs = lung_labels > 0
    check()

    report(0.3, "preparing the volume")
    t = time.perf_counter()
    prepared = clf.preprocessor(volume, spacing, in_lungs)
    timings["preprocessing"] = time.perf_counter() - t
    t = time.perf_counter()
    p, maps = clf.predict_with_cam(prepared.tensor, cancel,
                                   lambda f, m: report(0.32 + 0.4 * f, f"{clf.spec.name}: {m}"))
    timings["classification"] = time.perf_counter() - t
    check()

    report(0.75, "heat map")
    t = time.perf_counter()
    heat = to_ct_grid(torch.stack(list(maps.values())).mean(dim=0), prepared.grid)
    crop = tuple(slice(a, b) for a, b in prepared.grid.box)  # to_ct_grid leaves zeros outside the crop
    heat[crop] *= in_lungs[crop]
    peak = float(heat[crop].max())
    if peak > 0:
        heat[crop] *= p / peak
    timings["heatmap"] = time.perf_counter() - t
    check()

    report(0.8, "localizing the lesion")
    t = time.perf_counter()
    region, info = _localize(volume, spacing, in_lungs, maps, prepared.grid, cfg)
    positive = p >= cfg.positive_threshold
    info["positive"] = bool(positive)
    timings["localization"] = time.perf_counter() - t
    check()

    report(0.9, "lesion mask and burden")
    t = time.perf_counter()
    hot = heat
    if positive and region is not None:
        hot = heat.copy()
        hot[region] = 1.0
    lesions, lesion_method = lesion_step(volume, spacing, in_lungs, hot, cfg.lesions, str(clf.device), report, cancel)
    zones = zone_burden(lung_labels, lesions > 0, spacing)
    timings["lesions"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    report(1.0, "done")
    classes = clf.spec.classes
    return Prediction(
        model=clf.spec.name, classes=classes, probabilities={classes[0]: 1 - p, classes[-1]: p},
        slice_indices=np.zeros(0, np.int64), slice_probabilities=np.zeros(0, np.float32), heatmap=heat,
        lung_mask=lung_labels.astype(np.uint8), lesion_mask=lesions, zones=zones, aggregation=AGGREGATION,
        device=clf.engine, timings=timings, input_kind="volume", heatmap_method=method,
        lesion_ml_by_kind=lesion_ml_by_kind(lesions, spacing), lesion_method=lesion_method,
        lesion_centre=info.get("centre") if positive else None, localization=info,
    )


def work_steps(spacing: Sequence[float], target_mm: tuple[float, float]) -> tuple[int, int, int]:
    """Integer strides (z, y, x) that bring `spacing` near `target_mm` (z, in-plane); 1 where already coarser."""
    return tuple(max(1, int(round(t / float(s)))) for s, t in zip(spacing, (target_mm[0], target_mm[1],
                                                                             target_mm[1])))  # type: ignore[return-value]


def sample_map(values: np.ndarray | torch.Tensor, grid: VolumeGrid, steps: Sequence[int],
               box: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
    """A network-grid map at every `steps`-th CT voxel of `box` (default: the whole CT), i.e.
    `to_ct_grid(values, grid)[z0:z1:sz, y0:y1:sy, x0:x1:sx]` without the CT-sized array in between
    (separable linear weights, align_corners=False as `to_ct_grid`; 0 outside the network's crop)."""
    v = torch.as_tensor(values, dtype=torch.float32)
    if tuple(v.shape) != grid.shape:
        raise ValueError(f"map shape {tuple(v.shape)} does not match the network grid {grid.shape}")
    box = box if box is not None else tuple((0, n) for n in grid.ct_shape)
    mz, my, mx = (_interp_matrix(np.arange(a, b, s), crop, size)
                  for (a, b), s, crop, size in zip(box, steps, grid.box, grid.shape))
    v = torch.matmul(my, v @ mx.T)  # (T, b, c): x, then y
    return (mz @ v.reshape(len(v), -1)).reshape(len(mz), len(my), len(mx)).numpy()


def _interp_matrix(idx: np.ndarray, crop: tuple[int, int], size: int) -> torch.Tensor:
    """Rows: CT indices `idx`; columns: network indices; the weights of 1D linear interpolation."""
    lo, hi = crop
    out = np.zeros((len(idx), size), np.float32)
    inside = (idx >= lo) & (idx < hi)
    src = np.maximum((idx[inside] - lo + 0.5) * size / (hi - lo) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(int), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    w1 = (src - i0).astype(np.float32)
    rows = np.nonzero(inside)[0]
    np.add.at(out, (rows, i0), 1.0 - w1)
    np.add.at(out, (rows, i1), w1)
    return torch.from_numpy(out)


def _localize(volume: np.ndarray, spacing, lungs: np.ndarray, maps: dict[str, torch.Tensor], grid: VolumeGrid,
              cfg: VolumeScreeningConfig) -> tuple[np.ndarray | None, dict[str, object]]:
    """The paper's localization on the strided working grid (inside the network's crop, the lungs' box: nothing
    to find outside it); the lesion region back on the CT grid and its facts."""
    steps = work_steps(spacing, cfg.work_spacing_mm)
    sl = tuple(slice(a, b, s) for (a, b), s in zip(grid.box, steps))
    work_spacing = tuple(float(s) * k for s, k in zip(spacing, steps))
    cams = {d: sample_map(m, grid, steps, grid.box) for d, m in maps.items()}
    loc = localize(volume[sl], lungs[sl], work_spacing, cams, cfg.localization)
    info: dict[str, object] = {"method": "CAM region overlapping the largest 3D component of 7x7 local variance "
                                         "most (DeCoVNet)", "work_steps": list(steps), "depth": loc.depth}
    if loc.centre is None:
        return None, info
    block, dest = _upsample(loc.lesion_mask, steps, [a for a, _ in grid.box], volume.shape)
    block &= lungs[dest]
    if not block.any():
        return None, info
    region = np.zeros(volume.shape, bool)
    region[dest] = block
    idx = [a + d.start for a, d in zip(np.nonzero(block), dest)]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    info.update(centre=tuple(round(float(a.mean()), 2) for a in idx),
                bbox=[[int(a.min()), int(a.max()) + 1] for a in idx],
                region_ml=round(len(idx[0]) * voxel_ml, 3),
                overlap_ml=round(loc.overlap_voxels * float(np.prod(work_spacing)) / 1000.0, 3))
    return region, info


def _upsample(mask: np.ndarray, steps: Sequence[int], origin: Sequence[int],
              shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """A mask sampled at CT voxels origin + k * steps, back at full resolution around its voxels: the block and
    where it lies on the CT grid (each sample covers the `steps` voxels from itself on)."""
    hit = np.nonzero(mask)
    lo = [int(h.min()) for h in hit]
    block = mask[tuple(slice(a, int(h.max()) + 1) for a, h in zip(lo, hit))]
    for axis, s in enumerate(steps):
        block = np.repeat(block, s, axis=axis)
    start = [o + a * s for o, a, s in zip(origin, lo, steps)]
    dest = tuple(slice(a, min(n, a + b)) for a, n, b in zip(start, shape, block.shape))
    return block[tuple(slice(0, d.stop - d.start) for d in dest)].copy(), dest

"""The steps both screening pipelines share: progress and cancel, lungs, the slice crop, the lesion mask,
and the burden per lung zone."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from inference.core.prediction import ZoneInvolvement, zone_score
from inference.core.types import CancelFn, Cancelled, InferenceError, ProgressFn
from inference.inferers.lesions import LesionSegmenter
from inference.lungs.select import segment_lung_labels
from inference.models._api import WeightsError
from inference.screening.config import ScreeningConfig
from inference.transforms.common import LUNG_WINDOW, HUWindow
from inference.transforms.crop import lung_crop_box


def progress_reporter(progress: ProgressFn | None) -> ProgressFn:
    """`progress` with the fraction clamped to [0, 1] (a no-op when None)."""

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(min(max(fraction, 0.0), 1.0), message)

    return report


def cancel_checker(cancel: CancelFn | None) -> Callable[[], None]:
    """A call that raises `Cancelled` once `cancel()` is True (a no-op when None)."""

    def check() -> None:
        if cancel is not None and cancel():
            raise Cancelled("analysis cancelled")

    return check


def lung_step(volume: np.ndarray, spacing, method: str, lung_labels: np.ndarray | None, report: ProgressFn,
              cancel: CancelFn | None, timings: dict[str, float]) -> np.ndarray:
    """The first step of every screening pipeline: the given lung labels, else `segment_lung_labels` by `method`
    (progress 0.02-0.28), timed as `timings["lung_segmentation"]`."""
    report(0.02, "segmenting the lungs")
    t = time.perf_counter()
    if lung_labels is None:
        lung_labels = segment_lung_labels(volume, spacing, method, progress=lambda f, m: report(0.02 + 0.26 * f, m),
                                          cancel=cancel)
    timings["lung_segmentation"] = time.perf_counter() - t
    return lung_labels


def lungs_to_assess(lung_labels: np.ndarray) -> np.ndarray:
    """The lung mask of `lung_labels` for a pipeline that refuses a volume without lungs (the lesion and instance
    paths: nothing else would stop them before a meaningless answer).

    Raises:
        InferenceError: no lung voxel at all.
    """
    in_lungs = lung_labels > 0
    if not in_lungs.any():
        raise InferenceError("no lung found in this volume: not assessable (is it a chest CT?)")
    return in_lungs


@dataclass(frozen=True)
class SlicePlan:
    """Which axial slices a slice model sees, and the crop it sees of them.

    lung_slices: every slice with at least `ScreeningConfig.min_lung_area_mm2` of lung (ascending);
    classified: those about `slice_gap_mm` apart (every `step`-th), the ones screening classifies;
    box: the in-plane lung crop, one for all slices (`lung_crop_box` with the config's margin).
    """

    lung_slices: np.ndarray
    classified: np.ndarray
    step: int
    box: tuple[slice, slice]


def slice_plan(in_lungs: np.ndarray, spacing, cfg: ScreeningConfig) -> SlicePlan:
    """The slices and crop screening uses for a (z, y, x) lung mask; training sets built from CT volumes use
    it too, so the model sees the same pictures."""
    dz, dy, dx = spacing
    area = per_slice_count(in_lungs) * dy * dx
    lung_slices = np.nonzero(area >= cfg.min_lung_area_mm2)[0]
    step = max(1, round(cfg.slice_gap_mm / dz))  # classified slices about the gap apart (4 mm: 3-5 mm)
    return SlicePlan(lung_slices, lung_slices[::step], step, lung_crop_box(in_lungs, cfg.crop_margin))


def slice_image(volume: np.ndarray, index: int, box: tuple[slice, slice], window: HUWindow = LUNG_WINDOW) -> np.ndarray:
    """What a slice model sees of axial slice `index`: the lung crop in its HU `window` (the model's
    `SlicePreprocess.hu_window`; the light SqueezeNet's lung window by default), in [0, 1].

    Training sets built from CT volumes must use this too, so the model sees the same pictures.
    """
    return window(volume[index][box])


GGO_LABEL, CONSOLIDATION_LABEL = 3, 4  # the viewer's lesion labels
HU_RULE = "HU range inside the heat map"  # `lesion_mask`'s method, as prediction.json names it


@functools.lru_cache(maxsize=4)
def _segmenter(name: str, device: str, precision: str = "auto") -> LesionSegmenter | None:
    """The lesion segmenter `name` on `device`, loaded once per process; None when its weights are missing."""
    try:
        return LesionSegmenter(name, device=device, precision=precision)
    except WeightsError:
        return None


def model_lesions(volume: np.ndarray, spacing, lungs: np.ndarray, cfg: ScreeningConfig, device: str = "auto",
                  progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray | None:
    """The lesion mask (labels 3 ground glass, 4 consolidation, inside the lungs) from the lesion segmenter
    `cfg.lesion_model` (DCN's segmentation branch, trained on radiologists' masks), or None when none is set
    or its weights are not installed (the caller then uses `lesion_mask`)."""
    seg = _segmenter(cfg.lesion_model, device, cfg.lesion_precision) if cfg.lesion_model else None
    if seg is None:
        return None
    return viewer_labels(seg.segment_labels(volume, spacing, lungs, progress=progress, cancel=cancel))


def viewer_labels(labels: np.ndarray) -> np.ndarray:
    """A segmenter's lesion labels (1 GGO, 2 consolidation) as the viewer's (3 ground glass, 4 consolidation)."""
    out = np.zeros(labels.shape, np.uint8)
    out[labels == 1], out[labels == 2] = GGO_LABEL, CONSOLIDATION_LABEL
    return out


class LesionsBeside:
    """`model_lesions` in a thread of its own, started at once, so that the lesion segmenter and the caller's slice
    classifier share the cores instead of taking turns. A context manager: leaving it (a cancel, an error) stops
    the segmenter at its next batch and waits for it."""

    def __init__(self, volume: np.ndarray, spacing, lungs: np.ndarray, cfg: ScreeningConfig, device: str,
                 cancel: CancelFn | None) -> None:
        self._stop = threading.Event()

        def stopped() -> bool:
            return self._stop.is_set() or (cancel is not None and bool(cancel()))

        self._pool = ThreadPoolExecutor(1, thread_name_prefix="lesions")
        self._future = self._pool.submit(model_lesions, volume, spacing, lungs, cfg, device, cancel=stopped)

    def result(self) -> np.ndarray | None:
        """The lesion mask, as `model_lesions` returns it (waiting for it; its exception raised here)."""
        return self._future.result()

    def __enter__(self) -> LesionsBeside:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # a no-op once it has finished
        self._pool.shutdown(wait=True)


def lesion_step(volume: np.ndarray, spacing, lungs: np.ndarray, heat: np.ndarray, cfg: ScreeningConfig,
                device: str, report: ProgressFn, cancel: CancelFn | None,
                beside: LesionsBeside | None = None) -> tuple[np.ndarray, str]:
    """The slice and volume paths' lesion mask and how it was made: `model_lesions` (or its result from `beside`,
    started earlier), else `lesion_mask` (the HU rule inside `heat`)."""
    if beside is not None:
        lesions = beside.result()
    else:
        lesions = model_lesions(volume, spacing, lungs, cfg, device, cancel=cancel,
                                progress=lambda f, m: report(0.9 + 0.08 * f, m))
    if lesions is None:
        return lesion_mask(volume, lungs, heat, spacing, cfg), HU_RULE
    return lesions, str(cfg.lesion_model)


def lesion_ml_by_kind(lesions: np.ndarray, spacing) -> dict[str, float]:
    """Ground-glass (label 3) and consolidation (label 4) volume in mL."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    with_lesion = lesions[per_slice_count(lesions) > 0]  # most slices have none: count in the others only
    return {"GGO": float(np.count_nonzero(with_lesion == GGO_LABEL) * voxel_ml),
            "consolidation": float(np.count_nonzero(with_lesion == CONSOLIDATION_LABEL) * voxel_ml)}


def lesion_mask(volume: np.ndarray, lungs: np.ndarray, heat: np.ndarray, spacing, cfg: ScreeningConfig) -> np.ndarray:
    """Abnormal density inside the lungs, vessels removed, where the heat map is high (labels 3 and 4)."""
    out = np.zeros(volume.shape, np.uint8)
    hot = heat >= cfg.cam_threshold
    box = bounding_box(hot)
    if box is None:
        return out
    v = volume[box]  # work only where the heat map is high
    lo, hi = cfg.ggo_hu[0], cfg.consolidation_hu[1]
    candidate = lungs[box] & hot[box] & (v >= lo) & (v <= hi)
    r = max(1, int(round(cfg.vessel_opening_mm / 2 / min(spacing[1], spacing[2]))))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    disk = yy**2 + xx**2 <= r * r  # in-plane only: thick slices must not erase lesions
    opened = opening_2d(candidate, disk)
    sub = out[box]
    sub[opened & (v < cfg.ggo_hu[1])] = GGO_LABEL
    sub[opened & (v >= cfg.consolidation_hu[0])] = CONSOLIDATION_LABEL
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of a 3D mask (None when there is none)."""
    box = []
    for axes in ((1, 2), (0, 2), (0, 1)):
        idx = np.flatnonzero(mask.any(axis=axes))
        if len(idx) == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def opening_2d(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary opening of every (y, x) plane of a 3D mask by a symmetric 2D footprint, outside = False.

    Equal to `ndimage.binary_opening(mask, footprint[None])`, about 4x faster: one AND (then OR) of
    shifted views per footprint element instead of a per-voxel neighbourhood walk.
    """

    def shifted(m: np.ndarray, op) -> np.ndarray:
        ry, rx = footprint.shape[0] // 2, footprint.shape[1] // 2
        _, ny, nx = m.shape
        pad = np.pad(m, ((0, 0), (ry, ry), (rx, rx)))
        out: np.ndarray | None = None
        for dy, dx in zip(*np.nonzero(footprint)):
            view = pad[:, dy : dy + ny, dx : dx + nx]
            if out is None:
                out = view.copy()
            else:
                op(out, view, out=out)
        assert out is not None
        return out

    return shifted(shifted(mask, np.logical_and), np.logical_or)


def per_slice_count(mask: np.ndarray) -> np.ndarray:
    """Number of True (non-zero) voxels in each axial slice (a loop of 2D counts: faster than a summed bool
    axis)."""
    return np.array([np.count_nonzero(s) for s in mask], np.int64)


def zone_burden(lung_labels: np.ndarray, lesions: np.ndarray, spacing) -> list[ZoneInvolvement]:
    """Lesion volume and % involvement of the upper, middle and lower third of each lung."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    lesion_slices = {int(k) for k in np.flatnonzero(lesions.any(axis=(1, 2)))}
    out = []
    for lung, value in (("right", 2), ("left", 1)):
        lung_n = np.zeros(len(lung_labels), np.int64)
        lesion_n = np.zeros(len(lung_labels), np.int64)
        for k, lab in enumerate(lung_labels):
            m = lab == value
            lung_n[k] = np.count_nonzero(m)
            if k in lesion_slices and lung_n[k]:
                lesion_n[k] = np.count_nonzero(m & lesions[k])
        zs = np.flatnonzero(lung_n)
        if len(zs) == 0:
            continue
        edges = np.linspace(zs.min(), zs.max() + 1, 4)
        # z increases toward the head: the top third is "upper"
        for zone, (a, b) in zip(("lower", "middle", "upper"), zip(edges[:-1], edges[1:])):
            sl = slice(int(round(a)), int(round(b)))
            lung_ml = float(lung_n[sl].sum()) * voxel_ml
            lesion_ml = float(lesion_n[sl].sum()) * voxel_ml
            pct = 100.0 * lesion_ml / lung_ml if lung_ml > 0 else 0.0
            out.append(ZoneInvolvement(lung, zone, round(lung_ml, 3), round(lesion_ml, 3), round(pct, 3),
                                       zone_score(pct, lesion_ml)))
    return out

"""Per-label statistics of a `LabelMap`: voxels, mL, HU mean/std, share of the lung. Qt-free."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from viewer.labels.label_map import LabelMap
from viewer.labels.table import MAX_LABEL

LUNG_LABEL_NAMES = ("lung left", "lung right")
_SLAB = 16  # slices per chunk: the float64 temporaries stay small


@dataclass(frozen=True)
class LabelStats:
    """Statistics of one label; HU figures and the lung share are None where undefined (no voxels, no CT)."""

    value: int
    name: str
    voxels: int
    volume_ml: float
    mean_hu: float | None
    std_hu: float | None
    percent_of_lung: float | None


def lung_values(labels: LabelMap) -> list[int]:
    """The values of the labels named "lung left" / "lung right"."""
    return [i.value for i in labels.table if i.name.lower() in LUNG_LABEL_NAMES]


def label_stats(labels: LabelMap, hu: np.ndarray | None = None, *, lung_mask: np.ndarray | None = None,
                lesion_values: Collection[int] | None = None, values: Collection[int] | None = None,
                fallback_lung_mask: np.ndarray | None = None) -> list[LabelStats]:
    """Statistics of every label in the table (or of `values`), ordered by value.

    Args:
        hu: the CT on the same grid, for mean/std HU (population std); None skips them.
        lung_mask: the lungs as a bool array; percent_of_lung = 100 x label voxels inside it / lung voxels.
        lesion_values: without `lung_mask`, the lungs are the voxels of the lung labels plus those of
            these labels (painted over the lungs, they replaced the lung label there). Default: every
            label that is not a lung label. Labels outside the lungs get percent_of_lung None.
        fallback_lung_mask: the lungs (bool) when `lung_mask` is None and the map has no lung voxels, e.g.
            the AI's lung mask. Without lung voxels and without it, every percent_of_lung is None: the
            lesions alone are not the lung.

    One pass over the volume in slabs (bincount per slab), no full-volume temporaries.
    """
    arr = labels.array
    if hu is not None and (not isinstance(hu, np.ndarray) or hu.shape != arr.shape):
        raise ValueError(f"the CT array must have the label map's shape {arr.shape}, got {getattr(hu, 'shape', hu)}")
    for name, mask in (("lung_mask", lung_mask), ("fallback_lung_mask", fallback_lung_mask)):
        if mask is not None and (np.shape(mask) != arr.shape or np.asarray(mask).dtype != bool):
            raise ValueError(f"{name} must be a bool array of shape {arr.shape}, got {np.asarray(mask).dtype} "
                             f"{np.shape(mask)}")
    if lung_mask is not None:
        lung_mask, fallback_lung_mask = np.asarray(lung_mask), None
    elif fallback_lung_mask is not None:
        fallback_lung_mask = np.asarray(fallback_lung_mask)
    if values is None:
        wanted = labels.table.values()
    else:
        wanted = sorted({labels.check_value(v, allow_background=False, allow_locked=True) for v in values})
    lungs = lung_values(labels)
    if lesion_values is None:
        lesions = [v for v in labels.table.values() if v not in lungs]
    else:
        lesions = [labels.check_value(v, allow_background=False, allow_locked=True) for v in lesion_values]

    n = MAX_LABEL + 1
    count = np.zeros(n, np.int64)
    in_lung = np.zeros(n, np.int64)
    total = np.zeros(n)
    total2 = np.zeros(n)
    for k0 in range(0, arr.shape[0], _SLAB):
        lab = arr[k0:k0 + _SLAB].reshape(-1)
        count += np.bincount(lab, minlength=n)
        if hu is not None:
            h = hu[k0:k0 + _SLAB].reshape(-1).astype(np.float64)
            total += np.bincount(lab, weights=h, minlength=n)
            total2 += np.bincount(lab, weights=h * h, minlength=n)
        mask = lung_mask if lung_mask is not None else fallback_lung_mask
        if mask is not None:
            in_lung += np.bincount(lab[mask[k0:k0 + _SLAB].reshape(-1)], minlength=n)

    if lung_mask is None and fallback_lung_mask is not None and not count[lungs].any():
        lung_mask = fallback_lung_mask
    if lung_mask is not None:
        lung_total = int(np.count_nonzero(lung_mask))
    elif count[lungs].any():
        members = sorted(set(lungs) | set(lesions))
        lung_total = int(count[members].sum())
        in_lung[members] = count[members]
    else:
        lung_total = 0  # no lungs known: no share

    out = []
    for v in wanted:
        c = int(count[v])
        mean = std = None
        if hu is not None and c:
            mean = float(total[v] / c)
            std = float(np.sqrt(max(total2[v] / c - mean * mean, 0.0)))
        share = None
        if lung_total and (lung_mask is not None or v in lungs or v in lesions):
            share = 100.0 * int(in_lung[v]) / lung_total
        out.append(LabelStats(v, labels.table[v].name, c, c * labels.voxel_ml, mean, std, share))
    return out

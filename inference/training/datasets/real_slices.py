"""Real CT volumes as slice-classifier training data: every lung slice, seen exactly as screening sees it.

A slice model that screens a CT sees each axial slice cropped to the volume's lung box and windowed to its
HU window (`inference.screening.steps.slice_plan` and `slice_image`). `volume_slices` cuts the same pictures
from a (z, y, x) HU volume, labels them from the radiologists' slice labels, and tags each with its
validation fold: slices are grouped in slabs `slab_mm` thick along z and every `folds`-th slab is held out,
so a held-out slice's near neighbours are held out with it (adjacent slices are near copies).

What a volume contributes depends on its kind (`VOLUME_KINDS`):
- "covid": slices labelled infected are COVID, the others NonCOVID;
- "pneumonia": slices labelled infected are left out (another infection: neither COVID nor a clean
  negative for a COVID classifier), the others NonCOVID;
- "negative": every lung slice is NonCOVID.

Slice labels follow COVID-CT-MD's `slice-labels.json`: per case, `infected_slices` counted from the most
superior slice (index 0) down; `slice_labels` turns them into the canonical grid (index 0 most inferior).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.screening.config import ScreeningConfig
from inference.screening.fusion import lesion_share
from inference.screening.steps import slice_image, slice_plan
from inference.transforms.common import HUWindow

VOLUME_KINDS = ("covid", "pneumonia", "negative")
LOBE_SIDE = (1, 1, 2, 2, 2)  # lobes_per_slice order LLL, LUL, RLL, RML, RUL -> lung label (1 left, 2 right)


@dataclass
class RealSlices:
    """Slices of one or more volumes: grey images in [0, 1] (each its own size) and per-slice facts."""

    images: list[np.ndarray]
    labels: np.ndarray  # 1 COVID, 0 NonCOVID
    infected: np.ndarray  # bool: labelled infected (any infection), for slice-level evaluation
    val: np.ndarray  # bool: in the held-out slabs
    case: np.ndarray  # str: the volume's name
    index: np.ndarray  # the slice's index in its (canonical) volume
    share: np.ndarray  # float: lesion share of the slice's lung (`inference.screening.fusion`); NaN: not known

    @classmethod
    def empty(cls) -> RealSlices:
        return cls([], np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, bool), np.zeros(0, object),
                   np.zeros(0, np.int64), np.zeros(0))

    def __len__(self) -> int:
        return len(self.images)

    def extend(self, other: RealSlices) -> None:
        self.images += other.images
        self.labels = np.concatenate([self.labels, other.labels])
        self.infected = np.concatenate([self.infected, other.infected])
        self.val = np.concatenate([self.val, other.val])
        self.case = np.concatenate([self.case.astype(object), other.case.astype(object)])
        self.index = np.concatenate([self.index, other.index])
        self.share = np.concatenate([self.share, other.share])

    def subset(self, keep: np.ndarray) -> RealSlices:
        keep = np.asarray(keep, bool)
        return RealSlices([im for im, k in zip(self.images, keep) if k], self.labels[keep], self.infected[keep],
                          self.val[keep], self.case[keep], self.index[keep], self.share[keep])


def read_slice_labels(path: str | Path) -> dict[str, dict]:
    """COVID-CT-MD's per-case slice labels (a JSON object keyed by case name).

    Raises:
        ValueError: not a JSON object of objects (the message names the file).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read slice labels: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: slice labels must be a JSON object of per-case objects")
    return data


def slice_labels(entry: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One case's labels on the canonical grid of `n` slices (index 0 most inferior): (n,) bool labelled
    infected, and (n, 3) bool [unused, left, right] lungs with a labelled lobe.

    Raises:
        ValueError: a slice index outside the volume.
    """
    infected, sides = np.zeros(n, bool), np.zeros((n, 3), bool)
    for i in entry.get("infected_slices", []):
        if not 0 <= int(i) < n:
            raise ValueError(f"infected slice {i} outside a volume of {n} slices")
        infected[n - 1 - int(i)] = True  # the labels count from the most superior slice down
    for i, flags in entry.get("lobes_per_slice", {}).items():
        if not 0 <= int(i) < n:
            raise ValueError(f"lobe labels for slice {i} outside a volume of {n} slices")
        for side, flag in zip(LOBE_SIDE, flags):
            sides[n - 1 - int(i), side] |= bool(flag)
    return infected, sides


def volume_slices(hu: np.ndarray, spacing, lungs: np.ndarray, *, kind: str, window: HUWindow, case: str = "",
                  infected: np.ndarray | None = None, lesions: np.ndarray | None = None,
                  config: ScreeningConfig | None = None,
                  slab_mm: float = 40.0, folds: int = 5, fold: int = 0) -> RealSlices:
    """Every lung slice of a (z, y, x) HU volume as screening crops it, labelled by `kind` (see the module
    docstring), with its fold.

    Args:
        lungs: (z, y, x) lung mask (non-zero = lung) on the volume's grid.
        window: the model's HU window (`SlicePreprocess.hu_window`).
        infected: (z,) bool slices labelled infected (canonical order); needed for "covid" and "pneumonia".
        lesions: (z, y, x) lesion mask from the screening lesion segmenter, for each slice's lesion share.
        slab_mm, folds, fold: slices lie in slabs `slab_mm` thick from the volume's lowest slice; slab s is
            held out when s % folds == fold.

    Raises:
        ValueError: an unknown kind, labels missing for a kind that needs them, or shapes that do not fit.
    """
    if kind not in VOLUME_KINDS:
        raise ValueError(f"kind must be one of {VOLUME_KINDS}, got {kind!r}")
    hu, in_lungs = np.asarray(hu), np.asarray(lungs) != 0
    if hu.ndim != 3 or in_lungs.shape != hu.shape:
        raise ValueError(f"need a 3-D volume and a lung mask of its shape, got {hu.shape} and {in_lungs.shape}")
    if infected is None:
        if kind != "negative":
            raise ValueError(f"a {kind!r} volume needs its slice labels")
        infected = np.zeros(len(hu), bool)
    infected = np.asarray(infected, bool)
    if infected.shape != (len(hu),):
        raise ValueError(f"slice labels for {infected.shape} slices, volume has {len(hu)}")
    plan = slice_plan(in_lungs, spacing, config or ScreeningConfig())
    keep = plan.lung_slices if kind != "pneumonia" else plan.lung_slices[~infected[plan.lung_slices]]
    labels = (infected[keep] if kind == "covid" else np.zeros(len(keep), bool)).astype(np.int64)
    slab = np.floor(keep * float(spacing[0]) / slab_mm).astype(np.int64)
    share = (np.full(len(keep), np.nan) if lesions is None
             else lesion_share(np.asarray(lesions) != 0, in_lungs, keep))
    return RealSlices([slice_image(hu, int(k), plan.box, window) for k in keep], labels, infected[keep],
                      slab % folds == fold, np.full(len(keep), case, dtype=object), keep.astype(np.int64), share)

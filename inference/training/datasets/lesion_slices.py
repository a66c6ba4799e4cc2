"""Axial CT slices with radiologists' lesion masks (COVID-SemiSeg / Inf-Net layout): reading and folds.

Layout::

    ROOT/Imgs/<stem>.jpg            8-bit grey slice (already windowed and cropped to the body)
    ROOT/GT-multiclass/<stem>.png   palette labels: 0 background, 1 ground-glass opacity, 2 consolidation
    ROOT/GT/<stem>.png              binary infection mask {0, 255}; used only when GT-multiclass is missing,
                                    and then every lesion pixel is class 1 (GGO) (`LesionSliceSet.multiclass`
                                    is False and `note` says so)

Images and masks are paired by file stem (`0.jpg` with `0.png`); stems need not be contiguous.

Orientation: the slices are not in standard radiological orientation (anterior up, patient's left
on the image right). They were exported from NIfTI without reorienting: in all 50 training slices
(checked by eye) the spine lies at the right edge, i.e. anterior is at the left (`ANTERIOR_SIDE`), and
the patient's left-right axis runs vertically (heart and descending aorta at the bottom in the slices
looked at closely; the data README says many are flipped, so its sign may vary). Neither can be told
robustly per image (a bone-brightness heuristic for the spine side gets 1 in 50 wrong at its best
setting, with no margin separating right from wrong calls), so nothing is recorded per slice:
training augments with both flips and 90-degree rotations, which makes the orientation of these
slices, and of CT slices at inference, irrelevant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from inference.training.datasets.volumes import DatasetError
from inference.transforms.images import ImageError, load_grey

IMAGES_DIR, MULTICLASS_DIR, BINARY_DIR = "Imgs", "GT-multiclass", "GT"
CLASSES: tuple[str, ...] = ("background", "ggo", "consolidation")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
#: where anterior lies in these slices (every slice of the training split, checked by eye)
ANTERIOR_SIDE = "left"


@dataclass(frozen=True)
class LesionSlice:
    """One slice: grey values in [0, 1] (float32, H x W) and labels (uint8, H x W, values in {0, 1, 2})."""

    stem: str
    image_path: Path
    mask_path: Path
    image: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class LesionSliceSet:
    """The slices of one folder, sorted by stem (numeric stems in numeric order)."""

    root: Path
    slices: tuple[LesionSlice, ...]
    multiclass: bool  # False: masks came from GT/ (binary) and lesions are all class 1
    note: str = ""
    class_names: tuple[str, ...] = field(default=CLASSES)

    def __len__(self) -> int:
        return len(self.slices)

    def class_fractions(self) -> np.ndarray:
        """Pixel fraction of each class over all slices."""
        counts = sum(np.bincount(s.labels.ravel(), minlength=len(CLASSES)) for s in self.slices)
        counts = np.asarray(counts, dtype=np.float64)
        return counts / max(counts.sum(), 1.0)


def read_lesion_slices(root: str | Path) -> LesionSliceSet:
    """Read every image of `root/Imgs` with its mask (GT-multiclass, else GT as class 1).

    Raises:
        DatasetError: a folder is missing or empty, an image has no mask (or a mask no image), a file
            cannot be read, sizes differ, or a mask holds values outside {0, 1, 2}; the message names the file.
    """
    root = Path(root)
    img_dir = root / IMAGES_DIR
    if not img_dir.is_dir():
        raise DatasetError(f"{img_dir}: image folder missing (expected {IMAGES_DIR}/ with the slices)")
    multiclass = (root / MULTICLASS_DIR).is_dir()
    mask_dir = root / (MULTICLASS_DIR if multiclass else BINARY_DIR)
    if not mask_dir.is_dir():
        raise DatasetError(f"{root}: no mask folder ({MULTICLASS_DIR}/ or {BINARY_DIR}/)")
    note = "" if multiclass else (
        f"{MULTICLASS_DIR}/ missing: masks read from {BINARY_DIR}/, every lesion pixel labelled 1 (GGO)")
    images = _by_stem(img_dir)
    masks = _by_stem(mask_dir)
    if not images:
        raise DatasetError(f"{img_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for stem in sorted(set(masks) - set(images), key=_stem_key):
        raise DatasetError(f"{masks[stem]}: mask without an image in {img_dir}")
    slices = []
    for stem in sorted(images, key=_stem_key):
        if stem not in masks:
            raise DatasetError(f"{images[stem]}: no mask {stem}.png in {mask_dir}")
        image = _read_image(images[stem])
        labels = _read_labels(masks[stem], multiclass)
        if labels.shape != image.shape:
            raise DatasetError(f"{masks[stem]}: mask size {labels.shape[::-1]} differs from the image "
                               f"{images[stem].name} {image.shape[::-1]} (width x height)")
        slices.append(LesionSlice(stem, images[stem], masks[stem], image, labels))
    return LesionSliceSet(root, tuple(slices), multiclass, note)


def kfold(n: int, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`k` (train, val) index splits of range(n): a seeded shuffle cut into k near-equal folds.

    Every index is in exactly one val fold; the same (n, k, seed) always gives the same folds.
    """
    if k < 2 or n < k:
        raise ValueError(f"kfold needs 2 <= k <= n, got n={n}, k={k}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1:])), np.sort(val)) for i, val in enumerate(folds)]


def _by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DatasetError(f"{path}: two files with stem {path.stem!r} in {folder}")
            found[path.stem] = path
    return found


def _stem_key(stem: str) -> tuple[int, int, str]:
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def _read_image(path: Path) -> np.ndarray:
    try:
        return load_grey(path)
    except ImageError as exc:
        raise DatasetError(str(exc)) from None


def _read_labels(path: Path, multiclass: bool) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            # palette (P) and grey (L) masks hold the class index; anything else is not a label map
            if img.mode not in ("P", "L", "1"):
                raise DatasetError(f"{path}: mask mode {img.mode} (expected a palette or grey label image)")
            arr = np.asarray(img)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise DatasetError(f"{path}: cannot read mask: {str(exc) or type(exc).__name__}") from None
    if not multiclass:
        return (arr > 0).astype(np.uint8)
    bad = np.setdiff1d(np.unique(arr), np.arange(len(CLASSES)))
    if bad.size:
        raise DatasetError(f"{path}: label values {bad.tolist()[:5]} outside 0 background, 1 GGO, 2 consolidation")
    return arr.astype(np.uint8)

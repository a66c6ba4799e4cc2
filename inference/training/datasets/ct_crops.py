"""Axial slices of a real CT volume, cropped to the lungs as the lesion segmenter sees them, as DCN training
slices (`ExtraSlice`: image in [0, 1], labels, COVID flag).

The crop is the in-plane lung box of the whole volume (`inference.transforms.crop.lung_crop_box`), the one
`inference.inferers.lesions.LesionSegmenter` runs on; grey values are windowed with the COVID-SemiSeg
export window so the slices look like the annotated JPEGs, and optionally stored as 8-bit JPEG and decoded
again as those were (`SEMISEG_JPEG_QUALITY`): without that, a classifier tells positives from negatives by
the compression alone. Used for volumes without lesion masks (negatives: labels all background).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from inference.core.choices import SEMISEG_JPEG_QUALITY
from inference.models.dcn import EXPORT_WINDOW_HU
from inference.training.datasets.phantom_lesions import ExtraSlice, window01
from inference.transforms.crop import lung_crop_box


def jpeg_roundtrip(image01: np.ndarray, quality: int = SEMISEG_JPEG_QUALITY) -> np.ndarray:
    """A [0, 1] grey image as 8-bit JPEG of `quality`, decoded again to float32 in [0, 1]."""
    grey = Image.fromarray(np.rint(np.clip(image01, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
    buf = io.BytesIO()
    grey.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"), np.float32) / 255.0


def lung_crops(hu: np.ndarray, lungs: np.ndarray, is_covid: bool, *, labels: np.ndarray | None = None,
               min_lung_share: float = 0.25, window_hu: tuple[float, float] = EXPORT_WINDOW_HU,
               jpeg_quality: int | None = None) -> list[ExtraSlice]:
    """The lung-cropped axial slices of a (z, y, x) HU volume whose lung area is at least `min_lung_share`
    of the largest slice's (the levels the annotated slices come from).

    Args:
        lungs: (z, y, x) lung mask (non-zero = lung).
        labels: (z, y, x) lesion labels (0 background, 1 GGO, 2 consolidation); None: all background.
        jpeg_quality: store each windowed slice as 8-bit JPEG of this quality and decode it (`jpeg_roundtrip`).
    """
    hu, lungs = np.asarray(hu), np.asarray(lungs) != 0
    if hu.ndim != 3 or lungs.shape != hu.shape or (labels is not None and np.shape(labels) != hu.shape):
        raise ValueError(f"need a 3-D volume with a lung mask (and labels) of its shape, got {hu.shape}, "
                         f"{lungs.shape}{'' if labels is None else f', {np.shape(labels)}'}")
    area = lungs.sum(axis=(1, 2))
    if not area.any():
        return []
    ys, xs = lung_crop_box(lungs)
    keep = np.flatnonzero(area >= min_lung_share * area.max())
    out: list[ExtraSlice] = []
    for z in keep:
        lab = np.zeros(hu.shape[1:], np.uint8) if labels is None else np.asarray(labels[z], np.uint8)
        image = window01(hu[z, ys, xs], window_hu)
        if jpeg_quality is not None:
            image = jpeg_roundtrip(image, jpeg_quality)
        out.append((image, lab[ys, xs], bool(is_covid)))
    return out

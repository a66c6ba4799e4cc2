"""Axial slices of a CT volume with known lesion masks (e.g. a phantom's) as extra DCN training slices.

The arrays come from the caller (`inference` cannot import the viewer's phantom generator): HU volume,
GGO and consolidation masks. Each slice becomes `(image01, labels, is_covid)`, the `extra` entries of
`inference.training.recipes.dcn.train`: grey values windowed to [0, 1] exactly as the COVID-SemiSeg
JPEGs were exported, labels 0 background / 1 GGO / 2 consolidation, and the case's COVID flag.
"""

from __future__ import annotations

import numpy as np

from inference.models.dcn import EXPORT_WINDOW_HU

ExtraSlice = tuple[np.ndarray, np.ndarray, bool]


def window01(hu: np.ndarray, window_hu: tuple[float, float] = EXPORT_WINDOW_HU) -> np.ndarray:
    """HU -> grey in [0, 1] over `window_hu` (float32), the JPEG export without its 8-bit rounding."""
    lo, hi = window_hu
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def lesion_labels(ggo: np.ndarray, consolidation: np.ndarray) -> np.ndarray:
    """uint8 labels from boolean masks: 1 GGO, 2 consolidation (consolidation wins where both are set)."""
    labels = np.zeros(np.shape(ggo), np.uint8)
    labels[np.asarray(ggo, bool)] = 1
    labels[np.asarray(consolidation, bool)] = 2
    return labels


def volume_slices(hu: np.ndarray, ggo: np.ndarray, consolidation: np.ndarray, is_covid: bool, *,
                  lesions: str = "all", window_hu: tuple[float, float] = EXPORT_WINDOW_HU) -> list[ExtraSlice]:
    """The axial slices (axis 0) of a volume as `(image01, labels, is_covid)`.

    Args:
        lesions: "all" every slice, "with" only slices with lesion pixels, "without" only slices without.
    """
    if lesions not in ("all", "with", "without"):
        raise ValueError(f"lesions must be 'all', 'with' or 'without', got {lesions!r}")
    labels = lesion_labels(ggo, consolidation)
    if labels.shape != np.shape(hu):
        raise ValueError(f"mask shape {labels.shape} differs from the volume {np.shape(hu)}")
    out = []
    for z in range(labels.shape[0]):
        has = bool(labels[z].any())
        if lesions == "all" or (lesions == "with") == has:
            out.append((window01(hu[z], window_hu), labels[z], bool(is_covid)))
    return out

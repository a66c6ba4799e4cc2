"""Lung masks by method name: "threshold" (`inference.lungs.threshold`) or "unet" (`inference.lungs.unet`)."""

from __future__ import annotations

import numpy as np

from inference.core.choices import LUNG_METHODS
from inference.core.types import CancelFn, Cancelled, ProgressFn
from inference.lungs.common import LungMasks
from inference.lungs.threshold import segment_lungs

__all__ = ["LUNG_METHODS", "segment_lung_labels", "segment_lungs_by"]


def segment_lungs_by(method: str, hu: np.ndarray, spacing: tuple[float, float, float], *,
                     progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> LungMasks:
    """Lung masks by `method`: "threshold" (`segment_lungs`) or "unet" (the 2D lung U-Net, shipped weights).

    Same arguments, errors and result as `segment_lungs`; the U-Net's `airways` mask is empty.
    """
    if method == "threshold":
        return segment_lungs(hu, spacing, progress=progress, cancel=cancel)
    if method == "unet":
        from inference.lungs.unet import segment_lungs_unet  # torch only when asked for

        return segment_lungs_unet(hu, spacing, progress=progress, cancel=cancel)
    raise ValueError(f"unknown lung segmentation method {method!r}; choose one of: {', '.join(LUNG_METHODS)}")


def segment_lung_labels(volume: np.ndarray, spacing, method: str = "threshold", *, progress: ProgressFn | None = None,
                        cancel: CancelFn | None = None) -> np.ndarray:
    """Lung label map (1 left, 2 right) by `method` ("threshold" or "unet", see `segment_lungs_by`).

    Raises:
        Cancelled: `cancel()` returned True. ValueError: unknown method. WeightsError: no U-Net weights.
    """
    try:
        masks = segment_lungs_by(method, volume, spacing, progress=progress, cancel=cancel)
    except Cancelled:
        raise Cancelled("analysis cancelled") from None  # the screening's words for it
    return masks.label_map()

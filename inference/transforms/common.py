"""Pre-processing as small typed callables (settings in __init__, work in __call__), MONAI style."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from inference.core.choices import NORMALIZATIONS


class HUWindow:
    """Clip HU to [low, high] and scale to [0, 1] (or to 0..255 uint8 with `to_uint8`).

    Args:
        low, high: the window in HU, e.g. the lung window -1350..150.
        to_uint8: return 8-bit values (the papers' "16-bit to 8-bit" step).
    """

    def __init__(self, low: float, high: float, to_uint8: bool = False) -> None:
        if high <= low:
            raise ValueError(f"window high ({high}) must exceed low ({low})")
        self.low, self.high, self.to_uint8 = float(low), float(high), to_uint8

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        x = (np.asarray(hu, dtype=np.float32) - self.low) / (self.high - self.low)
        x = np.clip(x, 0.0, 1.0)
        return np.rint(x * 255).astype(np.uint8) if self.to_uint8 else x


LUNG_WINDOW = HUWindow(-1350, 150)


class ResampleSpacing:
    """Resample a (z, y, x) volume to a target spacing (linear for images, nearest for labels).

    Args:
        target: (z, y, x) spacing in mm; None in a position keeps that axis.
        order: spline order (1 linear, 0 nearest, 3 cubic).
    """

    def __init__(self, target: Sequence[float | None], order: int = 1) -> None:
        self.target, self.order = tuple(target), order

    def __call__(self, volume: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, ...]]:
        new = tuple(s if t is None else float(t) for s, t in zip(spacing, self.target))
        zoom = [s / n for s, n in zip(spacing, new)]
        if np.allclose(zoom, 1.0):
            return volume, tuple(float(s) for s in spacing)
        out = ndimage.zoom(volume, zoom, order=self.order, mode="nearest", grid_mode=True)
        actual = tuple(s * n / m for s, n, m in zip(spacing, volume.shape, out.shape))
        return out, actual


class ResizeSquare:
    """Pad an image (H, W) to a square (centred, with `fill`) and resize it to size x size (bilinear)."""

    def __init__(self, size: int = 224, fill: float = 0.0) -> None:
        self.size, self.fill = size, fill

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape
        n = max(h, w)
        sq = np.full((n, n), self.fill, dtype=np.float32)
        y0, x0 = (n - h) // 2, (n - w) // 2
        sq[y0 : y0 + h, x0 : x0 + w] = image
        t = torch.from_numpy(sq)[None, None]
        return torch.nn.functional.interpolate(t, size=(self.size, self.size), mode="bilinear",
                                               align_corners=False, antialias=True)[0, 0].numpy()


class FixedScale:
    """One affine map for every image, `(x - mean) / std`: a slice's brightness keeps its meaning (CT in a fixed
    HU window), where `Standardize` would spread a local change (a lesion) over the whole image."""

    def __init__(self, mean: float = 0.35, std: float = 0.3) -> None:  # lung-window CT slices: about 0.35 +- 0.3
        self.mean, self.std = mean, std

    def __call__(self, image: np.ndarray | torch.Tensor):
        return (image - self.mean) / self.std


def normalizer(name: str = "per-image"):
    """The transform for a `NORMALIZATIONS` name: `Standardize` (per image) or `FixedScale`."""
    if name == "per-image":
        return Standardize()
    if name == "fixed":
        return FixedScale()
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {name!r}")


class Standardize:
    """Per-image zero mean, unit standard deviation (robust to the mixed windowing of slice images)."""

    def __init__(self, eps: float = 1e-6) -> None:
        self.eps = eps

    def __call__(self, image: np.ndarray | torch.Tensor):
        if isinstance(image, torch.Tensor):
            dims = tuple(range(image.ndim - 2, image.ndim))
            mean = image.mean(dim=dims, keepdim=True)
            std = image.std(dim=dims, keepdim=True)
            return (image - mean) / (std + self.eps)
        return (image - image.mean()) / (image.std() + self.eps)


class Compose:
    def __init__(self, *steps: Callable) -> None:
        self.steps = steps

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x

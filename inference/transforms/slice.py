"""The pre-processing of the 2D models, as objects a registry entry carries (torchvision's `transforms=` idea).

`SlicePreprocess`: a slice classifier's input (HU window for CT slices, pad to square, resize, centre crop,
normalization); `LungSlicePreprocess`: the lung U-Net's window and input size. `describe()` gives the
settings as plain data for model cards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from inference.core.choices import NORMALIZATIONS
from inference.transforms.common import HUWindow, ResizeSquare, normalizer


@dataclass(frozen=True)
class SlicePreprocess:
    """A slice classifier's input: grey images in [0, 1] -> a normalized (N, 1, crop, crop) batch.

    Args:
        window_hu: the HU window that turns a CT slice into a grey image in [0, 1] (`hu_window`).
        resize: side of the square the (zero-padded) image is resized to (bilinear, antialiased).
        crop: side of the centre crop of that square, the network's input.
        normalize: one of `NORMALIZATIONS` ("per-image": zero mean, unit standard deviation; "fixed").
    """

    window_hu: tuple[float, float]
    resize: int
    crop: int
    normalize: str = "per-image"

    def __post_init__(self) -> None:
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop {self.crop} and resize {self.resize}")

    @property
    def hu_window(self) -> HUWindow:
        """CT slice (HU) -> grey image in [0, 1], as the model was trained to see it."""
        return HUWindow(*self.window_hu)

    @property
    def offset(self) -> int:
        """Where the centre crop starts in the resized square (rows and columns)."""
        return (self.resize - self.crop) // 2

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Grey images in [0, 1] of any size -> the normalized (N, 1, crop, crop) float32 batch (CPU)."""
        resize, o = ResizeSquare(self.resize), self.offset
        batch = np.stack([resize(np.asarray(im, np.float32))[o : o + self.crop, o : o + self.crop] for im in images])
        return normalizer(self.normalize)(torch.from_numpy(batch)[:, None])

    def describe(self) -> dict[str, Any]:
        return {
            "input": "2D slice, one grey channel",
            "ct_window_hu": list(self.window_hu),
            "pad_to_square": True,
            "resize": self.resize,
            "centre_crop": self.crop,
            "normalize": self.normalize,
        }


@dataclass(frozen=True)
class LungSlicePreprocess:
    """The lung U-Net's input: each axial CT slice windowed to [0, 1], fitted (physical aspect kept) into a
    size x size square padded with air (`inference.transforms.fit.SquareFit` does the fitting)."""

    window_hu: tuple[float, float]
    size: int

    def window(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> [0, 1] over `window_hu` (float32)."""
        lo, hi = self.window_hu
        return ((hu.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "input": "each axial slice of a (z, y, x) CT in HU, one grey channel",
            "ct_window_hu": list(self.window_hu),
            "resize": f"physical aspect kept, longer side {self.size} px, centred on an air-padded "
                      f"{self.size} x {self.size} square",
        }

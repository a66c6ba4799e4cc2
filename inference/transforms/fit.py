"""Fitting a CT slice into a square model input with its physical aspect kept, and mapping outputs back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class SquareFit:
    """Where an (ny, nx) slice lies in the size x size model input: physical aspect kept, centred, padded."""

    shape: tuple[int, int]  # CT slice (ny, nx)
    inner: tuple[int, int]  # its resized (h, w) inside the square
    offset: tuple[int, int]  # (top, left) of the resized slice
    size: int

    @classmethod
    def of(cls, shape: tuple[int, int], spacing_yx: tuple[float, float], size: int) -> SquareFit:
        """The fit of an (ny, nx) slice of pixel size `spacing_yx` (mm) whose longer physical side fills `size`."""
        hy, wx = shape[0] * spacing_yx[0], shape[1] * spacing_yx[1]
        side = max(hy, wx)
        h = int(min(size, max(1, round(size * hy / side))))
        w = int(min(size, max(1, round(size * wx / side))))
        return cls((int(shape[0]), int(shape[1])), (h, w), ((size - h) // 2, (size - w) // 2), size)

    def to_model(self, slices: torch.Tensor) -> torch.Tensor:
        """(n, c, ny, nx) -> (n, c, size, size): bilinear (antialiased) resize, zero padding."""
        x = slices.float()
        if self.inner != self.shape:
            x = F.interpolate(x, size=self.inner, mode="bilinear", antialias=True, align_corners=False)
        (h, w), (top, left) = self.inner, self.offset
        return F.pad(x, (left, self.size - w - left, top, self.size - h - top))

    def from_model(self, out: torch.Tensor) -> torch.Tensor:
        """(n, c, size, size) -> (n, c, ny, nx): crop the slice's square part, bilinear resize."""
        (h, w), (top, left) = self.inner, self.offset
        crop = out[..., top:top + h, left:left + w]
        if self.inner == self.shape:
            return crop
        return F.interpolate(crop, size=self.shape, mode="bilinear", align_corners=False)

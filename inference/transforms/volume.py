"""DeCoVNet's pre-processing of a CT volume and its lung mask, and the way back to the CT grid.

The paper: HU, window, 16-bit -> 8-bit; every volume resampled to one spatial resolution; the CT
and its lung mask stacked as two channels. The reference crops to the lungs' bounding box and
resizes every slice to 224 x 336 (rows x columns; the lungs are wider than deep), keeping the depth
variable. Here:

1. crop to the bounding box of the lung mask, grown by `margin` of its size (the whole volume when
   the mask is empty);
2. window -1200..600 HU (the reference's window) to 8 bits, scaled to [0, 1];
3. one trilinear resampling of the crop to `size` in-plane and to `z_spacing_mm` along z (the
   reference resampled to 1 mm; 2 mm is the default here, half the cost on a laptop CPU);
4. the lung mask goes through the same resampling (linear, then > 0.5) as channel 1;
5. optionally (`lungs_only`, a deviation for CPU training) the CT channel is set to 0 beyond a few network
   voxels of the lung mask: the network's global max pooling then sees the lungs, not bone and soft tissue.

The weights' card records these settings (`describe`), and `from_card` rebuilds the pre-processing they were
trained with.

`VolumeGrid` records the crop and the sizes, so `to_ct_grid` puts a map computed on the network's
grid (a CAM) back onto the CT grid, and `to_network_index` maps CT voxel indices forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from inference.transforms.common import HUWindow

WINDOW_HU: tuple[float, float] = (-1000.0, 400.0)  # DeCoVNet authors: [-1000, 400] HU -> [0, 1]
SIZE: tuple[int, int] = (224, 336)
Z_SPACING_MM = 2.0


@dataclass(frozen=True)
class VolumeGrid:
    """Where the network's grid lies in the CT: the crop (voxel box) and the resampled shape."""

    ct_shape: tuple[int, int, int]
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (z0, z1), (y0, y1), (x0, x1), half-open
    shape: tuple[int, int, int]  # (depth, rows, columns) of the network input

    @property
    def crop_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.box)  # type: ignore[return-value]

    def to_network_index(self, index: Sequence[float]) -> np.ndarray:
        """Fractional network-grid (t, h, w) index of CT voxel (z, y, x) (voxel centres, align_corners=False)."""
        idx = np.asarray(index, dtype=float)
        lo = np.array([a for a, _ in self.box], dtype=float)
        scale = np.array(self.shape, dtype=float) / np.array(self.crop_shape, dtype=float)
        return (idx - lo + 0.5) * scale - 0.5

    def to_ct_index(self, index: Sequence[float]) -> np.ndarray:
        """The inverse of `to_network_index`."""
        idx = np.asarray(index, dtype=float)
        lo = np.array([a for a, _ in self.box], dtype=float)
        scale = np.array(self.shape, dtype=float) / np.array(self.crop_shape, dtype=float)
        return (idx + 0.5) / scale - 0.5 + lo


@dataclass(frozen=True)
class PreparedVolume:
    """The network input (2, T, H, W) float32 and where it lies on the CT grid."""

    tensor: torch.Tensor
    grid: VolumeGrid


class VolumePreprocessor:
    """CT (HU) + lung mask -> the two-channel DeCoVNet input and its `VolumeGrid`.

    Args:
        window: HU window mapped to 8 bits.
        size: in-plane (rows, columns) of the network input.
        z_spacing_mm: slice spacing after resampling; the depth follows from the lungs' height.
        margin: the lung bounding box grows by this fraction of its size on each side.
        max_depth: cap on the resampled depth (memory guard for very long scans).
        lungs_only: None keeps the whole crop (the paper); k sets the CT channel to 0 farther than k network
            voxels (in-plane and along z) from the lung mask.
    """

    def __init__(self, window: tuple[float, float] = WINDOW_HU, size: tuple[int, int] = SIZE,
                 z_spacing_mm: float = Z_SPACING_MM, margin: float = 0.05, max_depth: int = 400,
                 lungs_only: int | None = None) -> None:
        if z_spacing_mm <= 0 or min(size) < 8:
            raise ValueError(f"need z_spacing_mm > 0 and a size of at least 8 x 8, got {z_spacing_mm}, {size}")
        if lungs_only is not None and lungs_only < 0:
            raise ValueError(f"lungs_only must be None or at least 0, got {lungs_only}")
        self.window = HUWindow(*window, to_uint8=True)
        self.size, self.z_spacing_mm = (int(size[0]), int(size[1])), float(z_spacing_mm)
        self.margin, self.max_depth, self.lungs_only = margin, max_depth, lungs_only

    @classmethod
    def from_card(cls, preprocessing: dict[str, Any] | None, default: VolumePreprocessor) -> VolumePreprocessor:
        """The pre-processing a card's `preprocessing` (as `describe` writes it) records; `default`'s settings
        for what it leaves out (older cards, no card)."""
        pre = preprocessing or {}
        window = pre.get("ct_window_hu", [default.window.low, default.window.high])
        return cls(window=(float(window[0]), float(window[1])), size=tuple(pre.get("size", default.size)),
                   z_spacing_mm=float(pre.get("z_spacing_mm", default.z_spacing_mm)), margin=default.margin,
                   max_depth=default.max_depth, lungs_only=pre.get("lungs_only", default.lungs_only))

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for model cards."""
        return {
            "input": "CT volume + lung mask as 2 channels (N, 2, T, H, W), any slice count",
            "ct_window_hu": [self.window.low, self.window.high],
            "to_uint8": True,
            "crop": f"lung bounding box + {round(100 * self.margin, 6):g} %",
            "size": list(self.size),
            "z_spacing_mm": self.z_spacing_mm,
            "lungs_only": self.lungs_only,
        }

    def grid(self, lungs: np.ndarray, spacing: Sequence[float]) -> VolumeGrid:
        """The crop and network shape for a lung mask on a CT grid of `spacing` (z, y, x) mm."""
        box = lung_box(lungs, self.margin)
        depth_mm = (box[0][1] - box[0][0]) * float(spacing[0])
        depth = int(np.clip(round(depth_mm / self.z_spacing_mm), 1, self.max_depth))
        return VolumeGrid(tuple(lungs.shape), box, (depth, *self.size))

    def __call__(self, hu: np.ndarray, spacing: Sequence[float], lungs: np.ndarray) -> PreparedVolume:
        if hu.ndim != 3 or hu.shape != lungs.shape:
            raise ValueError(f"need a 3D CT and a lung mask of the same shape, got {hu.shape} and {lungs.shape}")
        grid = self.grid(lungs, spacing)
        crop = tuple(slice(a, b) for a, b in grid.box)
        image = torch.from_numpy(self.window(hu[crop]).astype(np.float32) / 255.0)
        image = nn.functional.interpolate(image[None, None], size=grid.shape, mode="trilinear", align_corners=False)
        x = torch.stack([image[0, 0], to_network_grid(lungs, grid).float()])
        if self.lungs_only is not None:
            k = 2 * self.lungs_only + 1
            near = nn.functional.max_pool3d(x[1][None, None], k, stride=1, padding=self.lungs_only)[0, 0]
            x[0] *= near
        return PreparedVolume(x.contiguous(), grid)


def lung_box(lungs: np.ndarray, margin: float = 0.05) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Half-open (z, y, x) bounding box of the mask, grown by `margin` of its size (all of it if empty)."""
    if not lungs.any():
        return tuple((0, n) for n in lungs.shape)  # type: ignore[return-value]
    out = []
    for axis, n in enumerate(lungs.shape):
        hit = np.nonzero(lungs.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        lo, hi = int(hit[0]), int(hit[-1]) + 1
        grow = int(round((hi - lo) * margin))
        out.append((max(0, lo - grow), min(n, hi + grow)))
    return tuple(out)  # type: ignore[return-value]


def to_ct_grid(values: np.ndarray | torch.Tensor, grid: VolumeGrid, fill: float = 0.0) -> np.ndarray:
    """A map on the network grid (T, H, W) resampled (trilinear) into the crop, on a CT-shaped float32 array."""
    t = torch.as_tensor(values, dtype=torch.float32)
    if tuple(t.shape) != grid.shape:
        raise ValueError(f"map shape {tuple(t.shape)} does not match the network grid {grid.shape}")
    back = nn.functional.interpolate(t[None, None], size=grid.crop_shape, mode="trilinear", align_corners=False)
    out = np.full(grid.ct_shape, fill, np.float32)
    out[tuple(slice(a, b) for a, b in grid.box)] = back[0, 0].numpy()
    return out


def to_network_grid(mask: np.ndarray, grid: VolumeGrid) -> torch.Tensor:
    """A CT-grid mask (non-zero = in) cropped and resampled onto the network grid as the lung mask is (bool)."""
    if tuple(mask.shape) != grid.ct_shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the CT {grid.ct_shape}")
    crop = torch.from_numpy(np.ascontiguousarray(mask[tuple(slice(a, b) for a, b in grid.box)] > 0, np.float32))
    up = nn.functional.interpolate(crop[None, None], size=grid.shape, mode="trilinear", align_corners=False)
    return up[0, 0] > 0.5

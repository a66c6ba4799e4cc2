"""A small 2D U-Net (Ronneberger et al.) for the lung mask of DeCoVNet's pipeline (paper 1).

Standard layout: per level two 3x3 conv + BatchNorm + ReLU, 2x2 max-pooling down, 2x2 transposed
convolution up, skip connections by concatenation, a 1x1 convolution to the classes. With the
defaults (one grey input channel, base width 16, 4 levels: 16-32-64-128 channels, 3 classes:
background, left lung, right lung) it has 467,683 parameters and runs on a laptop CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from inference.models._api import ModelSpec, WeightsInfo, register_model
from inference.transforms.slice import LungSlicePreprocess

MODEL_NAME = "lung-unet"
WINDOW_HU = (-1000.0, 400.0)
SIZE = 128  # model input side, px


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice; the spatial size is kept."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """Transposed-conv upsampling by 2, concatenation with the skip, DoubleConv."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class LungUNet(nn.Module):
    """2D U-Net: (N, in_channels, H, W) -> (N, num_classes, H, W) logits; H and W divisible by 2**(levels-1)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, base: int = 16, levels: int = 4) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList([DoubleConv(in_channels, widths[0])])
        self.down.extend(DoubleConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(Up(b, a) for a, b in zip(reversed(widths[:-1]), reversed(widths[1:])))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** (levels - 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(self.pool(x) if i else x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)


def lung_unet(num_classes: int = 3, **kwargs: int) -> LungUNet:
    """The registered builder: one grey channel in, `num_classes` (background, left lung, right lung) out."""
    return LungUNet(num_classes=num_classes, **kwargs)


register_model(ModelSpec(
    name=MODEL_NAME,
    builder=lung_unet,
    input_kind="segmentation",
    classes=("background", "left lung", "right lung"),
    positive_class="left lung",
    description="2D lung U-Net (DeCoVNet's pipeline, Zheng, Wang et al.): left/right lung masks slice by slice, "
                "trained on threshold-method pseudo-labels; `--lungs unet`",
    transforms=LungSlicePreprocess(window_hu=WINDOW_HU, size=SIZE),
    notes={"output": "logits cropped, resized bilinearly to the CT grid, argmax; per lung the largest 3-D component, "
                     "axial hole filling"},
    weights=WeightsInfo(
        file="lung-unet.pt",
        sha256="dfebc564b8e1e6c2e245025061776527c1a09558da3b6f6f818a52c77f2140d8",
        card="lung-unet.card.json",
    ),
))

"""DeCoVNet (Zheng, Wang et al.; paper 1 in shared/papers): a 3D CNN on a CT volume and its lung mask.

Input: (N, 2, T, H, W), channel 0 the CT in [0, 1] (window -1200..600 HU, 8-bit), channel 1 the
lung mask; any slice count T (the paper trains with batch size 1 for that reason). Three stages:

* stem: Conv3d(2, 16) 5x7x7, stride (1, 2, 2), + BN + ReLU, then MaxPool3d 1x3x3, stride (1, 2, 2):
  16 x T x H/4 x W/4 (56 x 84 for the paper's 224 x 336, as its Table 2 gives after the stem);
* two 3D residual blocks, each a 3x3x3 conv + BN beside a shortcut conv (1x1x1, "for dimension
  alignment") whose maps are added: ResBlock-A(16, 64) keeps the grid; a MaxPool3d 2x1x1 halves the
  depth; ResBlock-B(64, 128) halves the in-plane size (stride (1, 2, 2)): 128 x T/2 x H/8 x W/8;
* progressive classifier: Conv3d(128, 64) + ReLU, MaxPool3d 2; Conv3d(64, 32) + ReLU, MaxPool3d 2;
  Conv3d(32, 32) + ReLU; global max pooling over the volume; fully connected (32, 2). `forward`
  returns logits; the softmax is applied by the caller (`probabilities`) and inside the loss.

Where the paper is vague (the text names the layers but not every size), the choices follow the
authors' released code: channel widths 16/64/128/64/32/32, the depth pooling between the residual
blocks and the in-plane stride of ResBlock-B. One conv per residual branch is the paper's wording
("a 3D convolution with a batch norm layer"); a ReLU follows the addition. Pooling uses ceil mode
so that a thin volume never pools to nothing. 570,818 parameters.

CAM: `inference.explain.cam.grad_cam` gives Grad-CAM maps (gradients of the class logit, averaged per
channel, weighting the activations) at named depths; the paper's "Conv3, Conv4, Conv5" maps (mid to
high level) are read as `res_b`, `clf1` and `clf2` (the default `CAM_DEPTHS`, in the registry entry).
"""

from __future__ import annotations

import torch
from torch import nn

from inference.models._api import CamLayers, ModelSpec, register_model
from inference.transforms.volume import SIZE, WINDOW_HU, Z_SPACING_MM, VolumePreprocessor

#: layers whose Grad-CAM maps can be read (`inference.explain.cam.grad_cam`), shallow to deep
CAM_LAYERS: tuple[str, ...] = ("res_a", "res_b", "clf1", "clf2", "clf3")
CAM_DEPTHS: tuple[str, ...] = ("res_b", "clf1", "clf2")


class ResBlock3d(nn.Module):
    """3x3x3 conv + BN, plus a 1x1x1 conv shortcut (channel and stride alignment), added, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)) + self.shortcut(x))


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU())


class DeCoVNet(nn.Module):
    """The network of the module docstring; its Grad-CAM maps are read at the `CAM_LAYERS`."""

    def __init__(self, num_classes: int = 2, in_channels: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, 16, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(16),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.res_a = ResBlock3d(16, 64)
        self.depth_pool = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
        self.res_b = ResBlock3d(64, 128, stride=(1, 2, 2))
        self.clf1 = _conv_relu(128, 64)
        self.pool1 = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)
        self.clf2 = _conv_relu(64, 32)
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2, ceil_mode=True)
        self.clf3 = _conv_relu(32, 32)
        self.fc = nn.Linear(32, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv's maps (N, 32, t, h, w), before global max pooling."""
        x = self.res_b(self.depth_pool(self.res_a(self.stem(x))))
        x = self.pool1(self.clf1(x))
        return self.clf3(self.pool2(self.clf2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.features(x), dim=(2, 3, 4)))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)


def init_weights(model: nn.Module) -> nn.Module:
    """He initialisation of the convolutions (ReLU network), zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def decovnet(num_classes: int = 2, **kwargs) -> DeCoVNet:
    return init_weights(DeCoVNet(num_classes=num_classes, **kwargs))


register_model(ModelSpec(
    name="decovnet",
    builder=decovnet,
    input_kind="volume",
    classes=("NonCOVID", "COVID"),
    positive_class="COVID",
    description="DeCoVNet (Zheng, Wang et al.): 3D CNN on CT + lung mask, weakly supervised lesion localization "
                "(no shipped weights yet)",
    transforms=VolumePreprocessor(window=WINDOW_HU, size=SIZE, z_spacing_mm=Z_SPACING_MM),
    cam_layers=CamLayers(grad_cam=CAM_DEPTHS),
    notes={
        "lung_mask": "threshold method (segment_lungs) by default; the 2D lung U-Net with --lungs unet",
        "cam_depths": list(CAM_DEPTHS),
    },
))

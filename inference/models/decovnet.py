"""DeCoVNet (Zheng, Wang et al.; paper 1 in shared/papers): a 3D CNN on a CT volume and its lung mask, as the
authors' released model builds it.

Input: (N, 2, T, H, W), channel 0 the CT in [0, 1] (HU window -1000..400), channel 1 the lung mask; any slice
count T (batch size 1, as the paper trains). The layers:

* stem: Conv3d(2, 16) 5x7x7, stride (1, 2, 2), no bias; BN; ReLU; MaxPool3d 1x3x3, stride (1, 2, 2);
* stage A: one bottleneck block 16 -> 64 (1x1x1 conv to a quarter of the output width, 3x3x3 conv, 1x1x1
  conv to 64; BN after each; a 1x1x1 conv + BN shortcut; ReLU after the addition; the last BN's gamma starts
  at 0, so the block starts as its shortcut); MaxPool3d 2x1x1 over the slices;
* stage B: one bottleneck block 64 -> 128 with in-plane stride 2 (in its 3x3x3 conv and its shortcut);
* progressive classifier, no BatchNorm: AdaptiveMaxPool3d (16, 24, 36) -> Conv3d(128, 64) + ReLU ->
  AdaptiveMaxPool3d (4, 12, 18) -> Conv3d(64, 32) + ReLU -> AdaptiveMaxPool3d (1, 6, 9) -> Dropout3d(0) ->
  Conv3d(32, 32) + ReLU -> global max pooling -> Linear(32, 32) -> Linear(32, 2), no activation between the
  two linear layers. `forward` returns logits; the softmax is applied by the caller and inside the loss.

365,410 parameters. The adaptive pools fix the classifier's grid whatever the input size (a smaller input, as
CPU training uses, is pooled up to the same grid). The earlier implementation (plain residual blocks and fixed
2x pooling in the classifier) did not learn even a bright cube in noise; this one learns it in about 150 steps.

CAM: `inference.explain.cam.grad_cam` gives Grad-CAM maps (gradients of the class logit, averaged per
channel, weighting the activations) at named depths; the paper's "Conv3, Conv4, Conv5" maps (mid to high
level) are read as `res_b`, `clf1` and `clf2` (the default `CAM_DEPTHS`, in the registry entry).
"""

from __future__ import annotations

import torch
from torch import nn

from inference.models._api import CamLayers, ModelSpec, register_model
from inference.transforms.volume import SIZE, WINDOW_HU, Z_SPACING_MM, VolumePreprocessor

#: layers whose Grad-CAM maps can be read (`inference.explain.cam.grad_cam`), shallow to deep
CAM_LAYERS: tuple[str, ...] = ("res_a", "res_b", "clf1", "clf2", "clf3")
CAM_DEPTHS: tuple[str, ...] = ("res_b", "clf1", "clf2")
#: the grids the progressive classifier pools to before each of its convolutions
CLASSIFIER_GRIDS: tuple[tuple[int, int, int], ...] = ((16, 24, 36), (4, 12, 18), (1, 6, 9))


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3x3 (stride) -> 1x1x1 convs with BN, a 1x1x1 conv + BN shortcut, added, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int] = (1, 1, 1)) -> None:
        super().__init__()
        mid = out_channels // 4
        self.conv1 = nn.Conv3d(in_channels, mid, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.shortcut = nn.Sequential(nn.Conv3d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                                      nn.BatchNorm3d(out_channels))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        return self.act(self.bn3(self.conv3(y)) + self.shortcut(x))


def _pool_conv_relu(grid: tuple[int, int, int], in_channels: int, out_channels: int,
                    dropout: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.AdaptiveMaxPool3d(grid)]
    if dropout:
        layers.append(nn.Dropout3d(p=0.0))  # the authors' p: kept for the structure, does nothing
    layers += [nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


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
        self.res_a = Bottleneck3d(16, 64)
        self.depth_pool = nn.MaxPool3d(kernel_size=(2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
        self.res_b = Bottleneck3d(64, 128, stride=(1, 2, 2))
        self.clf1 = _pool_conv_relu(CLASSIFIER_GRIDS[0], 128, 64)
        self.clf2 = _pool_conv_relu(CLASSIFIER_GRIDS[1], 64, 32)
        self.clf3 = _pool_conv_relu(CLASSIFIER_GRIDS[2], 32, 32, dropout=True)
        self.fc = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv's maps (N, 32, 1, 6, 9), before global max pooling."""
        x = self.res_b(self.depth_pool(self.res_a(self.stem(x))))
        return self.clf3(self.clf2(self.clf1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.amax(self.features(x), dim=(2, 3, 4)))

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)


def init_weights(model: nn.Module) -> nn.Module:
    """The authors' initialisation: He-normal convolutions, BN gamma 1 and beta 0 (gamma 0 for each bottleneck's
    last BN), linear weights normal with std 0.01, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, Bottleneck3d):
            nn.init.zeros_(m.bn3.weight)
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
    screens=True,
    notes={
        "lung_mask": "threshold method (segment_lungs) by default; the 2D lung U-Net with --lungs unet",
        "cam_depths": list(CAM_DEPTHS),
    },
))

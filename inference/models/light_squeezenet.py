"""Light SqueezeNet for laptops (Polsinelli et al., paper 2 in shared/papers).

Three variants, as in the paper:

* SqueezeNet without bypass (eight modified Fire modules in cascade);
* SqueezeNet with simple bypass (identity skips around Fire 3, 5, 7 and 9);
* the proposed light CNN: no bypass, plus a transposed convolution that upsamples the
  last Fire module's maps 4x in width and height, concatenated in depth with the
  second Fire module's maps (the paper's "Fire 2"), weighted by a 1x1 convolution with
  128 filters; all these maps are concatenated in depth, global-average pooled and
  classified (2 classes). About 1.27 M parameters (paper: 1.26 M).

Heat maps (`inference.explain.cam`, layers named in the registry entry): the paper's CAM over
`features`, weighted by `fc`; Grad-CAM at Fire 2's output (`trunk.fires.0`), the finest layer the
classifier reads (1/4 of the input): the paper's CAM mixes in the upsampled Fire 9 maps (1/16),
which are too coarse to point at a lesion.

The modified Fire module is squeeze 1x1 -> BatchNorm -> ELU, then expand 1x1 and 3x3,
each -> ELU, concatenated. All ReLUs are ELUs. The trunk follows SqueezeNet 1.1 (the
MATLAB model the paper started from). Input: one grey channel, 224 x 224.
"""

from __future__ import annotations

import torch
from torch import nn

from inference.models._api import CamLayers, ModelSpec, WeightsInfo, register_model
from inference.transforms.slice import SlicePreprocess

#: (squeeze, expand) channels of Fire 2..9 (SqueezeNet 1.1)
FIRE_CHANNELS = ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))


class _ELUFunction(torch.autograd.Function):
    """ELU (alpha 1) through `exp`, with the derivative read from the output (e^x = out + 1 below zero)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = _elu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (out,) = ctx.saved_tensors
        return out.clamp(max=0).add_(1).mul_(grad)


def _elu(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """ELU(x) as max(x, e^min(x, 0) - 1) (e^x - 1 >= x), into `out` (x itself for in place) or a new tensor: four
    passes over memory where max(x, 0) + e^min(x, 0) - 1 took five."""
    negative = x.clamp(max=0).exp_().sub_(1)
    return torch.maximum(x, negative, out=negative if out is None else out)


class FastELU(nn.ELU):
    """`nn.ELU(alpha=1)` computed as max(x, exp(min(x, 0)) - 1): torch's CPU ELU calls `expm1` element by
    element and takes 2-3x as long as a vectorized `exp` (the light model's activations were most of its time on
    a CPU). Equal to `nn.ELU` within 1e-7 in float32 (under bfloat16 autocast, as `F.elu` there, within the
    format's precision); in place where no gradient is needed; plain ELU in ONNX export."""

    def __init__(self) -> None:
        super().__init__(alpha=1.0, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() or torch.jit.is_scripting() or torch.jit.is_tracing():
            return nn.functional.elu(x)
        if torch.is_grad_enabled() and x.requires_grad:
            return _ELUFunction.apply(x)
        return _elu(x, out=x)


class Fire(nn.Module):
    """Modified Fire module: squeeze 1x1 -> BN -> ELU; expand 1x1 and 3x3 -> ELU; concatenate."""

    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, kernel_size=1)
        self.bn = nn.BatchNorm2d(squeeze)
        self.expand1x1 = nn.Conv2d(squeeze, expand, kernel_size=1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, kernel_size=3, padding=1)
        self.act = FastELU()

    @property
    def out_channels(self) -> int:
        return 2 * self.expand1x1.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.act(self.bn(self.squeeze(x)))
        return torch.cat([self.act(self.expand1x1(s)), self.act(self.expand3x3(s))], dim=1)


class SqueezeTrunk(nn.Module):
    """conv1 -> pool -> Fire2, Fire3 -> pool -> Fire4, Fire5 -> pool -> Fire6..Fire9.

    Returns the Fire 2 maps (1/4 of the input size) and the Fire 9 maps (1/16).
    """

    def __init__(self, in_channels: int = 1, bypass: bool = False) -> None:
        super().__init__()
        self.bypass = bypass
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 64, kernel_size=3, stride=2, padding=1), FastELU())
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        fires, c = [], 64
        for squeeze, expand in FIRE_CHANNELS:
            fires.append(Fire(c, squeeze, expand))
            c = 2 * expand
        self.fires = nn.ModuleList(fires)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(self.conv1(x))
        fire2 = None
        for n, fire in enumerate(self.fires, start=2):
            if n in (4, 6):
                x = self.pool(x)
            y = fire(x)
            # simple bypass: identity skips around Fire 3, 5, 7, 9 (same channel count in and out)
            x = y + x if self.bypass and n in (3, 5, 7, 9) else y
            if n == 2:
                fire2 = x
        return fire2, x


class SqueezeNetClassic(nn.Module):
    """SqueezeNet (no bypass or simple bypass) with modified Fire modules: conv10 1x1 -> GAP."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, bypass: bool = False, dropout: float = 0.5):
        super().__init__()
        self.trunk = SqueezeTrunk(in_channels, bypass)
        self.dropout = nn.Dropout(dropout)
        self.conv10 = nn.Conv2d(512, num_classes, kernel_size=1)
        self.act = FastELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, f9 = self.trunk(x)
        return self.act(self.conv10(self.dropout(f9))).mean(dim=(2, 3))


class LightSqueezeNet(nn.Module):
    """The paper's proposed light CNN; `features()` returns the maps its CAM is computed on."""

    def __init__(self, num_classes: int = 2, in_channels: int = 1, up_channels: int = 64, dropout: float = 0.5):
        super().__init__()
        self.trunk = SqueezeTrunk(in_channels, bypass=False)
        self.up = nn.ConvTranspose2d(512, up_channels, kernel_size=4, stride=4)
        self.weighted = nn.Conv2d(128 + up_channels, 128, kernel_size=1)
        self.act = FastELU()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128 + up_channels + 128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Depth-concatenated maps [Fire 2, upsampled Fire 9, weighted sum] at 1/4 of the input size: what the
        classifier pools, and so what its CAM is computed on."""
        f2, f9 = self.trunk(x)
        up = self.act(self.up(f9))
        if up.shape[-2:] != f2.shape[-2:]:  # odd input sizes: align to Fire 2's grid
            up = nn.functional.interpolate(up, size=f2.shape[-2:], mode="bilinear", align_corners=False)
        mixed = torch.cat([f2, up], dim=1)
        return torch.cat([f2, up, self.act(self.weighted(mixed))], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x).mean(dim=(2, 3))))


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) initialisation of every convolution: with BatchNorm only after the squeeze layers,
    PyTorch's default init shrinks the signal through the trunk and training from scratch stalls."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def light_squeezenet(num_classes: int = 2, **kwargs) -> LightSqueezeNet:
    return init_weights(LightSqueezeNet(num_classes=num_classes, **kwargs))


def squeezenet_no_bypass(num_classes: int = 2, **kwargs) -> SqueezeNetClassic:
    return init_weights(SqueezeNetClassic(num_classes=num_classes, bypass=False, **kwargs))


def squeezenet_simple_bypass(num_classes: int = 2, **kwargs) -> SqueezeNetClassic:
    return init_weights(SqueezeNetClassic(num_classes=num_classes, bypass=True, **kwargs))


CLASSES = ("NonCOVID", "COVID")
#: pre-processing of the shipped weights and of the baselines: lung window, pad, resize 268, centre crop 224
TRANSFORMS = SlicePreprocess(window_hu=(-1350, 150), resize=268, crop=224, normalize="per-image")

register_model(ModelSpec(
    name="light-squeezenet",
    builder=light_squeezenet,
    input_kind="slice",
    classes=CLASSES,
    positive_class="COVID",
    description="Light SqueezeNet (Polsinelli et al.): CPU-friendly COVID-19 slice classifier with CAM",
    transforms=TRANSFORMS,
    cam_layers=CamLayers(cam="features", classifier="fc", grad_cam=("trunk.fires.0",)),
    screens=True,
    weights=WeightsInfo(
        file="light-squeezenet.pt",
        sha256="afe5781a726797cdc8e80a875462869b895f7f7db2ef134b9647a310fc7b8598",
        card="light-squeezenet.card.json",
    ),
))
for _name, _builder, _bypass in (("squeezenet-no-bypass", squeezenet_no_bypass, "no bypass"),
                                 ("squeezenet-simple-bypass", squeezenet_simple_bypass, "simple bypass")):
    register_model(ModelSpec(
        name=_name,
        builder=_builder,
        input_kind="slice",
        classes=CLASSES,
        positive_class="COVID",
        description=f"SqueezeNet with modified Fire modules, {_bypass} (paper 2 baseline; no shipped weights)",
        transforms=TRANSFORMS,
        screens=True,
    ))

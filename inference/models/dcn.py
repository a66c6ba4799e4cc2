"""DCN, the dual-branch combination network (Gao, Su, Jiang et al., Medical Image Analysis 2021; paper 4).

Per 2D slice, two branches run side by side:

* segmentation branch (`UNet`): a U-Net whose five encoder blocks have 64, 128, 256, 512 and 1024
  channels (`base` x 1, 2, 4, 8, 16), four 2x2 max-poolings down and four 2x2 transposed convolutions up
  (each halving the channels), skip connections by concatenation, and a 1x1 convolution to background /
  ground-glass opacity (GGO) / consolidation logits at the input size. Every block is the paper's block,
  exactly: 3x3 conv, BN, ReLU, 3x3 conv (no BN or ReLU after the second conv). The paper's lung
  segmenter has the same architecture (3 classes there too: pass `num_classes`). 31.0 M parameters.
* classification branch (`ResNet50Branch`): ResNet-50 from torchvision's `Bottleneck` (written out here,
  state-dict compatible, see `Bottleneck`): 7x7 stem with
  max-pooling, four residual stages of 3, 4, 6 and 3 blocks, global average pooling, a linear layer.
  Random initialization (torchvision's scheme): no pretrained weights can be downloaded here. 23.5 M.
* a lesion-attention module (`LesionAttention`) before each residual stage, as the paper's eq. 1-3:
  x_in = [conv1x1(x_c), conv1x1(x_s)] (F_int = F_c / 2 channels each, the attention-gate convention of
  Oktay et al. that the paper builds on; the paper does not give F_int), alpha = sigmoid(conv1x1(ReLU(
  x_in))) (one channel, in [0, 1]), x_out = f3([alpha * x_c, x_s]) with f3 = conv1x1(F_c + F_s -> F_c),
  conv1x1(F_c -> F_c), BN, ReLU. The output keeps x_c's channels, so the residual stage is unchanged.

Which U-Net features each LA module reads (`LA_SOURCES`; Fig. 1B pairs every residual block with the
segmentation features of matching scale). The inputs of the four stages lie at 1/4, 1/4, 1/8 and 1/16
of the slice, so: LA 1 <- encoder block 3 (1/4, 256 ch), LA 2 <- the decoder block at 1/4 (256 ch),
LA 3 <- the decoder block at 1/8 (512 ch), LA 4 <- the bottleneck, encoder block 5 (1/16, 1024 ch). The
two middle modules thus see the decoder's lesion-specific maps, matching the paper's finding that the
attention maps of LA 2 and 3 follow the lesions best. For sides divisible by 16 the scales agree
exactly; a map of another size would be resized bilinearly to x_c's grid. Inputs must have H and W
divisible by 16 (the U-Net's four poolings).

The gradient cut: the LA modules get x_s detached, so the classification loss never reaches the
segmentation branch ("backpropagation between the two branches is cut off"); the Dice loss trains it.

`forward` returns a `DCNOutput`: class logits, segmentation logits and the four attention maps, which
are this model's heat map. `dcn_loss` is the paper's loss (eq. 5-8), `SliceProbabilityMapping` and
`resample_probabilities` its patient-level step (section 2.4; `DCN.spm`, trained after the slice
network as in the paper). Parameters (defaults: one input channel, 2 classes, 3 segmentation classes):
31,033,667 (U-Net) + 23,505,858 (ResNet-50) + 5,549,124 (LA modules) + 58,881 (SPM) = 60,147,530.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inference.models._api import ModelSpec, WeightsInfo, register_model
from inference.transforms.common import ResizeSquare

MODEL_NAME = "dcn"
CLASSES = ("NonCOVID", "COVID")
SEG_CLASSES = ("background", "GGO", "consolidation")
PAPER_WINDOW_HU = (-900.0, 100.0)  # the paper's lung window, -900..100 HU to 8 bits
#: the window the COVID-SemiSeg JPEGs (the training masks' images) were exported with, estimated by histogram
#: matching (tests/benchmarks/eval_export_window.py); training and inference use it so real CT looks the same
EXPORT_WINDOW_HU: tuple[float, float] = (-1080.0, 200.0)
WINDOW_HU = EXPORT_WINDOW_HU
SIZE = 192  # model input side, px; reduced from the paper's 512 for CPU training
SHIPPED_BASE = 16  # the shipped network's width (the paper: 64), for CPU training and inference
RESNET50_BLOCKS = (3, 4, 6, 3)
#: the U-Net feature each LA module reads (LA 1..4); encN / decN lie at 1 / 2**(N-1) of the input
LA_SOURCES = ("enc3", "dec3", "dec4", "enc5")
SPM_POINTS = 100  # slice probability mapping: resampled curve length


class ConvBlock(nn.Sequential):
    """The paper's U-Net block: 3x3 conv, BN, ReLU, 3x3 conv; the spatial size is kept."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1),
        )


class UNet(nn.Module):
    """The segmentation branch: (N, in_channels, H, W) -> (N, num_classes, H, W) logits and named features.

    Features: "enc1".."enc5" (encoder block outputs, enc5 the bottleneck) and "dec4".."dec1" (decoder
    block outputs), where encN and decN lie at 1 / 2**(N-1) of the input with `base` * 2**(N-1) channels.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, base: int = 64) -> None:
        super().__init__()
        self.widths = tuple(base * 2**i for i in range(5))
        w = self.widths
        self.encoder = nn.ModuleList([ConvBlock(in_channels, w[0]), *(ConvBlock(a, b) for a, b in zip(w, w[1:]))])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(4)))
        self.decoder = nn.ModuleList(ConvBlock(2 * w[i], w[i]) for i in reversed(range(4)))
        self.head = nn.Conv2d(w[0], num_classes, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.encoder, start=1):
            x = block(self.pool(x) if i > 1 else x)
            feats[f"enc{i}"] = x
        for level, up, block in zip(range(4, 0, -1), self.up, self.decoder):
            x = block(torch.cat([feats[f"enc{level}"], up(x)], dim=1))
            feats[f"dec{level}"] = x
        return self.head(x), feats


class Bottleneck(nn.Module):
    """torchvision's ResNet `Bottleneck` (v1.5: the stride on the 3x3 conv), layer for layer and with its
    attribute names, so state dicts are interchangeable (a test checks outputs against torchvision's).

    Written out because importing torchvision costs seconds (it pulls in torch._dynamo) and, under a
    software OpenGL (Mesa llvmpipe, as on a headless machine), loading the LLVM that torch._dynamo's
    triton brings while the viewer renders crashed the process.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Branch(nn.Module):
    """The classification branch: ResNet-50 (torchvision's `Bottleneck`, stages of `blocks`), stem width `base`.

    With base 64 the layers are exactly torchvision's `resnet50` (one input channel here); `stem`,
    `stages` and `head` are called one by one by `DCN` so that an LA module can sit before each stage.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 64,
                 blocks: Sequence[int] = RESNET50_BLOCKS) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(base),
            nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, c_in = [], base
        for i, n in enumerate(blocks):
            planes, stride = base * 2**i, 1 if i == 0 else 2
            c_out = planes * Bottleneck.expansion
            down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
            layers = [Bottleneck(c_in, planes, stride, down)]
            layers += [Bottleneck(c_out, planes) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        #: channels entering each stage (the LA modules' F_c)
        self.stage_in_channels = (base, *(base * 2**i * Bottleneck.expansion for i in range(len(blocks) - 1)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pooling and the linear layer: (N, C, h, w) -> (N, num_classes) logits."""
        return self.fc(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


class LesionAttention(nn.Module):
    """The LA module (paper eq. 1-3): (x_c, x_s) -> (x_out with F_c channels, alpha (N, 1, h, w) in [0, 1])."""

    def __init__(self, f_c: int, f_s: int, f_int: int | None = None) -> None:
        super().__init__()
        f_int = f_int or max(1, f_c // 2)
        self.conv_c = nn.Conv2d(f_c, f_int, 1)  # W_c, b_c
        self.conv_s = nn.Conv2d(f_s, f_int, 1)  # W_s, b_s
        self.psi = nn.Conv2d(2 * f_int, 1, 1)  # W_int, b_int
        self.f3 = nn.Sequential(
            nn.Conv2d(f_c + f_s, f_c, 1), nn.Conv2d(f_c, f_c, 1, bias=False), nn.BatchNorm2d(f_c),
            nn.ReLU(inplace=True),
        )

    def forward(self, x_c: torch.Tensor, x_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_in = torch.cat([self.conv_c(x_c), self.conv_s(x_s)], dim=1)
        alpha = torch.sigmoid(self.psi(torch.relu(x_in)))
        return self.f3(torch.cat([alpha * x_c, x_s], dim=1)), alpha


class DCNOutput(NamedTuple):
    """What `DCN.forward` returns."""

    logits: torch.Tensor  # (N, num_classes) slice class logits
    seg_logits: torch.Tensor  # (N, seg_classes, H, W) per-pixel logits (background, GGO, consolidation)
    attention: tuple[torch.Tensor, ...]  # the four LA maps, each (N, 1, h, w) in [0, 1]: the heat map


class DCN(nn.Module):
    """The dual-branch combination network of the module docstring; `base` 64 is the paper's width.

    Input (N, in_channels, H, W) with H and W divisible by 16: a lung-segmented slice in [0, 1].
    """

    def __init__(self, num_classes: int = 2, seg_classes: int = 3, in_channels: int = 1, base: int = 64) -> None:
        super().__init__()
        self.seg = UNet(in_channels, seg_classes, base)
        self.cls = ResNet50Branch(in_channels, num_classes, base)
        seg_channels = {f"{kind}{n}": base * 2 ** (n - 1) for kind in ("enc", "dec") for n in range(1, 6)}
        self.la = nn.ModuleList(LesionAttention(f_c, seg_channels[src])
                                for f_c, src in zip(self.cls.stage_in_channels, LA_SOURCES))
        self.spm = SliceProbabilityMapping()  # the patient level; trained after the slice network

    def case_probability(self, slice_probabilities: Sequence[float] | np.ndarray | torch.Tensor) -> float:
        """P(positive) of a case from its slices' positive-class probabilities (`SliceProbabilityMapping`)."""
        return self.spm.case_probability(slice_probabilities)

    def segment_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The segmentation branch alone: (N, seg_classes, H, W) logits, as `forward(x).seg_logits`."""
        return self.seg(x)[0]

    def forward(self, x: torch.Tensor) -> DCNOutput:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"DCN needs height and width divisible by 16, got {tuple(x.shape[-2:])}")
        seg_logits, feats = self.seg(x)
        c = self.cls.stem(x)
        maps = []
        for la, stage, src in zip(self.la, self.cls.stages, LA_SOURCES):
            s = feats[src].detach()  # the gradient cut: no classification gradient into the segmentation branch
            if s.shape[-2:] != c.shape[-2:]:
                s = F.interpolate(s, size=c.shape[-2:], mode="bilinear", align_corners=False)
            c, alpha = la(c, s)
            maps.append(alpha)
            c = stage(c)
        return DCNOutput(self.cls.head(c), seg_logits, tuple(maps))


FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # test-time flips: none, x, y, both
HEAT_MAPS = (1, 2)  # the LA maps averaged into the heat map: LA 2 and LA 3, 0-based


class AveragedOutput(NamedTuple):
    """`averaged_outputs`: probabilities, each averaged over the flips and mapped back to the input's grid."""

    seg: torch.Tensor  # (N, seg_classes, H, W) softmax
    heat: torch.Tensor  # (N, 1, H, W) mean of the `HEAT_MAPS` LA maps, upsampled to the input
    p: torch.Tensor  # (N, num_classes) slice class softmax


def flip_average(fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor, *,
                 tta: bool) -> tuple[torch.Tensor, ...]:
    """`fn(x)`'s outputs; `tta`: averaged over the four `FLIPS` of x, each (N, C, H, W) output flipped back
    first (per-sample outputs such as class probabilities are averaged as they are)."""
    flips = FLIPS if tta else FLIPS[:1]
    total: list[torch.Tensor] | None = None
    for dims in flips:
        outs = [o.flip(dims) if dims and o.ndim == 4 else o for o in fn(x.flip(dims) if dims else x)]
        total = outs if total is None else [t + o for t, o in zip(total, outs)]
    assert total is not None
    return tuple(t / len(flips) for t in total)


def averaged_outputs(model: nn.Module, x: torch.Tensor, *, tta: bool) -> AveragedOutput:
    """The model's outputs for x (N, 1, H, W) as probabilities (`flip_average`)."""
    def probabilities(xi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = model(xi)
        maps = torch.stack([F.interpolate(out.attention[i].float(), size=xi.shape[-2:], mode="bilinear",
                                          align_corners=False) for i in HEAT_MAPS]).mean(dim=0)
        return torch.softmax(out.seg_logits.float(), dim=1), maps, torch.softmax(out.logits.float(), dim=1)

    seg, heat, p = flip_average(probabilities, x, tta=tta)
    return AveragedOutput(seg, heat, p)


class DCNLoss(NamedTuple):
    """The loss and its terms (each a scalar tensor): total = dice + lambda * ce."""

    total: torch.Tensor
    dice: torch.Tensor  # mean over the batch of w * (per-slice Dice loss)
    ce: torch.Tensor  # mean cross-entropy of the slice classes


def lesion_dice_loss(seg_logits: torch.Tensor, seg_target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-slice soft Dice loss over the lesion classes, (N,): 1 - mean_k (2 sum p g + s) / (sum p + sum g + s).

    p: softmax probability of lesion class k (every class but 0, the background: GGO and consolidation),
    g: its one-hot target; each class gets its own Dice, averaged over the lesion classes. The background
    is left out because it dominates every slice, the imbalance the paper adopts Dice loss for; a class
    absent from a slice scores 1 only when it is predicted absent too (the smoothing s). The paper's eq. 5
    drops the factor 2 in its second form; its first form (2|X n Y| / (|X| + |Y|)) and Milletari's Dice keep
    it, and so does this.
    """
    probs = torch.softmax(seg_logits, dim=1)[:, 1:]
    target = F.one_hot(seg_target.long(), seg_logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].to(probs.dtype)
    inter = (probs * target).sum(dim=(2, 3))
    denom = probs.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean(dim=1)


def dcn_loss(out: DCNOutput, seg_target: torch.Tensor, cls_target: torch.Tensor, has_lesion_mask: torch.Tensor,
             lam: float = 1.0, smooth: float = 1.0) -> DCNLoss:
    """The paper's loss (eq. 5-8): L = w * Dice + lambda * CE, averaged over the slices of the batch.

    Args:
        out: the network's output.
        seg_target: (N, H, W) class indices (0 background, 1 GGO, 2 consolidation).
        cls_target: (N,) slice class indices.
        has_lesion_mask: (N,) bool: w = 1 for slices with annotated lesions (their Dice counts), else 0.
        lam: lambda, the weight of the classification term (the paper: 1).
        smooth: the Dice smoothing s (the paper: 1).
    """
    w = has_lesion_mask.to(out.seg_logits.dtype)
    dice = (w * lesion_dice_loss(out.seg_logits, seg_target, smooth)).mean()
    ce = F.cross_entropy(out.logits, cls_target.long())
    return DCNLoss(dice + lam * ce, dice, ce)


def resample_probabilities(p: Sequence[float] | np.ndarray | torch.Tensor, n: int = SPM_POINTS) -> torch.Tensor:
    """A case's slice probabilities sorted in descending order and linearly interpolated to `n` evenly spaced
    values (float32, shape (n,)): the first is the largest, the last the smallest. One slice gives n copies."""
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().double().numpy()
    a = np.sort(np.asarray(p, dtype=np.float64).ravel())[::-1]
    if a.size == 0:
        raise ValueError("need at least one slice probability")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    values = np.interp(np.linspace(0.0, a.size - 1, n), np.arange(a.size), a)
    return torch.from_numpy(values.astype(np.float32))


class SliceProbabilityMapping(nn.Module):
    """The patient-level classifier (section 2.4): resampled slice probabilities (N, n) -> case logits (N,).

    A fully connected net n -> 256 -> 128 -> 1 with ReLUs between; train its logits with BCE (`loss`).
    """

    def __init__(self, n: int = SPM_POINTS, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        sizes = [n, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def case_probability(self, slice_probabilities: Sequence[float] | np.ndarray | torch.Tensor) -> float:
        """P(positive) for one case from its slice probabilities (any count)."""
        x = resample_probabilities(slice_probabilities, self.n)[None].to(next(self.parameters()).device)
        with torch.no_grad():
            return float(torch.sigmoid(self(x))[0])

    @staticmethod
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy on the logits (target 1 for a positive case)."""
        return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


@dataclass(frozen=True)
class DCNPreprocess:
    """The DCN's input: a CT slice windowed to [0, 1] (`window_hu`: the training images' export window, in
    place of the paper's -900..100 HU), padded to a square with 0 and resized to size x size; no further
    normalization.

    `size` is 192 here, reduced from the paper's 512 for CPU training; it must be divisible by 16.
    """

    window_hu: tuple[float, float] = WINDOW_HU
    size: int = SIZE

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 16:
            raise ValueError(f"size must be a positive multiple of 16, got {self.size}")

    def window(self, hu: torch.Tensor) -> torch.Tensor:
        """HU -> [0, 1] over `window_hu` (float32)."""
        lo, hi = self.window_hu
        return ((hu.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)

    def __call__(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Grey images in [0, 1] of any size -> the (N, 1, size, size) float32 batch (CPU)."""
        resize = ResizeSquare(self.size)
        return torch.from_numpy(np.stack([resize(np.asarray(im, np.float32)) for im in images]))[:, None]

    def describe(self) -> dict[str, Any]:
        return {
            "input": "2D slice, one grey channel in [0, 1] (the paper feeds lung-segmented slices)",
            "ct_window_hu": list(self.window_hu),
            "window_note": "the COVID-SemiSeg export window, estimated by histogram matching; the paper's is "
                           f"{PAPER_WINDOW_HU[0]:g}..{PAPER_WINDOW_HU[1]:g} HU",
            "pad_to_square": True,
            "resize": self.size,
            "resize_note": "reduced from the paper's 512 for CPU training",
            "normalize": "none (window to [0, 1])",
        }


def load_slice_network(model: DCN, state: dict[str, torch.Tensor]) -> None:
    """Load a state dict into `model`; a state from before the patient-level step (no `spm.*` keys: the slice
    network is trained first) leaves the SPM as it is. Any other missing or unexpected key raises."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("spm.") for k in missing):
        raise RuntimeError(f"state does not fit DCN: missing {missing}, unexpected {unexpected}")


def dcn(num_classes: int = 2, base: int = SHIPPED_BASE, **kwargs: Any) -> DCN:
    """The registered builder: the shipped width `SHIPPED_BASE` unless told (kwargs: seg_classes, in_channels)."""
    return DCN(num_classes=num_classes, base=base, **kwargs)


register_model(ModelSpec(
    name=MODEL_NAME,
    builder=dcn,
    input_kind="segmentation",
    classes=CLASSES,
    positive_class="COVID",
    description="DCN, dual-branch combination network (Gao, Su, Jiang et al., Medical Image Analysis 2021): "
                "U-Net lesion segmentation (GGO, consolidation) + ResNet-50 slice classifier joined by lesion "
                "attention, slice probability mapping for the case; trained on radiologists' masks",
    transforms=DCNPreprocess(),
    screens=True,  # the slice probability mapping gives the case's
    notes={
        "segmentation_classes": list(SEG_CLASSES),
        "heat_map": "the four lesion-attention maps (DCNOutput.attention); the paper finds LA 2 and 3 closest to "
                    "the lesions",
        "patient_level": f"slice probability mapping: sorted slice probabilities resampled to {SPM_POINTS} values, "
                         "FC 100-256-128-1",
        "pretrained": "none: trained from scratch (no ImageNet weights can be downloaded here)",
    },
    weights=WeightsInfo(
        file="dcn.pt",
        sha256="7d724a62d254da448763c6876104bf687dc5bab368d8fbde590bfbbba405f2ba",
        card="dcn.card.json",
    ),
))

"""COVID-CT-Mask-Net (Ter-Sarkisov; paper 3 in shared/papers): a lightweight Mask R-CNN that finds lesion
instances in a CT slice, and a classifier built on it that answers control / common pneumonia / COVID-19.

Built from torchvision's detection blocks with the sizes the authors give (the facts of their released model;
this is our own code):

* backbone: ResNet18 truncated, "T1" without its last stage (the single feature map is stage 3's, 256 maps at
  stride 16) or "T2" without its last two (stage 2's, 128 maps at stride 8); one FPN level of 256 maps, no extra
  pooled level; no ImageNet weights (none can be downloaded here: trained from scratch);
* RPN on that map: anchors of 8 to 128 px (the authors': 2 to 32 px; see `ANCHOR_SIZES`) at aspect ratios 0.1 to 2
  (30 per location); NMS 0.75;
  pre/post-NMS top 2000 in training, 1000 at test; 256 anchors per image sampled, 75 % positive;
* RoI heads: box RoIAlign 7x7, a two-layer MLP of 128, box coder weights (10, 10, 5, 5), 256 RoIs per image
  sampled (75 % positive, IoU 0.75 / 0.5); mask RoIAlign 14x14, one 3x3 conv of 128, a 2x2 transposed conv and a
  1x1 conv to 28x28 logits; one foreground class "lesion" (GGO and consolidation merged);
* input: the slice as three identical channels in [0, 1], normalised with ImageNet's mean and std, resized so
  its short side is 512 (at most 1024).

The classifier (`CovidCTMaskNet`) drops the mask branch, runs the RoI box head in evaluation mode and keeps a
fixed batch of `ROI_BATCH` (128) detections: background column dropped, boxes clipped, empty boxes removed,
score threshold -0.01, NMS 0.75, ranked by score. Each detection becomes 5 numbers (its lesion score and its four
raw box-regression deltas); missing rows are filled by repeating valid detections in rank order (`fill_rows`);
the 640 numbers go through the classification module S: Linear 640 -> 512, ReLU, Linear 512 -> 512, ReLU,
Linear 512 -> 3. In training only S and the backbone's BatchNorm affine parameters (not the downsample ones)
learn; the rest stays in evaluation mode (`freeze_for_classification`).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

from inference.models._api import ModelSpec, WeightsInfo, register_model

#: the three answers of the classifier, in the authors' label order
CLASSES: tuple[str, ...] = ("control", "pneumonia", "covid")
ROI_BATCH = 128  # detections per image that form the classifier's feature vector
S_WIDTH = 512  # hidden width of the classification module S
#: anchor sides in px. The authors' released model: 2, 4, 8, 16, 32 for their 512 px COVIDx-CT slices. COVID-SemiSeg's
#: lesions are 10-200 px at the short side of 384 used here, and with the authors' anchors the RPN's box loss was
#: still 2.0 after 8 epochs from scratch (0.24 with these): a deviation, in the card. Same 30 anchors per location.
ANCHOR_SIZES = (8, 16, 32, 64, 128)
PAPER_ANCHOR_SIZES = (2, 4, 8, 16, 32)
ASPECT_RATIOS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0)
IMAGE_MEAN, IMAGE_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the slice's short side as the shipped segmentation model sees it (the paper: 512; COVID-SemiSeg's slices are
#: 200-450 px, and 384 costs 0.37 s per training step on 2 CPU cores against 0.45 s)
SHORT_SIDE = 384
#: the registered name of the segmentation model behind `covid-ct-mask-net` (`segment-lesions` uses it)
SEGMENTATION_MODEL = "covid-ct-mask-net-seg"
#: which ResNet18 stage feeds the single FPN level, and its channels
TRUNCATIONS: dict[str, tuple[str, int]] = {"T1": ("layer3", 256), "T2": ("layer2", 128)}
#: the paper's parameter counts (Table 1), for the tests and the card
PAPER_PARAMETERS = {"segmentation_T1": 6.12e6, "classifier_T1": 6.35e6, "classifier_trainable": 0.6e6}


class TruncatedResNetFPN(nn.Module):
    """ResNet18 up to one stage, then one FPN level: a dict with the single feature map "0"."""

    def __init__(self, truncation: str = "T1") -> None:
        super().__init__()
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation {truncation!r}: one of {', '.join(TRUNCATIONS)}")
        stage, channels = TRUNCATIONS[truncation]
        self.body = IntermediateLayerGetter(resnet18(weights=None), return_layers={stage: "0"})
        self.fpn = FeaturePyramidNetwork([channels], 256, extra_blocks=None)
        self.out_channels = 256

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def lesion_mask_rcnn(num_classes: int = 2, truncation: str = "T1") -> MaskRCNN:
    """The segmentation model: Mask R-CNN on the truncated backbone; `num_classes` counts the background."""
    backbone = TruncatedResNetFPN(truncation)
    anchors = AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ASPECT_RATIOS,))
    return MaskRCNN(
        backbone, num_classes=None, min_size=512, max_size=1024, image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD), rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=2000, rpn_post_nms_top_n_train=2000, rpn_pre_nms_top_n_test=1000,
        rpn_post_nms_top_n_test=1000, rpn_nms_thresh=0.75, rpn_fg_iou_thresh=0.7, rpn_bg_iou_thresh=0.3,
        rpn_batch_size_per_image=256, rpn_positive_fraction=0.75,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(256 * 7 * 7, 128), box_predictor=FastRCNNPredictor(128, num_classes),
        box_score_thresh=0.05, box_nms_thresh=0.5, box_detections_per_img=100, box_fg_iou_thresh=0.75,
        box_bg_iou_thresh=0.5, box_batch_size_per_image=256, box_positive_fraction=0.75,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        mask_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(256, [128], 1), mask_predictor=MaskRCNNPredictor(128, 128, num_classes),
    )


def lesion_segmentation_model(num_classes: int = 2, truncation: str = "T1", short_side: int = SHORT_SIDE) -> MaskRCNN:
    """The registered segmentation model: `lesion_mask_rcnn` at the short side it was trained at."""
    model = lesion_mask_rcnn(num_classes, truncation)
    model.transform.min_size, model.transform.max_size = (short_side,), 2 * short_side
    return model


def fill_rows(rows: torch.Tensor, n: int = ROI_BATCH, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` rows from `rows` (K x F, ranked), each valid row repeated in place so the ranking is kept: the K rows
    become K consecutive runs of lengths summing to n. With a `generator` the run lengths are drawn at random
    (the authors' training); without, they are as even as possible, the earlier ranks taking the extra ones
    (deterministic, for inference). More than n rows: the first n. None: zeros."""
    k = len(rows)
    if k >= n:
        return rows[:n]
    if k == 0:
        return rows.new_zeros((n, rows.shape[1]))
    if generator is not None:
        cuts = torch.randperm(n - 1, generator=generator)[: k - 1] + 1
        bounds = torch.cat([torch.tensor([0]), torch.sort(cuts).values, torch.tensor([n])])
        lengths = bounds[1:] - bounds[:-1]
    else:
        lengths = torch.full((k,), n // k)
        lengths[: n % k] += 1
    return torch.repeat_interleave(rows, lengths.to(rows.device), dim=0)


def case_answer(slice_probabilities: np.ndarray, min_top: int = 3, top_fraction: float = 0.1) -> dict[str, float]:
    """A case's three-class answer from its slices' (n, 3) probabilities: their mean over the k most abnormal
    slices (lowest P(control)), k = max(`min_top`, `top_fraction` x n) as screening's top-k rule; the paper
    classifies slices and gives no case rule. Keys: `CLASSES`."""
    p = np.asarray(slice_probabilities, np.float64).reshape(-1, len(CLASSES))
    if len(p) == 0:
        raise ValueError("no classified slice: no case answer")
    k = min(len(p), max(min_top, math.ceil(top_fraction * len(p))))
    top = p[np.argsort(p[:, 0], kind="stable")[:k]].mean(axis=0)
    return dict(zip(CLASSES, (float(v) for v in top / top.sum())))


class CovidCTMaskNet(nn.Module):
    """The three-class classifier on a segmentation model's backbone, RPN and box head (module docstring)."""

    def __init__(self, num_classes: int = len(CLASSES), truncation: str = "T1",
                 detector: MaskRCNN | None = None) -> None:
        super().__init__()
        detector = detector or lesion_mask_rcnn(2, truncation)
        self.transform, self.backbone, self.rpn = detector.transform, detector.backbone, detector.rpn
        heads = detector.roi_heads
        self.box_roi_pool, self.box_head, self.box_predictor = heads.box_roi_pool, heads.box_head, heads.box_predictor
        self.box_coder = heads.box_coder
        self.score_thresh, self.nms_thresh = -0.01, 0.75
        self.s_module = nn.Sequential(nn.Linear(5 * ROI_BATCH, S_WIDTH), nn.ReLU(), nn.Linear(S_WIDTH, S_WIDTH),
                                      nn.ReLU(), nn.Linear(S_WIDTH, num_classes))
        for m in self.s_module:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.fill_generator: torch.Generator | None = None  # set for the authors' random row filling

    def detections(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per image a (ROI_BATCH, 5) tensor of [score, dx, dy, dw, dh], ranked by score and filled."""
        return [fill_rows(rows, ROI_BATCH, self.fill_generator) for rows in self.ranked_rows(images)]

    def ranked_rows(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per image its valid detections (K <= ROI_BATCH, 5) of [score, dx, dy, dw, dh], ranked by score, before
        the rows are filled (a trainer that keeps the detector fixed computes them once)."""
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        return self.rows_from(features, proposals, image_list.image_sizes)

    def rows_from(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                  image_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """`ranked_rows` from the backbone's features and the RPN's proposals (a pass the segmentation model made
        with the same detector weights can be shared)."""
        pooled = self.box_head(self.box_roi_pool(features, proposals, image_sizes))
        logits, deltas = self.box_predictor(pooled)
        scores = torch.softmax(logits, dim=-1)[:, 1]  # the lesion class; the background column goes
        deltas = deltas.reshape(len(deltas), -1, 4)[:, 1]
        out, start = [], 0
        for props, size in zip(proposals, image_sizes):
            end = start + len(props)
            s, d = scores[start:end], deltas[start:end]
            boxes = box_ops.clip_boxes_to_image(self.box_coder.decode_single(d, props), size)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (s > self.score_thresh)
            s, d, boxes = s[keep], d[keep], boxes[keep]
            keep = box_ops.nms(boxes, s, self.nms_thresh)[:ROI_BATCH]  # sorted by falling score
            out.append(torch.cat([s[keep, None], d[keep]], dim=1))
            start = end
        return out

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (N, 3) of control, common pneumonia and COVID-19 for N slices (each 3 x H x W in [0, 1])."""
        rows = torch.stack(self.detections(images))
        return self.s_module(rows.flatten(1))


def freeze_for_classification(model: CovidCTMaskNet) -> list[nn.Parameter]:
    """The authors' classifier training: everything but S in evaluation mode and frozen, except the affine
    parameters of the backbone's BatchNorm layers (not the downsample ones); the parameters that learn."""
    model.eval()
    model.s_module.train()
    trainable = []
    for name, p in model.named_parameters():
        learns = name.startswith("s_module.") or (name.startswith("backbone.body.") and ".bn" in name)
        p.requires_grad_(learns)
        if learns:
            trainable.append(p)
    return trainable


def covid_ct_mask_net(num_classes: int = len(CLASSES), truncation: str = "T1",
                      short_side: int = SHORT_SIDE) -> CovidCTMaskNet:
    """The registered classifier: on the segmentation model as it is registered (short side `SHORT_SIDE`)."""
    return CovidCTMaskNet(num_classes=num_classes, detector=lesion_segmentation_model(2, truncation, short_side))


register_model(ModelSpec(
    name="covid-ct-mask-net",
    builder=covid_ct_mask_net,
    input_kind="instances",
    classes=CLASSES,
    positive_class="covid",
    description="COVID-CT-Mask-Net (Ter-Sarkisov): lightweight Mask R-CNN (ResNet18-T1 + one FPN level) for lesion "
                "instances, and a three-class slice classifier from its ranked detections; trained here on three "
                "real patients",
    notes={"input": f"CT slice as 3 identical channels in [0, 1], ImageNet mean/std, short side {SHORT_SIDE}",
           "roi_batch": ROI_BATCH, "classes": "0 control, 1 common pneumonia, 2 COVID-19",
           "pretrained_backbone": "none (ImageNet weights cannot be downloaded here: trained from scratch)",
           "segmentation_model": SEGMENTATION_MODEL},
    screens=True,
    weights=WeightsInfo(
        file="covid-ct-mask-net.pt",
        sha256="fc120808592759bbb6f7465d2a3e356d1206457a3bc32605bccc7a283cfa15f6",
        card="covid-ct-mask-net.card.json",
    ),
))

register_model(ModelSpec(
    name=SEGMENTATION_MODEL,
    builder=lesion_segmentation_model,
    input_kind="instances",
    classes=("background", "lesion"),
    positive_class="lesion",
    description="COVID-CT-Mask-Net's segmentation model (Ter-Sarkisov): lightweight Mask R-CNN (ResNet18-T1 + one "
                "FPN level) finding lesion instances (GGO and consolidation merged) in a CT slice; trained on "
                "radiologists' masks",
    notes={"input": f"CT slice as 3 identical channels in [0, 1], ImageNet mean/std, short side {SHORT_SIDE}",
           "instances": "8-connected lesion regions of at least 100 px",
           "pretrained_backbone": "none (ImageNet weights cannot be downloaded here: trained from scratch)"},
    weights=WeightsInfo(
        file="covid-ct-mask-net-seg.pt",
        sha256="f8a05b7f411d462a066f68a9e2e7ba329e0faaa77d023948fdd094f9989318ec",
        card="covid-ct-mask-net-seg.card.json",
    ),
))

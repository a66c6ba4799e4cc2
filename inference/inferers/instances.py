"""Running COVID-CT-Mask-Net's segmentation model on slice images: lesion instances (score, box, mask).

Each image (2D grey values in [0, 1], e.g. an 8-bit export / 255) goes in as three identical channels; the
model normalises and resizes it itself (short side `SHORT_SIDE`) and returns its detections on the image's own
grid. A detection's mask is its 28 x 28 mask logits pasted into its box and cut at 0.5. `Instances.labels`
makes the semantic mask `segment-lesions` writes: 1 wherever a detection at or above the score threshold covers.

On a CT volume (`segment_volume`): every axial slice with lung, cropped to the lungs' in-plane box of the whole
volume (+ `LUNG_CROP_MARGIN`, as the other screening models) and windowed as COVID-SemiSeg's slices were exported
(`EXPORT_WINDOW_HU`, the window DCN uses for the same images); each instance at or above the score threshold is
kept inside the lungs (lesions lie in the lungs) and gets its own id in a label volume on the CT grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from inference.core.choices import MIN_INSTANCE_SCORE
from inference.core.device import select_device
from inference.core.types import CancelFn, Cancelled, ProgressFn
from inference.models._api import ModelSpec, WeightsError, get_model
from inference.models.covid_ct_mask_net import ROI_BATCH, fill_rows
from inference.models.dcn import EXPORT_WINDOW_HU
from inference.transforms.common import HUWindow
from inference.transforms.crop import LUNG_CROP_MARGIN, lung_crop_box

__all__ = ["DEFAULT_MIN_SCORE", "HEATMAP_METHOD", "InstanceClassifier", "InstanceSegmenter", "Instances",
           "VolumeInstances"]

#: the heat map of the instance path: each instance's voxels carry its score
HEATMAP_METHOD = "instance score"
#: detections scoring below this are not lesions (`segment-lesions --min-score`); cross-validated Dice uses it
DEFAULT_MIN_SCORE = MIN_INSTANCE_SCORE


@dataclass(frozen=True)
class Instances:
    """The lesion instances of one image, ranked by falling score."""

    scores: np.ndarray  # (P,) float32 in [0, 1]
    boxes: np.ndarray  # (P, 4) float32: x0, y0, x1, y1 in pixel edges of the image
    masks: np.ndarray  # (P, H, W) bool

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, min_score: float) -> Instances:
        keep = self.scores >= min_score
        return Instances(self.scores[keep], self.boxes[keep], self.masks[keep])

    def labels(self) -> np.ndarray:
        """uint8 (H, W): 1 where any instance's mask covers, else 0."""
        return self.masks.any(axis=0).astype(np.uint8)

    def records(self) -> list[dict]:
        """One JSON-ready dict per instance: rank, score, box and mask area in pixels."""
        return [{"rank": k + 1, "score": round(float(s), 4), "box": [round(float(v), 1) for v in b],
                 "mask_area_px": int(np.count_nonzero(m))}
                for k, (s, b, m) in enumerate(zip(self.scores, self.boxes, self.masks))]


@dataclass(frozen=True)
class VolumeInstances:
    """Lesion instances of a CT volume, slice by slice.

    labels: uint16 (z, y, x) on the CT grid, 0 background, k the instance whose record has "id" k (a voxel two
    instances of one slice share goes to the higher-scoring one);
    records: per instance {"id", "slice", "score", "box" (x0, y0, x1, y1: the pixel edges around its voxels on the
    CT grid), "area_mm2"}, ordered by slice, then by falling score.
    """

    labels: np.ndarray
    records: list[dict]
    shared: dict[int, Any] = field(default_factory=dict)  # `segment_volume(share=...)`'s results by slice

    def mask(self, min_score: float = 0.0) -> np.ndarray:
        """bool (z, y, x): the voxels of the instances scoring at least `min_score` (the GUI's score slider)."""
        keep = [r["id"] for r in self.records if r["score"] >= min_score]
        return np.isin(self.labels, keep) if keep else np.zeros(self.labels.shape, bool)


class InstanceSegmenter:
    """A registered lesion-instance model ready to run on slice images.

    Args:
        spec_or_name: `covid-ct-mask-net` (its segmentation model is used) or the segmentation model's own name.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
        module: an already built Mask R-CNN (tests, a trainer) instead of the shipped weights.

    Raises:
        ValueError: the model does not find lesion instances.
        WeightsError: no module given and the model has no shipped weights (or they fail the hash check).
    """

    def __init__(self, spec_or_name: str | ModelSpec = "covid-ct-mask-net", *, device: str = "auto",
                 module: nn.Module | None = None) -> None:
        spec = get_model(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
        if spec.input_kind == "instances" and "segmentation_model" in spec.notes:
            spec = get_model(spec.notes["segmentation_model"])
        if spec.input_kind != "instances" or spec.positive_class != "lesion":
            raise ValueError(f"model {spec.name!r} is a {spec.input_kind} model, not a lesion-instance model")
        self.spec = spec
        if module is None:
            if spec.weights is None:
                raise WeightsError(f"model {spec.name!r} has no shipped weights yet: train it with `lunglens train "
                                   "covid-ct-mask-net`, or choose another model")
            module = spec.build(pretrained=True)
        self.device = select_device(device)
        self.model = module.to(self.device).eval()
        self.engine = f"torch-{self.device.type}"

    def find(self, image: np.ndarray, min_score: float = 0.0) -> Instances:
        """The detections of one 2D grey image in [0, 1] scoring at least `min_score` (and the model's own 0.05).

        Detections below `min_score` are dropped before non-maximum suppression and the mask head: the same
        instances as filtering afterwards (a box is suppressed only by a higher-scoring one), at less cost."""
        return self._detect(self._tensor(image), min_score)[0]

    def _tensor(self, image: np.ndarray) -> torch.Tensor:
        im = np.asarray(image, np.float32)
        if im.ndim != 2 or min(im.shape) < 2:
            raise ValueError(f"need a 2-D grey image of at least 2 x 2 pixels, got shape {im.shape}")
        if not np.isfinite(im).all():
            raise ValueError("the image holds NaN or infinite values")
        return torch.from_numpy(np.ascontiguousarray(im))[None].expand(3, -1, -1).to(self.device)

    @torch.no_grad()
    def _detect(self, x: torch.Tensor, min_score: float,
                share: Callable[[dict, list, list], Any] | None = None) -> tuple[Instances, Any]:
        """Mask R-CNN's evaluation forward, step by step, so that `share(features, proposals, image_sizes)` can
        use the same backbone and RPN pass (the classifier's rows)."""
        m = self.model
        images, _ = m.transform([x])
        features = m.backbone(images.tensors)
        proposals, _ = m.rpn(images, features)
        heads = m.roi_heads
        floor = heads.score_thresh
        heads.score_thresh = max(floor, float(min_score))
        try:
            detections, _ = heads(features, proposals, images.image_sizes)
        finally:
            heads.score_thresh = floor
        out = m.transform.postprocess(detections, images.image_sizes, [tuple(x.shape[-2:])])[0]
        shared = share(features, proposals, images.image_sizes) if share is not None else None
        order = torch.argsort(out["scores"], descending=True)
        return Instances(out["scores"][order].cpu().numpy().astype(np.float32),
                         out["boxes"][order].cpu().numpy().astype(np.float32),
                         (out["masks"][order, 0] >= 0.5).cpu().numpy()), shared

    def segment_volume(self, volume_hu: np.ndarray, spacing: tuple[float, float, float], lungs: np.ndarray, *,
                       min_score: float = DEFAULT_MIN_SCORE, progress: ProgressFn | None = None,
                       cancel: CancelFn | None = None, share: Callable[[dict, list, list], Any] | None = None,
                       share_slices: Sequence[int] = ()) -> VolumeInstances:
        """The lesion instances of a (z, y, x) HU volume (module docstring).

        `share(features, proposals, image_sizes)` runs on the pass of each slice in `share_slices`; its results
        are in the returned `shared`, by slice.

        Raises:
            ValueError: the volume is not 3D, or the lung mask's shape differs.
            Cancelled: `cancel()` returned True.
        """
        if volume_hu.ndim != 3 or lungs.shape != volume_hu.shape:
            raise ValueError(f"need a 3D volume and a lung mask of its shape, got {volume_hu.shape} and {lungs.shape}")
        in_lungs = np.asarray(lungs) > 0
        box = lung_crop_box(in_lungs, LUNG_CROP_MARGIN)
        window = HUWindow(*EXPORT_WINDOW_HU)
        labels = np.zeros(volume_hu.shape, np.uint16)
        records: list[dict] = []
        slices = np.flatnonzero(in_lungs.any(axis=(1, 2)))
        pixel_mm2 = float(spacing[1]) * float(spacing[2])
        wanted, shared = {int(k) for k in share_slices}, {}
        for n, k in enumerate(slices):
            if cancel is not None and cancel():
                raise Cancelled("lesion instances cancelled")
            found, extra = self._detect(self._tensor(window(volume_hu[k][box])), min_score,
                                        share if int(k) in wanted else None)
            if int(k) in wanted:
                shared[int(k)] = extra
            sub, lung = labels[k][box], in_lungs[k][box]
            for score, m in zip(found.scores[::-1], found.masks[::-1]):  # the best written last, on top
                m = m & lung
                if m.any():
                    sub[m] = len(records) + 1
                    records.append({"id": len(records) + 1, "slice": int(k), "score": round(float(score), 4)})
            if progress is not None:
                progress((n + 1) / len(slices), f"lesion instances {n + 1}/{len(slices)}")
        kept = []
        for r, where in zip(records, ndimage.find_objects(labels, max_label=len(records))):
            if where is None:  # wholly covered by better instances of its slice
                continue
            _, ys, xs = where
            area = np.count_nonzero(labels[where] == r["id"])
            kept.append(dict(r, box=[xs.start, ys.start, xs.stop, ys.stop], area_mm2=round(area * pixel_mm2, 2)))
        kept.sort(key=lambda r: (r["slice"], -r["score"]))
        return VolumeInstances(labels, kept, shared)


class InstanceClassifier:
    """COVID-CT-Mask-Net ready to screen: its segmentation model (lesion instances) and its three-class classifier.

    Args:
        spec_or_name: the classifier's registered name (`covid-ct-mask-net`).
        segmenter, classifier: already built parts (tests, a trainer) instead of the shipped weights.

    Raises:
        ValueError: the model gives no three-class answer (the segmentation model alone, another kind).
        WeightsError: a part without shipped weights (or failing the hash check).
    """

    def __init__(self, spec_or_name: str | ModelSpec = "covid-ct-mask-net", *, device: str = "auto",
                 segmenter: InstanceSegmenter | None = None, classifier: nn.Module | None = None) -> None:
        spec = get_model(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
        if spec.input_kind != "instances" or "segmentation_model" not in spec.notes:
            raise ValueError(f"model {spec.name!r} gives no three-class answer: not a screening model "
                             "(its lesion instances: `lunglens segment-lesions`)")
        self.spec = spec
        self.segmenter = segmenter or InstanceSegmenter(spec, device=device)
        if classifier is None:
            if spec.weights is None:
                raise WeightsError(f"model {spec.name!r} has no shipped classifier weights yet: train it with "
                                   "`lunglens train covid-ct-mask-net --classifier`, or choose another model")
            classifier = spec.build(pretrained=True)
        self.device = self.segmenter.device
        self.classifier = classifier.to(self.device).eval()
        self.engine = self.segmenter.engine
        #: the classifier kept the segmentation model's detector (it trains S only): one pass serves both
        self.shared = same_detector(self.segmenter.model, self.classifier)

    def check_heatmap(self, method: str | None = None) -> str:
        """`method` (None: the instance-score map) if this model makes it; ValueError otherwise."""
        if method not in (None, HEATMAP_METHOD):
            raise ValueError(f"model {self.spec.name!r} makes its instance-score heat map only, not {method!r} "
                             "(leave --heatmap out)")
        return HEATMAP_METHOD

    def rows_from(self, features: dict, proposals: list, image_sizes: list) -> torch.Tensor:
        """A slice's ranked detections for the classifier from a shared pass (`segment_volume(share=...)`)."""
        return self.classifier.rows_from(features, proposals, image_sizes)[0]

    @torch.no_grad()
    def probabilities_of_rows(self, rows: list[torch.Tensor]) -> np.ndarray:
        """(n, 3) probabilities from each slice's ranked detections (filled evenly, as at inference)."""
        if not rows:
            return np.zeros((0, len(self.spec.classes)), np.float32)
        filled = torch.stack([fill_rows(r, ROI_BATCH) for r in rows]).flatten(1)
        return torch.softmax(self.classifier.s_module(filled), dim=1).cpu().numpy()

    @torch.no_grad()
    def slice_probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        """(n, 3) probabilities of control, common pneumonia and COVID-19 for 2D grey images in [0, 1]."""
        if not images:
            return np.zeros((0, len(self.spec.classes)), np.float32)
        x = [torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32))[None].expand(3, -1, -1).to(self.device)
             for im in images]
        return torch.softmax(self.classifier(x), dim=1).cpu().numpy()


def same_detector(segmenter: nn.Module, classifier: nn.Module) -> bool:
    """Whether the classifier's transform, backbone, RPN and box head are the segmentation model's (same sizes,
    equal weights)."""
    seg_t, clf_t = segmenter.transform, classifier.transform
    if (seg_t.min_size, seg_t.max_size) != (clf_t.min_size, clf_t.max_size):
        return False
    pairs = (("backbone", segmenter.backbone, classifier.backbone), ("rpn", segmenter.rpn, classifier.rpn),
             ("box_head", segmenter.roi_heads.box_head, classifier.box_head),
             ("box_predictor", segmenter.roi_heads.box_predictor, classifier.box_predictor))
    for _, a, b in pairs:
        sa, sb = a.state_dict(), b.state_dict()
        if sa.keys() != sb.keys() or any(not torch.equal(sa[k].float(), sb[k].float().to(sa[k].device))
                                         for k in sa):
            return False
    return True

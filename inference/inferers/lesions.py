"""Running a lesion segmenter (DCN) on a CT volume: GGO / consolidation labels, its heat map, slice probabilities.

Per axial slice that contains lung: the in-plane lung bounding box of the whole volume (grown by
`LUNG_CROP_MARGIN` of its size, as the screening crop) is windowed with the model's pre-processing (HU window ->
[0, 1]), fitted into its size x size input with the physical aspect kept (`SquareFit`), and run in
batches. The segmentation logits are mapped back to the crop bilinearly, argmax'ed and kept inside the
lungs; the heat map is the mean of the LA 2 and LA 3 attention maps (the paper's best), mapped back the
same way; the slice probability is the classification branch's softmax of the positive class.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from inference.core.device import segmenter_dtype, select_device
from inference.core.types import CancelFn, Cancelled, ProgressFn
from inference.models._api import ModelSpec, WeightsError, get_model
from inference.models.dcn import HEAT_MAPS, DCNPreprocess, averaged_outputs, flip_average
from inference.transforms.crop import lung_crop_box
from inference.transforms.fit import SquareFit

__all__ = ["HEATMAP_METHOD", "HEAT_MAPS", "LesionResult", "LesionSegmenter"]

HEATMAP_METHOD = "lesion-attention"


@dataclass(frozen=True)
class LesionResult:
    """A lesion segmenter's output on the CT grid (z, y, x)."""

    labels: np.ndarray  # uint8: 0 background, 1 GGO, 2 consolidation; lesions only inside the lungs
    heat: np.ndarray  # float32 in [0, 1]: the lesion-attention heat map (0 in slices without lung)
    slice_probability: np.ndarray  # float32 (z,): P(positive class) per slice, NaN for slices without lung


class LesionSegmenter:
    """A registered lesion segmenter ready to run on CT volumes in HU.

    Args:
        spec_or_name: a registered name or a `ModelSpec` of input kind "segmentation" with `DCNPreprocess`.
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...
        module: an already built network (tests, a trainer) instead of the shipped weights; it must return
            an object with `logits` (N, classes), `seg_logits` (N, 3, H, W) and `attention` (LA maps, each
            (N, 1, h, w)), as `DCNOutput`.
        batch_size: slices per forward pass.
        tta: average the network's outputs over the four flips of each slice (none, left-right, up-down,
            both): 4x the cost; +1.8 and +2.6 points of held-out Dice on two DCN folds.
        precision: "fp32", "auto" (bfloat16 on CPUs that compute it natively: 2.7x faster, lesion Dice 0.988
            against float32 on a real COVID-19 volume) or "mixed" (`inference.core.device.segmenter_dtype`).

    Raises:
        WeightsError: no module given and the model has no shipped weights (or they fail the hash check).
    """

    def __init__(self, spec_or_name: str | ModelSpec = "dcn", *, device: str = "auto",
                 module: nn.Module | None = None, batch_size: int = 8, tta: bool = False,
                 precision: str = "fp32") -> None:
        self.spec = get_model(spec_or_name) if isinstance(spec_or_name, str) else spec_or_name
        if self.spec.input_kind != "segmentation":
            raise ValueError(f"model {self.spec.name!r} is a {self.spec.input_kind} model, not a lesion segmenter")
        if not isinstance(self.spec.transforms, DCNPreprocess):
            raise ValueError(f"model {self.spec.name!r} has no lesion-segmentation pre-processing in its entry")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.preprocess: DCNPreprocess = self.spec.transforms
        self.batch_size, self.tta = batch_size, tta
        self.positive_index = self.spec.classes.index(self.spec.positive_class)
        if module is None:
            if self.spec.weights is None:
                raise WeightsError(f"model {self.spec.name!r} has no shipped weights yet: train it and pass the "
                                   "network as `module`, or choose another model")
            module = self.spec.build(pretrained=True)
        self.device = select_device(device)
        self.autocast = segmenter_dtype(self.device, precision)
        self.model = module.to(self.device, memory_format=torch.channels_last).eval()

    @property
    def engine(self) -> str:
        how = "torch" if self.autocast is None else f"torch, {str(self.autocast).removeprefix('torch.')}"
        return f"{self.device} ({how})"

    def _precision(self) -> contextlib.AbstractContextManager:
        """Autocast to the chosen dtype, or nothing in float32."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def heatmap_methods(self) -> tuple[str, ...]:
        """The heat map this model makes: its lesion-attention maps."""
        return (HEATMAP_METHOD,)

    def check_heatmap(self, method: str | None = None) -> str:
        """`method` (None: the lesion-attention map) if this model makes it; ValueError otherwise."""
        if method not in (None, HEATMAP_METHOD):
            raise ValueError(f"model {self.spec.name!r} makes its lesion-attention heat map only, not {method!r} "
                             "(leave --heatmap out)")
        return HEATMAP_METHOD

    def case_probability(self, slice_probabilities: np.ndarray) -> float:
        """P(positive) of a case from its slice probabilities: the model's slice probability mapping."""
        if len(slice_probabilities) == 0:
            raise ValueError("no slice probabilities: no slice with lung was classified")
        return float(self.model.case_probability(np.asarray(slice_probabilities, np.float64)))

    def segment_images(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        """Lesion labels (uint8, the image's size) and P(positive) of 2D grey images in [0, 1] that are already
        windowed (e.g. 8-bit exports), each fitted into the model input with its aspect kept."""
        out = []
        for image in images:
            im = np.asarray(image, np.float32)
            if im.ndim != 2 or min(im.shape) < 2:
                raise ValueError(f"need a 2-D grey image of at least 2 x 2 pixels, got shape {im.shape}")
            fit = SquareFit.of(im.shape, (1.0, 1.0), self.preprocess.size)
            labels, _, p = self._forward(torch.from_numpy(im)[None, None], fit)
            out.append((labels[0], float(p[0])))
        return out

    def segment_labels(self, volume_hu: np.ndarray, spacing: tuple[float, float, float], lungs: np.ndarray, *,
                       progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
        """Lesion labels (uint8: 0, 1 GGO, 2 consolidation; inside the lungs) of a (z, y, x) HU volume from the
        segmentation branch alone: the same labels as `segment`, at about a fifth of its cost, for the screening
        paths that take their lesion mask from this model. Arguments and errors as `segment`."""
        return self._segment(volume_hu, spacing, lungs, progress, cancel, labels_only=True)[0]

    def segment(self, volume_hu: np.ndarray, spacing: tuple[float, float, float], lungs: np.ndarray, *,
                progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> LesionResult:
        """Lesion labels, heat map and slice probabilities of a (z, y, x) HU volume.

        Args:
            volume_hu: (z, y, x) Hounsfield units.
            spacing: voxel size (z, y, x) in mm.
            lungs: (z, y, x) lung mask (bool or labels, non-zero = lung) on the same grid.
            progress: called with (fraction, message); the fraction never decreases and ends at 1.0.
            cancel: returns True to stop; checked before every batch.

        Raises:
            Cancelled: `cancel()` returned True.
            ValueError: shapes or spacing do not fit.
        """
        labels, heat, probability = self._segment(volume_hu, spacing, lungs, progress, cancel, labels_only=False)
        assert heat is not None and probability is not None
        return LesionResult(labels, heat, probability)

    def _segment(self, volume_hu: np.ndarray, spacing: tuple[float, float, float], lungs: np.ndarray,
                 progress: ProgressFn | None, cancel: CancelFn | None, *,
                 labels_only: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(labels, heat, slice probabilities); `labels_only`: the segmentation branch alone, and no heat map or
        probabilities (None: a float32 copy of the volume not made)."""
        volume_hu = np.asarray(volume_hu)
        lungs = np.asarray(lungs).astype(bool, copy=False)
        if volume_hu.ndim != 3 or lungs.shape != volume_hu.shape:
            raise ValueError(f"need a 3-D volume and a lung mask of its shape, got {volume_hu.shape} and "
                             f"{lungs.shape}")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive sizes (z, y, x) in mm, got {spacing}")
        report = _Progress(progress)
        report(0.0, f"Segmenting lesions ({self.spec.name})")
        labels = np.zeros(volume_hu.shape, np.uint8)
        heat = None if labels_only else np.zeros(volume_hu.shape, np.float32)
        probability = None if labels_only else np.full(volume_hu.shape[0], np.nan, np.float32)
        indices = np.flatnonzero(lungs.any(axis=(1, 2)))
        if len(indices):
            box = lung_crop_box(lungs)
            crop = (volume_hu[:, box[0], box[1]], lungs[:, box[0], box[1]])
            fit = SquareFit.of(crop[0].shape[1:], (float(spacing[1]), float(spacing[2])), self.preprocess.size)
            n = len(indices)
            for k0 in range(0, n, self.batch_size):
                if cancel is not None and cancel():
                    raise Cancelled()
                idx = indices[k0:k0 + self.batch_size]
                report(0.95 * k0 / n, f"{self.spec.name}: slices {k0 + 1}-{k0 + len(idx)} of {n}")
                x = self.preprocess.window(torch.from_numpy(np.ascontiguousarray(crop[0][idx])))[:, None]
                if heat is None or probability is None:
                    labels[idx, box[0], box[1]] = self._labels(x, fit) * crop[1][idx]
                    continue
                lab, hm, p = self._forward(x, fit)
                labels[idx, box[0], box[1]] = lab * crop[1][idx]
                heat[idx, box[0], box[1]] = hm
                probability[idx] = p
        report(1.0, "Lesions segmented")
        return labels, heat, probability

    @torch.inference_mode()
    def _labels(self, x: torch.Tensor, fit: SquareFit) -> np.ndarray:
        """(n, 1, ny, nx) grey in [0, 1] -> labels (uint8) on the input grid, from the segmentation branch."""
        x = fit.to_model(x).to(self.device).contiguous(memory_format=torch.channels_last)
        branch = getattr(self.model, "segment_logits", None)  # a stand-in network may only have forward()

        def probabilities(xi: torch.Tensor) -> tuple[torch.Tensor]:
            logits = branch(xi) if branch is not None else self.model(xi).seg_logits
            return (torch.softmax(logits.float(), dim=1),)

        with self._precision():
            (seg,) = flip_average(probabilities, x, tta=self.tta)
        return _argmax_classes(fit.from_model(seg.float())).cpu().numpy()

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor, fit: SquareFit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n, 1, ny, nx) grey in [0, 1] -> labels (uint8), heat (float32) and P(positive), on the input grid."""
        x = fit.to_model(x).to(self.device).contiguous(memory_format=torch.channels_last)
        with self._precision():
            out = averaged_outputs(self.model, x, tta=self.tta)
        labels = _argmax_classes(fit.from_model(out.seg))
        heat = fit.from_model(out.heat).clamp_(0.0, 1.0)[:, 0]
        p = out.p[:, self.positive_index]
        return labels.cpu().numpy(), heat.cpu().numpy(), p.cpu().numpy()


def _argmax_classes(prob: torch.Tensor) -> torch.Tensor:
    """(n, classes, h, w) -> (n, h, w) uint8 argmax. Channels-last first: torch's CPU argmax over the channel
    axis of an NCHW tensor is about 5x slower, and it was half of the lesion step's time."""
    return prob.contiguous(memory_format=torch.channels_last).argmax(dim=1).to(torch.uint8)


class _Progress:
    """Progress reports with a fraction that never decreases."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress, self.last = progress, 0.0

    def __call__(self, fraction: float, message: str) -> None:
        self.last = max(self.last, min(1.0, fraction))
        if self.progress is not None:
            self.progress(self.last, message)

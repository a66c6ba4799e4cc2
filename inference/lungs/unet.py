"""Lung segmentation by the 2D lung U-Net of DeCoVNet's pipeline (paper 1), run slice by slice.

`segment_lungs_unet` keeps the contract of `inference.lungs.threshold.segment_lungs`: (z, y, x) HU with
z superior, y posterior, x patient left; the same argument errors; `Cancelled` on cancel;
`LungMasks` on the CT grid (1 left, 2 right in `label_map()`).

Pre-processing (the trainer uses the same code): HU window -1000..400 -> [0, 1]; every axial slice is
resized, keeping its physical aspect, so that its longer side is SIZE (128) px, and centred on a
SIZE x SIZE square padded with air; batches of slices go through the net; the logits are cropped back,
resized bilinearly to the CT grid and argmax'ed (batches without lung skip that).
Post-processing: per lung the largest 26-connected 3-D component (dropped when under MIN_LUNG_ML),
then its axial holes filled (without taking the other lung).

Airways: the U-Net does not segment them; `LungMasks.airways` is empty. Its training labels (from the
threshold method) leave the trachea and main bronchi out of the lungs, and so does the net.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from inference.core.device import select_device
from inference.core.types import CancelFn, ProgressFn
from inference.lungs.common import LungMasks, Steps, bbox, checked_input, fill_holes_2d
from inference.models._api import get_model
from inference.models.lung_unet import MODEL_NAME, SIZE, WINDOW_HU
from inference.transforms.fit import SquareFit

__all__ = ["MODEL_NAME", "SIZE", "WINDOW_HU", "SquareFit", "postprocess", "predict_labels", "segment_lungs_unet",
           "window"]

BATCH = 16  # slices per forward pass
MIN_LUNG_ML = 2.0  # a smaller component is not a lung
_S3D_26 = np.ones((3, 3, 3), bool)


def window(hu: torch.Tensor) -> torch.Tensor:
    """HU -> [0, 1] over WINDOW_HU (float32)."""
    lo, hi = WINDOW_HU
    return ((hu.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)


@lru_cache(maxsize=4)
def _shipped_model(device: str) -> nn.Module:
    net = get_model(MODEL_NAME).build(pretrained=True)
    return net.to(device, memory_format=torch.channels_last).eval()


def segment_lungs_unet(hu: np.ndarray, spacing: tuple[float, float, float], *, progress: ProgressFn | None = None,
                       cancel: CancelFn | None = None, model: nn.Module | None = None,
                       device: str = "auto") -> LungMasks:
    """Segment the left and right lung with the 2D lung U-Net, slice by slice.

    Args:
        hu: (z, y, x) Hounsfield units, z superior, y posterior, x patient left.
        spacing: voxel size (z, y, x) in mm.
        progress: called with (fraction, message); the fraction never decreases and ends at 1.0.
        cancel: returns True to stop; `Cancelled` is raised then.
        model: a LungUNet to use (put in eval mode); None loads the registered shipped weights (hash-checked).
        device: "auto" (CUDA, then MPS, then CPU), "cpu", "cuda", ...

    Returns empty masks (no exception) when no lung is found; `airways` is always empty.
    """
    hu, sp = checked_input(hu, spacing)
    step = Steps(progress, cancel)
    step(0.0, "Segmenting the lungs (U-Net)")
    if hu.size == 0:
        step(1.0, "Lungs segmented")
        return LungMasks.empty(hu.shape)
    dev = select_device(device)
    if model is None:
        net = _shipped_model(str(dev))
    else:
        net = model.to(dev).eval()
    labels = predict_labels(net, hu, sp, dev, step)
    step(0.9, "Cleaning up the lung masks")
    masks = postprocess(labels, sp)
    step(1.0, "Lungs segmented")
    return masks


@torch.inference_mode()
def predict_labels(net: nn.Module, hu: np.ndarray, spacing: tuple[float, float, float],
                   device: torch.device | str = "cpu", step: Steps | None = None, batch: int = BATCH) -> np.ndarray:
    """The net's uint8 labels (0 background, 1 left, 2 right) on the CT grid, before post-processing."""
    fit = SquareFit.of(hu.shape[1:], spacing[1:], SIZE)  # type: ignore[arg-type]
    out = np.empty(hu.shape, np.uint8)
    n = hu.shape[0]
    for k0 in range(0, n, batch):
        if step is not None:
            step(0.05 + 0.8 * k0 / n, f"U-Net: slices {k0 + 1}-{min(n, k0 + batch)} of {n}")
        x = window(torch.from_numpy(np.ascontiguousarray(hu[k0:k0 + batch])))[:, None]
        x = fit.to_model(x).to(device).contiguous(memory_format=torch.channels_last)
        logits = net(x).float().cpu()
        if not logits.argmax(dim=1).any():  # exact: bilinear samples of background-only pixels are background
            out[k0:k0 + batch] = 0
            continue
        out[k0:k0 + batch] = fit.from_model(logits).argmax(dim=1).to(torch.uint8).numpy()
    return out


def postprocess(labels: np.ndarray, spacing: tuple[float, float, float]) -> LungMasks:
    """Per lung: the largest 3-D component (at least MIN_LUNG_ML), then its axial holes filled."""
    out = LungMasks.empty(labels.shape)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    kept: list[tuple[np.ndarray, tuple[slice, ...]] | None] = []
    for v in (1, 2):
        box = bbox(labels == v, margin=(1, 1, 1))
        if box is None:
            kept.append(None)
            continue
        lab, n = ndimage.label(labels[box] == v, _S3D_26)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        biggest = int(np.argmax(sizes))
        kept.append((lab == biggest, box) if sizes[biggest] * voxel_ml >= MIN_LUNG_ML else None)
    for entry, dst in zip(kept, (out.left, out.right)):
        if entry is not None:
            dst[entry[1]] = entry[0]
    for entry, dst, other in ((kept[0], out.left, out.right), (kept[1], out.right, out.left)):
        if entry is not None:  # a hole of one lung never takes the other lung's voxels
            mask, box = entry
            dst[box] = fill_holes_2d(mask) & ~other[box]
    return out

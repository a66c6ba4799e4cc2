"""Lesion transplants: real lesions cut from COVID-19 volumes and pasted into the lungs of other volumes, on the
network grid. A training augmentation for DeCoVNet when there are few real volumes: every step sees a new
positive made of real lesion texture in real lung (the idea of copy-paste augmentation, Ghiasi et al. 2021).

A part is one 26-connected component of a case's lesion mask (at least `MIN_PART_VOXELS` voxels on the network
grid) with the CT values under it. Pasting feathers its edge (a Gaussian of `FEATHER_SIGMA` voxels), keeps it
inside the receiving lungs and only raises density (the lesion replaces lung where it is denser), so a pasted
part never erases what the receiver had.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

MIN_PART_VOXELS = 8
FEATHER_SIGMA = 0.7


@dataclass(frozen=True)
class LesionPart:
    """One lesion component: CT values in [0, 1], its mask and its feathered blending weight, all (t, h, w) on the
    network grid."""

    ct: np.ndarray  # float32
    mask: np.ndarray  # bool
    weight: np.ndarray  # float32: the mask smoothed by a Gaussian of FEATHER_SIGMA voxels

    @classmethod
    def of(cls, ct: np.ndarray, mask: np.ndarray) -> LesionPart:
        return cls(np.where(mask, ct, 0.0).astype(np.float32), mask,
                   ndimage.gaussian_filter(mask.astype(np.float32), FEATHER_SIGMA))


def lesion_parts(ct: np.ndarray | torch.Tensor, lesions: np.ndarray | torch.Tensor,
                 min_voxels: int = MIN_PART_VOXELS) -> list[LesionPart]:
    """The components of `lesions` (T, H, W; non-zero = lesion) with the `ct` channel (T, H, W) under them."""
    ct, lesions = np.asarray(ct, np.float32), np.asarray(lesions) > 0
    if ct.shape != lesions.shape:
        raise ValueError(f"CT {ct.shape} and lesion mask {lesions.shape} differ in shape")
    lab, n = ndimage.label(lesions, np.ones((3, 3, 3), bool))
    parts = []
    for i, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        mask = lab[box] == i
        if mask.sum() >= min_voxels:
            parts.append(LesionPart.of(ct[box], mask))
    return parts


def transplant(x: torch.Tensor, parts: list[LesionPart], count: int, gen: torch.Generator) -> torch.Tensor:
    """A copy of the input `x` (2, T, H, W: CT, lung mask) with `count` random parts pasted (mirrored left-right
    at random) around random lung voxels; `x` itself is not changed. Parts larger than the volume are skipped."""
    out = x.clone()
    ct, lungs = out[0].numpy(), out[1].numpy() > 0.5
    where = np.argwhere(lungs)
    if not len(where) or not parts:
        return out
    for _ in range(count):
        part = parts[int(torch.randint(len(parts), (), generator=gen))]
        pc, pw = part.ct, part.weight
        if float(torch.rand((), generator=gen)) < 0.5:
            pc, pw = pc[:, :, ::-1], pw[:, :, ::-1]
        if any(d > s for d, s in zip(pc.shape, ct.shape)):
            continue
        centre = where[int(torch.randint(len(where), (), generator=gen))]
        lo = [int(np.clip(c - d // 2, 0, s - d)) for c, d, s in zip(centre, pc.shape, ct.shape)]
        box = tuple(slice(a, a + d) for a, d in zip(lo, pc.shape))
        w = pw * lungs[box]
        ct[box] = np.maximum(ct[box], w * pc + (1 - w) * ct[box])
    return out

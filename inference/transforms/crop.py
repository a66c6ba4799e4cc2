"""The in-plane lung crop shared by the slice models: one box for every axial slice of a volume."""

from __future__ import annotations

import numpy as np

#: the box grows by this fraction of its size on each side (the screening crop; DCN crops the same way)
LUNG_CROP_MARGIN = 0.12


def lung_crop_box(lungs: np.ndarray, margin: float = LUNG_CROP_MARGIN) -> tuple[slice, slice]:
    """In-plane (y, x) bounding box of all lung voxels of a (z, y, x) mask, grown by `margin` of its size on
    each side and clipped to the slice; the whole slice when there is no lung."""
    ys, xs = np.nonzero(np.asarray(lungs).any(axis=0))
    if len(ys) == 0:
        return slice(None), slice(None)
    ny, nx = lungs.shape[1:]
    my, mx = int((ys.max() - ys.min()) * margin), int((xs.max() - xs.min()) * margin)
    return (slice(max(0, ys.min() - my), min(ny, ys.max() + my + 1)),
            slice(max(0, xs.min() - mx), min(nx, xs.max() + mx + 1)))

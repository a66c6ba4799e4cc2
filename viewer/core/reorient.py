"""Reorder a volume's axes so that array z, y, x run toward patient S, P and L.

Slice views show the canonical array directly (axial = a[k], coronal = a[:, j],
sagittal = a[:, :, i]); any acquisition (sagittal, coronal, feet-first, flipped)
is brought there by a permutation and flips only, never by interpolation, and the
affine is updated so every voxel keeps its patient position. An oblique volume is
mapped to its nearest canonical orientation, as ITK-SNAP and Slicer display it.
"""

from __future__ import annotations

import numpy as np

from viewer.core.volume import Volume

#: for each array axis of the canonical volume (z, y, x), the LPS axis it follows (+S, +P, +L)
_TARGET = (2, 1, 0)


def canonical_axes(direction: np.ndarray) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """(source axis for each canonical axis, whether to flip it) for a direction matrix."""
    d = np.asarray(direction, dtype=float)
    # patient axis each array axis mostly points along, assigned greedily by strength
    order = np.argsort(-np.abs(d).max(axis=0))
    taken: dict[int, int] = {}
    for arr_axis in order:
        for lps_axis in np.argsort(-np.abs(d[:, arr_axis])):
            if int(lps_axis) not in taken:
                taken[int(lps_axis)] = int(arr_axis)
                break
    source = tuple(taken[t] for t in _TARGET)
    flips = tuple(bool(d[t, s] < 0) for t, s in zip(_TARGET, source))
    return source, flips  # type: ignore[return-value]


def reorient_array(array: np.ndarray, source: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply `canonical_axes` output to any array on the same grid (a mask, a heat map)."""
    out = np.transpose(array, source)
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(out)


def to_canonical(volume: Volume) -> Volume:
    """The same image with array axes along +S, +P, +L (a view-friendly copy; geometry preserved)."""
    source, flips = canonical_axes(volume.direction)
    if source == (0, 1, 2) and not any(flips):
        return volume
    shape = volume.shape
    spacing = (volume.spacing[source[0]], volume.spacing[source[1]], volume.spacing[source[2]])
    direction = np.stack([volume.direction[:, s] * (-1 if f else 1) for s, f in zip(source, flips)], axis=1)
    corner = [0, 0, 0]
    for s, f in zip(source, flips):
        corner[s] = shape[s] - 1 if f else 0
    origin = tuple(volume.index_to_lps(corner))
    return Volume(reorient_array(volume.array, source, flips), spacing, origin, direction,
                  metadata=volume.metadata, warnings=volume.warnings, source=volume.source, files=volume.files)


def from_canonical_array(array: np.ndarray, source: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> np.ndarray:
    """Undo `reorient_array`: an array on the canonical grid back onto the original volume's grid."""
    out = array
    for axis, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=axis)
    return np.ascontiguousarray(np.transpose(out, np.argsort(source)))

"""Reorientation to the canonical S/P/L array order keeps every voxel where it is in patient space."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from viewer.core.reorient import to_canonical
from viewer.core.volume import AXIAL_DIRECTION, Volume


def rotations():
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            d = np.zeros((3, 3))
            for col, (row, s) in enumerate(zip(perm, signs)):
                d[row, col] = s
            yield d


@pytest.mark.parametrize("direction", list(rotations()))
def test_every_axis_permutation_and_flip(direction):
    rng = np.random.default_rng(0)
    vol = Volume(rng.normal(size=(3, 4, 5)).astype(np.float32), spacing=(2.0, 0.5, 0.7),
                 origin=(1.0, 2.0, 3.0), direction=direction)
    can = to_canonical(vol)
    assert np.allclose(can.direction, AXIAL_DIRECTION)
    # every voxel value sits at the same patient position
    for idx in [(0, 0, 0), (2, 3, 4), (1, 2, 3)]:
        p = vol.index_to_lps(idx)
        k, j, i = np.rint(can.lps_to_index(p)).astype(int)
        assert can.array[k, j, i] == vol.array[idx]


def test_canonical_volume_is_returned_unchanged():
    vol = Volume(np.zeros((2, 2, 2)))
    assert to_canonical(vol) is vol


@pytest.mark.parametrize("direction", list(rotations())[::5])
def test_arrays_go_back_to_the_original_grid(direction):
    from viewer.core.reorient import canonical_axes, from_canonical_array, reorient_array

    a = np.arange(60).reshape(3, 4, 5)
    source, flips = canonical_axes(direction)
    assert np.array_equal(from_canonical_array(reorient_array(a, source, flips), source, flips), a)

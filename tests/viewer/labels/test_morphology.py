"""Slice interpolation, island removal and smoothing: exact results on synthetic shapes, one undo step each."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.labels.label_map import LabelMap
from viewer.labels.morphology import ball, interpolate_slices, keep_largest, remove_islands, smooth


def disk(shape2d, center, radius):
    r, c = np.ogrid[: shape2d[0], : shape2d[1]]
    return (r - center[0]) ** 2 + (c - center[1]) ** 2 <= radius**2


def with_label(shape, mask, value, spacing=(1.0, 1.0, 1.0)) -> LabelMap:
    arr = np.zeros(shape, np.uint8)
    arr[mask] = value
    return LabelMap(arr, spacing)


def test_interpolation_between_two_disks_gives_intermediate_disks():
    shape = (11, 40, 40)
    m = np.zeros(shape, bool)
    m[0] = disk(shape[1:], (20, 20), 4)
    m[10] = disk(shape[1:], (20, 20), 14)
    lm = with_label(shape, m, 3)
    box = interpolate_slices(lm, 3)
    assert box is not None and box[:2] == (1, 10) and lm.undo_names == ["interpolate"]
    areas = [np.count_nonzero(lm.array[k] == 3) for k in range(11)]
    assert areas == sorted(areas) and len(set(areas)) == 11  # strictly growing
    for k in range(1, 10):
        r = 4 + k  # the radius grows linearly: 4 -> 14
        got = lm.array[k] == 3
        assert (got <= disk(shape[1:], (20, 20), r + 1)).all() and (disk(shape[1:], (20, 20), r - 1) <= got).all()
        assert abs(got.sum() - np.pi * r * r) < 2 * np.pi * r
    assert lm.touched[1:10].any() and not lm.touched[0].any()
    lm.undo()
    assert not lm.array[1:10].any()


def test_interpolation_of_identical_shapes_copies_them_and_a_moving_shape_moves():
    shape = (9, 30, 30)
    m = np.zeros(shape, bool)
    m[1, 5:12, 6:20] = True
    m[8, 5:12, 6:20] = True
    lm = with_label(shape, m, 4)
    interpolate_slices(lm, 4)
    for k in range(2, 8):
        np.testing.assert_array_equal(lm.array[k] == 4, m[1])
    assert not lm.array[0].any()
    # a disk that moves along x, interpolated along axis 0; centre in between
    m = np.zeros((5, 30, 40), bool)
    m[0] = disk((30, 40), (15, 10), 5)
    m[4] = disk((30, 40), (15, 30), 5)
    lm = with_label(m.shape, m, 3)
    interpolate_slices(lm, 3)
    centre = np.argwhere(lm.array[2] == 3).mean(axis=0)
    np.testing.assert_allclose(centre, (15, 20), atol=0.5)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(lm.array[k] == 3, disk((30, 40), (15, 10 + 5 * k), 5))


def test_interpolation_along_another_axis_respects_locks():
    shape = (20, 12, 20)
    m = np.zeros(shape, bool)
    m[5:15, 0, 5:15] = True  # drawn on coronal slices y = 0 and y = 11
    m[5:15, 11, 5:15] = True
    lm = with_label(shape, m, 3, spacing=(2.0, 1.0, 0.7))
    lm.write((5, 15, 6, 7, 5, 15), np.ones((10, 1, 10), bool), 1)  # lung on y = 6
    lm.set_label_display(1, locked=True)
    interpolate_slices(lm, 3, axis=1)
    expected = m.copy()
    expected[5:15, 1:11, 5:15] = True
    expected[:, 6] = False
    np.testing.assert_array_equal(lm.array == 3, expected)
    assert (lm.array[5:15, 6, 5:15] == 1).all()


def test_interpolation_bad_input():
    lm = LabelMap.empty((3, 4, 4))
    assert interpolate_slices(lm, 3) is None
    with pytest.raises(ValueError, match="axis"):
        interpolate_slices(lm, 3, axis=3)
    with pytest.raises(ValueError, match="unknown label"):
        interpolate_slices(lm, 8)
    lm.set_label_display(3, locked=True)
    with pytest.raises(ValueError, match="locked"):
        interpolate_slices(lm, 3)


def islands():
    m = np.zeros((10, 20, 20), bool)
    m[1:8, 2:12, 2:12] = True  # 700 voxels
    m[9, 18, 18] = True  # 1
    m[5, 15:17, 15:18] = True  # 6
    m[8, 12, 12] = True  # diagonal neighbour of the big block: same piece with 26-connectivity
    return m


def test_remove_islands_by_voxels_and_by_ml():
    m = islands()
    lm = with_label(m.shape, m, 3, spacing=(2.0, 1.0, 1.0))
    box = remove_islands(lm, 3, min_voxels=5)
    big = m.copy()
    big[9, 18, 18] = False
    np.testing.assert_array_equal(lm.array == 3, big)
    assert box == (9, 10, 18, 19, 18, 19) and lm.undo_names == ["remove islands"]
    lm.undo()
    remove_islands(lm, 3, min_ml=0.014, connectivity=6)  # 7 voxels of 0.002 mL: the 6-voxel and 1-voxel pieces go
    expected = np.zeros_like(m)
    expected[1:8, 2:12, 2:12] = True
    np.testing.assert_array_equal(lm.array == 3, expected)
    lm.undo()
    lm.write((0, 10, 0, 20, 0, 20), ~m, 1)
    remove_islands(lm, 3, min_voxels=10, fill=1)
    assert lm.array[9, 18, 18] == 1 and lm.array[5, 15, 15] == 1
    for kwargs in ({}, {"min_voxels": 3, "min_ml": 1.0}, {"min_voxels": -1}, {"min_ml": float("nan")},
                   {"min_voxels": 3, "connectivity": 5}, {"min_voxels": 3, "fill": 3}):
        with pytest.raises(ValueError):
            remove_islands(lm, 3, **kwargs)


def test_keep_largest_and_locks():
    m = islands()
    lm = with_label(m.shape, m, 4)
    keep_largest(lm, 4, connectivity=6)
    expected = np.zeros_like(m)
    expected[1:8, 2:12, 2:12] = True
    np.testing.assert_array_equal(lm.array == 4, expected)
    lm.set_label_display(4, locked=True)
    with pytest.raises(ValueError, match="locked"):
        keep_largest(lm, 4)
    assert keep_largest(LabelMap.empty((2, 2, 2)), 4) is None


def test_ball_honours_spacing():
    b = ball(2.0, (2.0, 1.0, 0.5))
    assert b.shape == (3, 5, 9) and b[1, 2, 4] and b[0, 2, 4] and not b[0, 0, 4] and b[1, 2, 0]


def test_closing_fills_a_notch_and_respects_locks():
    m = np.zeros((5, 30, 30), bool)
    m[:, 5:25, 5:25] = True
    m[:, 14:16, 5:20] = False  # a 2-voxel-wide slit
    lm = with_label(m.shape, m, 3, spacing=(3.0, 1.0, 1.0))
    lm.write((0, 5, 14, 16, 5, 8), np.ones((5, 2, 3), bool), 1)
    lm.set_label_display(1, locked=True)
    smooth(lm, 3, 2.0, method="closing")
    expected = np.zeros_like(m)
    expected[:, 5:25, 5:25] = True
    expected[:, 14:16, 5:8] = False  # the locked voxels stay lung
    np.testing.assert_array_equal(lm.array == 3, expected)
    assert (lm.array[:, 14:16, 5:8] == 1).all() and lm.undo_names[-1] == "smooth (closing)"


def test_opening_removes_a_spur_and_median_removes_noise():
    m = np.zeros((5, 30, 30), bool)
    m[:, 5:20, 5:20] = True
    m[:, 12, 20:28] = True  # a 1-voxel spur
    lm = with_label(m.shape, m, 3)
    smooth(lm, 3, 2.0, method="opening")
    got = lm.array == 3
    assert not got[:, 12, 21:].any() and got[:, 8:17, 8:17].all()
    lm.undo()
    np.testing.assert_array_equal(lm.array == 3, m)
    rng = np.random.default_rng(0)
    noisy = m.copy()
    noisy[2][rng.random((30, 30)) < 0.02] ^= True
    lm = with_label(m.shape, noisy, 3)
    smooth(lm, 3, 1.0, method="median")
    got = lm.array == 3
    assert got[1:4, 7:18, 7:18].all() and not got[:, :3].any() and not got[:, 23:].any()
    assert len(lm.undo_names) == 1


def test_smooth_bad_input():
    lm = with_label((3, 8, 8), np.ones((3, 8, 8), bool), 3)
    for kwargs in ({"radius_mm": 0}, {"radius_mm": float("inf")}, {"radius_mm": 1.0, "method": "blur"},
                   {"radius_mm": 1.0, "fill": 9}):
        with pytest.raises(ValueError):
            smooth(lm, 3, **kwargs)
    assert smooth(lm, 4, 1.0) is None


def test_an_operation_run_on_a_snapshot_is_adopted_as_one_undo_step():
    labels = LabelMap.empty((8, 20, 20), (2.0, 1.0, 1.0))
    labels.write((0, 8, 0, 20, 0, 20), np.pad(np.ones((8, 8, 8), bool), ((0, 0), (2, 10), (2, 10))), 1)
    labels.write((0, 8, 0, 20, 0, 20), np.pad(np.ones((2, 2, 2), bool), ((3, 3), (15, 3), (15, 3))), 1)
    before = labels.array.copy()
    copy = labels.snapshot()
    box = keep_largest(copy, 1)
    assert box is not None and np.array_equal(labels.array, before)  # the snapshot is independent
    revision = labels.revision
    got = labels.adopt(copy, box, copy.undo_names[-1])
    assert got is not None and labels.revision == revision + 1
    assert np.array_equal(labels.array, copy.array) and labels.undo_names[-1] == "keep largest"
    assert labels.adopt(copy, box, "again") is None  # nothing left to take
    labels.undo()
    assert np.array_equal(labels.array, before)


def test_adopt_never_changes_a_locked_label():
    labels = LabelMap.empty((4, 10, 10))
    labels.write((0, 4, 0, 10, 0, 10), np.ones((4, 10, 10), bool), 2)
    copy = labels.snapshot()
    copy.write((0, 4, 0, 10, 0, 10), np.ones((4, 10, 10), bool), 0)
    labels.set_label_display(2, locked=True)
    assert labels.adopt(copy, labels.full_box, "erase") is None and (labels.array == 2).all()
    with pytest.raises(ValueError):
        labels.adopt(LabelMap.empty((4, 10, 11)), labels.full_box, "bad")

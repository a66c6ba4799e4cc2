"""Brush, eraser, flood fill and polygon fill: exact voxels, constraints, one undo step per stroke."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.labels.label_map import LabelMap
from viewer.labels.tools import HU_PRESETS, Brush, Eraser, flood_fill, polygon_fill, resolve_hu_range


def disk(shape2d, center, spacing2d, diameter_mm):
    r, c = np.ogrid[: shape2d[0], : shape2d[1]]
    return ((r - center[0]) * spacing2d[0]) ** 2 + ((c - center[1]) * spacing2d[1]) ** 2 <= (diameter_mm / 2) ** 2


def test_a_5mm_dab_on_0_7mm_spacing_is_exactly_the_disk():
    lm = LabelMap.empty((5, 40, 40), (1.0, 0.7, 0.7))
    box = Brush(5.0, 3).dab(lm, None, (2, 20, 20))
    expected = np.zeros(lm.shape, bool)
    expected[2] = disk((40, 40), (20, 20), (0.7, 0.7), 5.0)
    np.testing.assert_array_equal(lm.array == 3, expected)
    assert expected.sum() == 37 and box == (2, 3, 17, 24, 17, 24)
    np.testing.assert_array_equal(lm.touched, expected)
    # the diff holds only the 37 voxels: bytes proportional to the change, far below the box
    d = lm.last_diff()
    assert d.size == 37 and d.index.dtype == np.uint8 and d.nbytes < 4 * 37


@pytest.mark.parametrize("plane, axis", [("coronal", 1), ("sagittal", 2)])
def test_disk_brush_honours_anisotropic_spacing_in_its_plane(plane, axis):
    lm = LabelMap.empty((20, 30, 30), (2.5, 0.6, 0.9))
    Brush(8.0, 4, shape=plane).dab(lm, None, (10, 15.2, 14.7))
    got = np.take(lm.array == 4, 15, axis=axis)  # the slice rint(15.2) resp. rint(14.7)
    sp = [s for a, s in enumerate(lm.spacing) if a != axis]
    center = (10, 14.7) if axis == 1 else (10, 15.2)
    np.testing.assert_array_equal(got, disk(got.shape, center, sp, 8.0))
    assert np.count_nonzero(lm.array) == np.count_nonzero(got)


def test_sphere_brush_honours_anisotropic_spacing():
    lm = LabelMap.empty((20, 30, 30), (2.0, 0.7, 1.1))
    Brush(9.0, 5, shape="sphere").dab(lm, None, (10, 15, 14))
    z, y, x = np.ogrid[:20, :30, :30]
    expected = ((z - 10) * 2.0) ** 2 + ((y - 15) * 0.7) ** 2 + ((x - 14) * 1.1) ** 2 <= 4.5**2
    np.testing.assert_array_equal(lm.array == 5, expected)
    assert len(lm.undo_names) == 1


def test_a_brush_smaller_than_a_voxel_paints_the_voxel_under_the_mouse():
    lm = LabelMap.empty((3, 10, 10), (1.0, 2.0, 2.0))
    Brush(0.5, 1).dab(lm, None, (1, 4.4, 6.6))
    assert np.argwhere(lm.array).tolist() == [[1, 4, 7]]


def test_hu_range_locks_and_overwrite_are_respected():
    rng = np.random.default_rng(0)
    lm = LabelMap.empty((3, 30, 30), (1.0, 0.7, 0.7))
    hu = rng.integers(-1000, 200, lm.shape).astype(np.int16)
    lm.write((1, 2, 0, 30, 0, 10), np.ones((1, 30, 10), bool), 1)  # lung left, locked below
    lm.write((1, 2, 0, 30, 25, 30), np.ones((1, 30, 5), bool), 2)
    lm.set_label_display(1, locked=True)
    before = lm.array.copy()
    Brush(12.0, 3, hu_range="ggo").dab(lm, hu, (1, 15, 15))
    d = disk((30, 30), (15, 15), (0.7, 0.7), 12.0)
    lo, hi = HU_PRESETS["ggo"]
    in_range = (hu[1] >= lo) & (hu[1] <= hi)
    expected = np.where(d & in_range & (before[1] != 1), 3, before[1])
    np.testing.assert_array_equal(lm.array[1], expected)
    assert (lm.array[1][d & ~in_range] != 3).all() and (lm.array[1][:, :10] == 1).all()
    # overwrite={0}: only background is painted; lung right and the GGO stay
    before = lm.array.copy()
    Brush(30.0, 4, overwrite={0}).dab(lm, hu, (1, 15, 20))
    d = disk((30, 30), (15, 20), (0.7, 0.7), 30.0)
    np.testing.assert_array_equal(lm.array[1], np.where(d & (before[1] == 0), 4, before[1]))
    assert (lm.array[1][:, 25:] == 2).all() and (lm.array[1] == 3).sum() == (before[1] == 3).sum() > 0
    with pytest.raises(ValueError, match="locked"):
        Brush(3.0, 1).dab(lm, hu, (1, 15, 15))


def test_eraser_clears_unlocked_labels_only():
    lm = LabelMap(np.full((3, 20, 20), 2, np.uint8), (1, 1, 1))
    lm.write((1, 2, 0, 20, 0, 10), np.ones((1, 20, 10), bool), 1)
    lm.set_label_display(1, locked=True)
    Eraser(9.0).dab(lm, None, (1, 10, 10))
    d = disk((20, 20), (10, 10), (1, 1), 9.0)
    np.testing.assert_array_equal(lm.array[1] == 0, d & (np.arange(20) >= 10))
    assert (lm.array[0] == 2).all() and (lm.array[1][:, :10] == 1).all()
    Eraser(9.0, overwrite={3}).dab(lm, None, (0, 10, 10))  # only label 3 may go: nothing changes
    assert (lm.array[0] == 2).all()


def test_a_fast_drag_leaves_no_gaps_and_a_100_dab_stroke_is_one_step():
    lm = LabelMap.empty((4, 64, 64), (1.0, 0.7, 0.7))
    brush = Brush(2.0, 3)
    lm.begin_stroke("brush")
    brush.dab(lm, None, (1, 10, 5))
    brush.line(lm, None, (1, 10, 5), (1, 40, 60))  # one mouse move of ~60 voxels
    lm.end_stroke()
    rr, cc = np.mgrid[:64, :64]
    # expected: every voxel within 1 mm of the segment (a capsule)
    a, b = np.array([10.0, 5.0]), np.array([40.0, 60.0])
    p = np.stack([rr, cc], -1).astype(float)
    t = np.clip(((p - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
    dist = np.linalg.norm((p - (a + t[..., None] * (b - a))) * 0.7, axis=-1)
    np.testing.assert_array_equal(lm.array[1] == 3, dist <= 1.0 + 1e-9)
    assert lm.undo_names == ["brush"]
    lm.clear_history()

    path = [(2, 32 + 20 * np.sin(i / 10), 32 + 20 * np.cos(i / 10)) for i in range(100)]
    brush.stroke(lm, None, path)
    assert len(lm.undo_names) == 1
    assert np.count_nonzero(lm.array[2]) > 100
    lm.undo()
    assert not lm.array[2].any() and not lm.touched[2].any()
    lm.redo()
    lm.begin_stroke()
    for p0, p1 in zip(path[:-1], path[1:]):
        brush.line(lm, None, (3, *p0[1:]), (3, *p1[1:]))
    lm.end_stroke()
    assert len(lm.undo_names) == 2
    np.testing.assert_array_equal(lm.array[3], lm.array[2])


def test_dabs_outside_the_volume_are_clipped_or_ignored():
    lm = LabelMap.empty((3, 10, 10))
    assert Brush(5.0, 1).dab(lm, None, (1, -10, -10)) is None
    assert Brush(5.0, 1).dab(lm, None, (7, 5, 5)) is None
    assert Brush(5.0, 1).dab(lm, None, (1, 0, 0)) == (1, 2, 0, 3, 0, 3)


@pytest.mark.parametrize("call, match", [
    (lambda lm, hu: Brush(0, 1), "diameter"),
    (lambda lm, hu: Brush(float("nan"), 1), "diameter"),
    (lambda lm, hu: Brush(3, 1, shape="oblique"), "shape"),
    (lambda lm, hu: Brush(3, 1, hu_range="fat"), "preset"),
    (lambda lm, hu: Brush(3, 1, hu_range=(10, -10)), "lo <= hi"),
    (lambda lm, hu: Brush(3, 9).dab(lm, hu, (1, 1, 1)), "unknown label"),
    (lambda lm, hu: Brush(3, 1).dab(lm, hu, (1, 1)), "3 finite numbers"),
    (lambda lm, hu: Brush(3, 1, hu_range="ggo").dab(lm, None, (1, 1, 1)), "needs the CT"),
    (lambda lm, hu: Brush(3, 1).dab(lm, hu[:1], (1, 1, 1)), "shape"),
    (lambda lm, hu: Brush(3, 1, overwrite={12}).dab(lm, hu, (1, 1, 1)), "unknown label 12"),
    (lambda lm, hu: flood_fill(lm, hu, (9, 1, 1), 1, hu_range="ggo"), "outside the volume"),
    (lambda lm, hu: flood_fill(lm, hu, (1, 1, 1), 1, hu_range="ggo", connectivity=8), "connectivity"),
    (lambda lm, hu: flood_fill(lm, hu, (1, 1, 1), 1, plane="axial", connectivity=6), "connectivity"),
    (lambda lm, hu: flood_fill(lm, hu, (1, 1, 1), 1, plane="oblique"), "plane"),
    (lambda lm, hu: flood_fill(lm, hu, (1, 1, 1), 1, max_extent_mm=-3), "max_extent_mm"),
    (lambda lm, hu: polygon_fill(lm, hu, "axial", 1, [(0, 0), (3, 3)], 1), "at least 3"),
    (lambda lm, hu: polygon_fill(lm, hu, "axial", 5, [(0, 0), (3, 3), (0, 3)], 1), "slice index"),
    (lambda lm, hu: polygon_fill(lm, hu, "axial", 1, [(0, 0), (3, 3), (0, 3)], 4), "locked"),
])
def test_bad_tool_input_is_a_value_error(call, match):
    lm = LabelMap.empty((3, 10, 10))
    lm.set_label_display(4, locked=True)
    hu = np.zeros(lm.shape, np.int16)
    with pytest.raises(ValueError, match=match):
        call(lm, hu)


def test_resolve_hu_range():
    assert resolve_hu_range("Consolidation") == (-300.0, 50.0)
    assert resolve_hu_range((-5, 5)) == (-5.0, 5.0) and resolve_hu_range(None) is None


def two_blobs():
    """Two -500 HU cubes in -900 HU air that touch only along an edge (z, y, x)."""
    hu = np.full((12, 30, 30), -900, np.int16)
    hu[2:6, 2:8, 2:8] = -500
    hu[2:6, 8:14, 8:14] = -500  # touches the first cube diagonally in y-x
    hu[8:10, 20:25, 20:25] = -400  # a separate one
    return hu


def test_flood_fill_3d_follows_connectivity_exactly():
    hu = two_blobs()
    lm = LabelMap.empty(hu.shape, (1.0, 0.7, 0.7))
    box = flood_fill(lm, hu, (3, 4, 4), 3, hu_range="ggo")
    expected = np.zeros(hu.shape, bool)
    expected[2:6, 2:8, 2:8] = True
    np.testing.assert_array_equal(lm.array == 3, expected)
    assert box == (2, 6, 2, 8, 2, 8) and lm.undo_names == ["fill"]
    lm.undo()
    flood_fill(lm, hu, (3, 4, 4), 3, hu_range="ggo", connectivity=26)
    expected[2:6, 8:14, 8:14] = True
    np.testing.assert_array_equal(lm.array == 3, expected)
    assert flood_fill(lm, hu, (0, 0, 0), 4, hu_range="ggo") is None  # seed not in the range


def test_flood_fill_stops_at_locked_labels_and_other_labels_outside_overwrite():
    hu = np.full((6, 20, 20), -500, np.int16)
    lm = LabelMap.empty(hu.shape)
    lm.write((0, 6, 0, 20, 10, 11), np.ones((6, 20, 1), bool), 1)  # a wall
    lm.set_label_display(1, locked=True)
    flood_fill(lm, hu, (3, 5, 2), 3, hu_range="ggo")
    assert (lm.array[:, :, :10] == 3).all() and not (lm.array[:, :, 11:] == 3).any()
    lm.set_label_display(1, locked=False)
    lm.undo()
    flood_fill(lm, hu, (3, 5, 2), 3, hu_range="ggo", overwrite={0})  # the wall is not replaceable
    assert (lm.array[:, :, :10] == 3).all() and (lm.array[:, :, 10] == 1).all() and not lm.array[:, :, 11:].any()
    flood_fill(lm, hu, (3, 5, 2), 3, hu_range="ggo", connectivity=26)  # a re-fill grows through its own voxels
    assert (lm.array[:, :, 11:] == 3).all() and (lm.array[:, :, 10] == 3).all()


def test_bucket_fill_and_max_extent():
    lm = LabelMap.empty((10, 40, 40), (1.0, 1.0, 1.0))
    lm.write((0, 10, 0, 40, 0, 20), np.ones((10, 40, 20), bool), 1)
    flood_fill(lm, None, (5, 5, 5), 2)  # no HU range: the seed's label region
    assert (lm.array[:, :, :20] == 2).all() and not lm.array[:, :, 20:].any()
    lm.undo()
    flood_fill(lm, None, (5, 20, 30), 4, max_extent_mm=10)
    assert np.argwhere(lm.array == 4).min(0).tolist() == [0, 15, 25]
    assert np.argwhere(lm.array == 4).max(0).tolist() == [9, 25, 35]


def test_flood_fill_2d_stays_on_its_slice():
    hu = two_blobs()
    lm = LabelMap.empty(hu.shape)
    flood_fill(lm, hu, (3, 4, 4), 3, hu_range=(-600, -450), plane="axial")
    expected = np.zeros(hu.shape, bool)
    expected[3, 2:8, 2:8] = True
    np.testing.assert_array_equal(lm.array == 3, expected)
    flood_fill(lm, hu, (3, 4, 4), 4, hu_range=(-600, -450), plane="axial", connectivity=8)
    expected[3, 8:14, 8:14] = True
    np.testing.assert_array_equal(lm.array == 4, expected)
    flood_fill(lm, hu, (4, 4, 4), 5, hu_range=(-600, -450), plane="sagittal")
    expected = np.zeros(hu.shape, bool)
    expected[2:6, 2:8, 4] = True
    np.testing.assert_array_equal(lm.array == 5, expected)


def test_flood_fill_on_the_phantom_lung_is_the_lung_component():
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    ph = make_phantom(PhantomConfig(shape=(16, 48, 48), noise_sd=0.0, n_ggo=0, n_consolidation=0))
    lung = ph.masks["lung_left"]
    seed = tuple(np.argwhere(lung)[len(np.argwhere(lung)) // 2])
    lm = LabelMap.empty(ph.volume.shape, ph.volume.spacing)
    hu = ph.volume.array
    flood_fill(lm, hu, seed, 1, hu_range=(-1000, -400), connectivity=6)
    filled = lm.array == 1
    assert filled[seed] and (hu[filled] <= -400).all()
    assert (filled & lung).sum() > 0.9 * lung.sum()


def test_polygon_fill_is_exact():
    lm = LabelMap.empty((4, 20, 20))
    square = [(1.5, 2.5), (1.5, 7.5), (6.5, 7.5), (6.5, 2.5)]
    polygon_fill(lm, None, "axial", 2, square, 3)
    expected = np.zeros(lm.shape, bool)
    expected[2, 2:7, 3:8] = True
    np.testing.assert_array_equal(lm.array == 3, expected)
    # a triangle on a coronal slice: (row, col) = (z, x)
    lm2 = LabelMap.empty((10, 5, 10))
    polygon_fill(lm2, None, "coronal", 1, [(0, 0), (0, 8), (8, 0)], 2)
    z, x = np.mgrid[:10, :10]
    tri = z + x < 8  # centres on the right/bottom edges are outside
    np.testing.assert_array_equal(lm2.array[:, 1] == 2, tri)
    assert np.count_nonzero(lm2.array) == tri.sum()
    # adjacent squares share no voxel
    lm3 = LabelMap.empty((1, 10, 10))
    polygon_fill(lm3, None, "axial", 0, [(0, 0), (0, 5), (5, 5), (5, 0)], 1)
    polygon_fill(lm3, None, "axial", 0, [(0, 5), (0, 9), (5, 9), (5, 5)], 2, overwrite={0})
    assert np.count_nonzero(lm3.array == 1) == 25 and np.count_nonzero(lm3.array == 2) == 20


def test_polygon_fill_with_hu_range():
    hu = np.full((2, 10, 10), -900, np.int16)
    hu[0, :, 5:] = -100
    lm = LabelMap.empty(hu.shape)
    polygon_fill(lm, hu, "axial", 0, [(-1, -1), (-1, 20), (20, 20), (20, -1)], 4, hu_range="consolidation")
    assert (lm.array[0, :, 5:] == 4).all() and not lm.array[0, :, :5].any() and not lm.array[1].any()


def test_a_fill_over_its_volume_limit_is_refused_with_its_size():
    lm = LabelMap.empty((10, 40, 40), (2.0, 1.0, 1.0))  # 2 mm^3 voxels
    with pytest.raises(ValueError, match=r"it would fill 32\.0 mL, over the 10 mL limit"):
        flood_fill(lm, None, (5, 5, 5), 2, max_ml=10)  # the whole background: 16000 voxels = 32 mL
    assert not lm.array.any() and not lm.can_undo  # nothing changed, nothing to undo
    flood_fill(lm, None, (5, 5, 5), 2, max_ml=40)
    assert (lm.array == 2).all() and lm.undo_names == ["fill"]  # under the limit: one undo step
    with pytest.raises(ValueError, match="max_ml must be a positive number"):
        flood_fill(lm, None, (5, 5, 5), 3, max_ml=0)

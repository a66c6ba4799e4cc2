"""The label map model: sparse-diff undo/redo, strokes, locks, listeners, AI import, table edits, stats."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.labels.label_map import LabelMap, VoxelDiff, index_dtype
from viewer.labels.stats import label_stats
from viewer.labels.table import LabelTable

SHAPE = (6, 20, 24)


def full_mask(box):
    z0, z1, y0, y1, x0, x1 = box
    return np.ones((z1 - z0, y1 - y0, x1 - x0), bool)


def snapshot(lm: LabelMap):
    return lm.array.copy(), lm.touched.copy()


def assert_state(lm: LabelMap, state) -> None:
    np.testing.assert_array_equal(lm.array, state[0])
    np.testing.assert_array_equal(lm.touched, state[1])


@pytest.fixture
def lm() -> LabelMap:
    return LabelMap.empty(SHAPE, (2.0, 0.5, 0.5))


def test_construction_defaults_and_copy():
    arr = np.zeros(SHAPE, np.uint8)
    arr[1, 2, 3] = 4
    lm = LabelMap(arr, (1, 2, 3))
    assert lm.table == LabelTable.default() and lm.spacing == (1.0, 2.0, 3.0)
    assert lm.array.flags.c_contiguous and lm.array.dtype == np.uint8 and not lm.touched.any()
    arr[1, 2, 3] = 0
    assert lm.array[1, 2, 3] == 4  # copied
    assert not lm.dirty and lm.revision == 0 and not lm.can_undo
    assert LabelMap(np.ones(SHAPE, bool)).array.max() == 1
    assert lm.voxel_ml == pytest.approx(0.006)


@pytest.mark.parametrize("kwargs, match", [
    ({"array": np.zeros((4, 4), np.uint8)}, "3D"),
    ({"array": np.full(SHAPE, 9, np.uint8)}, "not in the label table"),
    ({"array": np.full(SHAPE, 300, np.int32)}, "0..255"),
    ({"array": np.full(SHAPE, -1, np.int16)}, "0..255"),
    ({"array": np.zeros(SHAPE, np.float32)}, "integers"),
    ({"array": np.zeros(SHAPE, np.uint8), "spacing": (1, 0, 1)}, "spacing"),
    ({"array": np.zeros(SHAPE, np.uint8), "spacing": (1, 1)}, "spacing"),
    ({"array": np.zeros(SHAPE, np.uint8), "touched": np.zeros((1, 2, 3), bool)}, "touched"),
    ({"array": np.zeros(SHAPE, np.uint8), "max_undo": -1}, "max_undo"),
])
def test_bad_construction_is_a_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LabelMap(**kwargs)


def test_write_records_a_sparse_diff_and_notifies(lm):
    seen = []
    lm.on_change(seen.append)
    mask = np.zeros((2, 5, 5), bool)
    mask[0, 1, 2] = mask[1, 3, 4] = True
    box = lm.write((2, 4, 10, 15, 10, 15), mask, 3)
    assert box == (2, 4, 11, 14, 12, 15) and seen == [box]
    assert lm.array[2, 11, 12] == 3 and lm.array[3, 13, 14] == 3 and np.count_nonzero(lm.array) == 2
    assert lm.touched[2, 11, 12] and np.count_nonzero(lm.touched) == 2
    assert lm.dirty and lm.revision == 1 and lm.undo_names == ["edit"]
    d = lm.last_diff()
    assert isinstance(d, VoxelDiff) and d.size == 2 and d.index.dtype == np.uint8
    assert list(d.old) == [0, 0] and list(d.new) == [3, 3]
    # nothing changes: no step, no notification
    assert lm.write((2, 4, 10, 15, 10, 15), mask, 3) is None
    assert len(seen) == 1 and len(lm.undo_names) == 1
    lm.mark_clean()
    assert not lm.dirty


def test_index_dtype_is_the_smallest_sufficient():
    assert index_dtype(256) == np.uint8 and index_dtype(257) == np.uint16
    assert index_dtype(65536) == np.uint16 and index_dtype(65537) == np.uint32
    assert index_dtype(2**32 + 1) == np.uint64


def random_edits(lm: LabelMap, rng: np.random.Generator, n: int):
    states = [snapshot(lm)]
    for i in range(n):
        z0, y0, x0 = rng.integers(0, [SHAPE[0] - 1, SHAPE[1] - 3, SHAPE[2] - 3])
        box = (z0, z0 + 1 + rng.integers(0, SHAPE[0] - z0), y0, y0 + 3, x0, x0 + 3)
        mask = rng.random((box[1] - box[0], 3, 3)) < 0.6
        if i % 3 == 2:
            lm.import_mask(np.pad(mask, [(box[0], SHAPE[0] - box[1]), (y0, SHAPE[1] - y0 - 3),
                                         (x0, SHAPE[2] - x0 - 3)]), int(rng.integers(1, 6)), mode="merge")
        else:
            lm.write(box, mask, int(rng.integers(0, 6)))
        if len(lm.undo_names) == len(states):  # an edit that changed nothing adds no step
            states.append(snapshot(lm))
    return states


def test_undo_redo_is_bit_exact_including_touched(lm):
    states = random_edits(lm, np.random.default_rng(1), 40)
    assert len(lm.undo_names) == len(states) - 1 > 30
    for state in reversed(states[:-1]):
        assert lm.undo()
        assert_state(lm, state)
    assert not lm.undo() and lm.can_redo
    for state in states[1:]:
        assert lm.redo()
        assert_state(lm, state)
    assert not lm.redo()


def test_120_undo_steps_and_a_new_edit_clears_redo(lm):
    states = random_edits(lm, np.random.default_rng(2), 130)
    assert len(states) - 1 >= 120
    for _ in range(len(states) - 1):
        assert lm.undo()
    assert not lm.can_undo
    assert_state(lm, states[0])
    lm.redo()
    lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 5)
    assert not lm.can_redo


def test_history_is_capped_by_steps_and_by_bytes():
    lm = LabelMap.empty(SHAPE, max_undo=5)
    for i in range(8):
        lm.write((0, 1, 0, 1, i, i + 1), np.ones((1, 1, 1), bool), 1)
    assert len(lm.undo_names) == 5
    while lm.undo():
        pass
    assert lm.array[0, 0, :3].tolist() == [1, 1, 1] and lm.array[0, 0, 3:8].sum() == 0
    lm = LabelMap.empty(SHAPE, max_undo_bytes=5000)
    for i in range(5):
        lm.write((i, i + 1, 0, 20, 0, 24), np.ones((1, 20, 24), bool), 1)  # 480 voxels: ~2.3 kB per step
    assert 0 < lm.history_nbytes <= 5000 and len(lm.undo_names) == 2


def test_a_stroke_is_one_undo_step_first_old_last_new(lm):
    lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 1, touched=False)
    before = snapshot(lm)
    with lm.stroke("brush"):
        for i in range(100):
            lm.write((0, 1, 0, 1, i % 24, i % 24 + 1), np.ones((1, 1, 1), bool), 3 if i < 50 else 4)
        assert lm.in_stroke
    assert lm.undo_names == ["edit", "brush"]
    after = snapshot(lm)
    d = lm.last_diff()
    assert d.size == 24 and d.old[0] == 1 and d.new[0] == 4  # voxel 0 painted 3 (i = 0, 24, 48), 4 (72, 96)
    assert set(d.new) == {4} and set(d.old[1:]) == {0}
    lm.undo()
    assert_state(lm, before)
    lm.redo()
    assert_state(lm, after)


def test_stroke_misuse_is_a_value_error(lm):
    with pytest.raises(ValueError, match="end_stroke"):
        lm.end_stroke()
    lm.begin_stroke()
    lm.begin_stroke()  # nested: still one group
    lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 1)
    with pytest.raises(ValueError, match="during a stroke"):
        lm.undo()
    lm.end_stroke()
    assert lm.undo_names == []
    lm.end_stroke()
    assert lm.undo_names == ["stroke"]
    lm.begin_stroke()
    lm.end_stroke()  # an empty stroke adds no step
    assert lm.undo_names == ["stroke"]


def test_locked_labels_never_change_and_bad_values_are_rejected(lm):
    lm.write((0, 2, 0, 4, 0, 4), np.ones((2, 4, 4), bool), 1)
    lm.set_label_display(1, locked=True)
    assert lm.write((0, 3, 0, 6, 0, 6), np.ones((3, 6, 6), bool), 2) is not None
    assert np.count_nonzero(lm.array == 1) == 32 and np.count_nonzero(lm.array == 2) == 108 - 32
    assert lm.write((0, 3, 0, 6, 0, 6), np.ones((3, 6, 6), bool), 0) is not None
    assert np.count_nonzero(lm.array == 1) == 32 and np.count_nonzero(lm.array) == 32
    with pytest.raises(ValueError, match="locked"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 1)
    with pytest.raises(ValueError, match="unknown label 9"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 9)
    with pytest.raises(ValueError, match="out of range"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 256)
    with pytest.raises(ValueError, match="integer"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 2.5)
    with pytest.raises(ValueError, match="mask must be a bool array"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 2, 1), bool), 2)
    with pytest.raises(ValueError, match="outside the volume"):
        lm.write((0, 1, 0, 1, 0, 99), np.ones((1, 1, 99), bool), 2)
    with pytest.raises(ValueError, match="unknown label 7"):
        lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 2, overwrite={0, 7})


def test_overwrite_limits_what_is_replaced(lm):
    lm.write((0, 1, 0, 1, 0, 3), np.ones((1, 1, 3), bool), 1)
    lm.write((0, 1, 0, 1, 1, 2), np.ones((1, 1, 1), bool), 2)
    lm.write((0, 1, 0, 1, 0, 5), np.ones((1, 1, 5), bool), 3, overwrite={0, 1})
    assert lm.array[0, 0, :5].tolist() == [3, 2, 3, 3, 3]
    lm.write((0, 1, 0, 1, 0, 5), np.ones((1, 1, 5), bool), 4, overwrite={0})
    assert lm.array[0, 0, :6].tolist() == [3, 2, 3, 3, 3, 0]


def test_import_mask_is_one_step_and_not_touched(lm):
    lm.write((0, 1, 0, 1, 0, 2), np.ones((1, 1, 2), bool), 5)  # a person's voxels
    lm.write((5, 6, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 4)
    lm.set_label_display(4, locked=True)
    before = snapshot(lm)
    seen = []
    lm.on_change(seen.append)
    ai = np.zeros(SHAPE, np.uint8)
    ai[0, 0, 1:4] = 1
    ai[1, 5:8, 5:8] = 2
    ai[5, 0, 0] = 2  # lands on the locked label: kept
    box = lm.import_mask(ai, mode="replace")
    assert box == (0, 2, 0, 8, 0, 8) and lm.undo_names[-1] == "import" and seen == [box]
    assert lm.array[0, 0, :5].tolist() == [0, 1, 1, 1, 0] and np.count_nonzero(lm.array == 2) == 9
    assert lm.array[5, 0, 0] == 4
    # imported (and replaced) voxels are not a person's work any more; the locked voxel still is
    assert lm.touched[5, 0, 0] and np.count_nonzero(lm.touched) == 1
    lm.undo()
    assert_state(lm, before)
    # merge: only the imported voxels change, over unlocked labels
    lm.import_mask(ai == 2, 3, mode="merge")
    assert lm.array[0, 0, :3].tolist() == [5, 5, 0] and np.count_nonzero(lm.array == 3) == 9
    lm.undo()
    lm.import_mask(ai, {2: 3}, mode="merge")
    assert np.count_nonzero(lm.array == 3) == 9 and np.count_nonzero(lm.array == 1) == 0
    lm.undo()
    lm.import_mask(ai, 2, mode="merge")
    assert np.count_nonzero(lm.array == 2) == 12


@pytest.mark.parametrize("mask, value, mode, match", [
    (np.zeros((2, 2, 2), bool), 1, "replace", "does not match"),
    (np.zeros(SHAPE, bool), None, "replace", "needs the label value"),
    (np.zeros(SHAPE, bool), 1, "add", "mode"),
    (np.full(SHAPE, 8, np.uint8), None, "replace", "unknown label 8"),
    (np.zeros(SHAPE, np.uint8), {1: 9}, "replace", "unknown label 9"),
    (np.zeros(SHAPE, np.uint8), {0: 1}, "replace", "out of range"),
    (np.zeros(SHAPE, np.float32), 1, "replace", "bool or integer"),
    (np.full(SHAPE, 256, np.int32), None, "replace", "0..255"),
    (np.zeros(SHAPE, bool), 4, "replace", "locked"),
])
def test_bad_imports_are_value_errors(lm, mask, value, mode, match):
    lm.set_label_display(4, locked=True)
    with pytest.raises(ValueError, match=match):
        lm.import_mask(mask, value, mode=mode)


def test_table_edits_are_undoable_and_delete_clears_voxels(lm):
    seen = []
    lm.on_change(seen.append)
    info = lm.add_label("nodule", (1, 2, 3))
    assert info.value == 6 and 6 in lm.table and seen[-1] == lm.full_box
    lm.write((0, 2, 0, 2, 0, 2), np.ones((2, 2, 2), bool), 6)
    lm.rename_label(6, "solid nodule")
    lm.recolor_label(6, (9, 9, 9))
    lm.set_label_display(6, opacity=0.3)  # display state: not an undo step
    assert lm.undo_names == ["add label", "edit", "rename label", "recolour label"]
    before = snapshot(lm)
    lm.delete_label(6)
    assert 6 not in lm.table and not lm.array.any() and lm.undo_names[-1] == "delete label solid nodule"
    lm.undo()
    assert_state(lm, before)
    assert lm.table[6].name == "solid nodule" and lm.table[6].color == (9, 9, 9)
    lm.undo()
    lm.undo()
    assert lm.table[6].name == "nodule" and lm.table[6].opacity == 0.3  # display state kept
    lm.undo()
    lm.undo()
    assert 6 not in lm.table
    lm.redo()
    assert lm.table[6].name == "nodule"
    lm.set_label_display(2, locked=True)
    with pytest.raises(ValueError, match="locked"):
        lm.delete_label(2)
    with pytest.raises(ValueError, match="unknown label"):
        lm.rename_label(42, "x")
    with pytest.raises(ValueError, match="already used"):
        lm.rename_label(1, "lung right")
    with pytest.raises(ValueError, match="colour"):
        lm.recolor_label(1, (300, 0, 0))
    with pytest.raises(ValueError, match="empty"):
        lm.add_label(" ")


def test_listener_removal(lm):
    seen = []
    cb = lm.on_change(seen.append)
    lm.write((0, 1, 0, 1, 0, 1), np.ones((1, 1, 1), bool), 1)
    lm.undo()
    lm.redo()
    assert seen == [(0, 1, 0, 1, 0, 1)] * 3
    lm.remove_listener(cb)
    lm.undo()
    assert len(seen) == 3


def test_label_stats_counts_volumes_hu_and_lung_share():
    lm = LabelMap.empty((4, 10, 10), (2.0, 1.0, 0.5))
    hu = np.full(lm.shape, -850, np.int16)
    lm.write((0, 4, 0, 10, 0, 5), np.ones((4, 10, 5), bool), 1)  # 200 voxels
    lm.write((0, 4, 0, 10, 5, 10), np.ones((4, 10, 5), bool), 2)  # 200
    ggo = np.zeros((4, 10, 10), bool)
    ggo[1, 2:4, 2:7] = True  # 10 voxels: 6 over lung left, 4 over lung right
    hu[ggo] = [-500, -400] * 5
    lm.write(lm.full_box, ggo, 3)
    stats = {s.value: s for s in label_stats(lm, hu)}
    g = stats[3]
    assert g.name == "ground-glass opacity" and g.voxels == 10
    assert g.volume_ml == pytest.approx(10 * 2.0 * 1.0 * 0.5 / 1000)
    assert g.mean_hu == pytest.approx(-450) and g.std_hu == pytest.approx(50)
    assert g.percent_of_lung == pytest.approx(100 * 10 / 400)
    assert stats[1].voxels == 194 and stats[1].mean_hu == pytest.approx(-850) and stats[1].std_hu == pytest.approx(0)
    assert stats[4].voxels == 0 and stats[4].mean_hu is None and stats[4].percent_of_lung == 0
    lung = np.zeros(lm.shape, bool)
    lung[:, :, :5] = True
    by_mask = {s.value: s for s in label_stats(lm, None, lung_mask=lung, values=[3])}
    assert list(by_mask) == [3] and by_mask[3].mean_hu is None and by_mask[3].percent_of_lung == pytest.approx(3.0)
    outside = {s.value: s for s in label_stats(lm, hu, lesion_values=[4])}
    assert outside[3].percent_of_lung is None and outside[1].percent_of_lung == pytest.approx(100 * 194 / 390)
    with pytest.raises(ValueError, match="shape"):
        label_stats(lm, hu[:2])
    with pytest.raises(ValueError, match="lung_mask"):
        label_stats(lm, hu, lung_mask=lung[:2])
    with pytest.raises(ValueError, match="unknown label"):
        label_stats(lm, hu, values=[17])


def test_label_stats_on_the_phantom_matches_its_masks():
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    ph = make_phantom(PhantomConfig(shape=(16, 48, 48)))
    lm = LabelMap(ph.label_map(), ph.volume.spacing)
    stats = {s.name: s for s in label_stats(lm, ph.volume.array)}
    left = ph.masks["lung_left"] & (ph.label_map() == 1)
    assert stats["lung left"].voxels == int(left.sum())
    assert stats["lung left"].volume_ml == pytest.approx(left.sum() * np.prod(ph.volume.spacing) / 1000)
    assert stats["lung left"].mean_hu == pytest.approx(float(ph.volume.array[left].mean()))
    assert stats["lung left"].std_hu == pytest.approx(float(ph.volume.array[left].std()), rel=1e-6)
    assert stats["lung left"].mean_hu < -600

"""The Qt-free side of annotation: view input to edits (`Annotator`) and files on the original grid."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.core.reorient import to_canonical
from viewer.core.volume import Volume
from viewer.io.label_maps import GridMapping, file_format, load_label_map, save_label_map
from viewer.labels.label_map import LabelMap
from viewer.labels.session import Annotator, ToolSettings, hu_choice, interpolation_axis, step_brush_size
from viewer.labels.tools import HU_PRESETS, Brush, flood_fill


@pytest.fixture
def ct():
    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 200, (12, 40, 50)).astype(np.int16)
    return hu


def test_a_drag_is_one_undo_step_and_matches_the_brush(ct):
    labels = LabelMap.empty(ct.shape, (2.0, 1.0, 1.0))
    ann = Annotator(labels, ct, ToolSettings(tool="brush", value=3, diameter_mm=6.0))
    ann.press("axial", (5, 10, 10))
    assert ann.painting and labels.in_stroke
    ann.drag((5, 12, 20))
    ann.drag((5, 12, 20))  # no move: nothing
    ann.drag((5, 30, 30))
    ann.release()
    assert not ann.painting and labels.undo_names == ["brush"]
    ref = LabelMap.empty(ct.shape, (2.0, 1.0, 1.0))
    Brush(6.0, 3, shape="axial").stroke(ref, ct, [(5, 10, 10), (5, 12, 20), (5, 30, 30)])
    assert np.array_equal(labels.array, ref.array)
    labels.undo()
    assert not labels.array.any()


def test_constraints_reach_every_tool(ct):
    labels = LabelMap.empty(ct.shape, (2.0, 1.0, 1.0))
    s = ToolSettings(tool="sphere", value=3, diameter_mm=9.0, hu_range=HU_PRESETS["ggo"])
    ann = Annotator(labels, ct, s)
    ann.press("coronal", (6, 20, 25))
    ann.release()
    painted = labels.array == 3
    assert painted.any() and np.all((ct[painted] >= -750) & (ct[painted] <= -300))
    assert np.count_nonzero(painted.any(axis=(1, 2))) > 1  # a sphere spans slices
    s.tool, s.value, s.hu_range, s.background_only = "brush", 4, None, True
    ann.press("axial", (6, 20, 25))
    ann.release()
    assert np.array_equal(labels.array == 3, painted)  # background only: label 3 kept
    s.tool = "eraser"
    s.hu_range = (5000.0, 6000.0)  # the eraser ignores the HU range
    ann.press("axial", (6, 20, 25))
    ann.release()
    assert labels.array[6, 20, 25] == 0
    labels.set_label_display(4, locked=True)
    s.tool, s.value = "brush", 4
    with pytest.raises(ValueError, match="locked"):
        ann.press("axial", (6, 5, 5))
    assert not labels.in_stroke and not ann.painting


def test_fill_and_lasso(ct):
    labels = LabelMap.empty(ct.shape, (2.0, 1.0, 1.0))
    s = ToolSettings(tool="fill", value=2, hu_range=(-1000, 200), max_extent_mm=10.0)
    ann = Annotator(labels, ct, s)
    ann.press("sagittal", (6, 20, 25))
    ref = LabelMap.empty(ct.shape, (2.0, 1.0, 1.0))
    flood_fill(ref, ct, (6, 20, 25), 2, hu_range=(-1000, 200), plane="sagittal", max_extent_mm=10.0)
    assert np.array_equal(labels.array, ref.array) and np.all(labels.array[:, :, 25].any(axis=0)[15:26])
    assert ann.fill("axial", (100, 0, 0)) is None  # outside the volume: nothing
    s.fill_3d = True
    labels.clear()
    ann.press("axial", (6, 20, 25))
    assert np.count_nonzero(labels.array.any(axis=(1, 2))) > 1
    labels.clear()
    s.tool = "lasso"
    ann.lasso("axial", [(4, 10, 10), (4, 10, 30), (4, 30, 30), (4, 30, 10)])
    assert labels.array[4, 20, 20] == 2 and labels.array[4, 5, 5] == 0 and not labels.array[3].any()
    assert ann.lasso("axial", [(4, 10, 10), (4, 10, 30)]) is None


def test_brush_size_steps_and_names():
    assert step_brush_size(5.0, True) == 6.0 and step_brush_size(5.0, False) == 4.0
    assert step_brush_size(0.5, False) == 0.5 and step_brush_size(200.0, True) == 200.0
    assert step_brush_size(1.0, True) == 1.5
    assert hu_choice(None) == "none" and hu_choice((-750, -300)) == "ggo" and hu_choice((-10, 10)) == "custom"
    assert interpolation_axis("coronal") == 1


def scrambled_volume() -> Volume:
    rng = np.random.default_rng(2)
    canon = Volume(rng.integers(-1000, 500, (6, 7, 8)).astype(np.int16), (3.0, 2.0, 1.5), (10.0, -20.0, 30.0))
    array = np.flip(np.transpose(canon.array, (1, 2, 0)), axis=0)  # axes (y, x, z), y reversed
    direction = canon.direction[:, [1, 2, 0]].copy()
    direction[:, 0] *= -1
    origin = canon.index_to_lps((0, canon.shape[1] - 1, 0))
    return Volume(np.ascontiguousarray(array), (2.0, 1.5, 3.0), tuple(origin), direction)


def test_grid_mapping_round_trips_and_saves_on_the_original_grid(tmp_path):
    original = scrambled_volume()
    canon = to_canonical(original)
    mapping = GridMapping.of(original)
    assert mapping.canonical_shape == canon.shape and not mapping.is_dicom
    assert np.array_equal(mapping.to_canonical(original.array), canon.array)
    assert np.array_equal(mapping.to_original(canon.array), original.array)
    labels = LabelMap.empty(canon.shape, canon.spacing)
    Brush(4.0, 3, shape="sphere").dab(labels, canon.array, (2, 3, 4))
    touched = labels.touched.copy()
    out = save_label_map(tmp_path / "m.nii.gz", labels.array, labels.table, mapping, touched=touched)
    import SimpleITK as sitk

    saved = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(saved, mapping.to_original(labels.array))
    back, table, back_touched = load_label_map(out, mapping)
    assert np.array_equal(back, labels.array) and np.array_equal(back_touched, touched) and 3 in table
    with pytest.raises(ValueError, match="DICOM"):
        save_label_map(tmp_path / "m.dcm", labels.array, labels.table, mapping)
    with pytest.raises(ValueError, match="does not match"):
        save_label_map(tmp_path / "m.nii.gz", np.zeros((2, 2, 2), np.uint8), labels.table, mapping)


def test_file_format():
    assert file_format("a/b.nii.gz") == "nifti" and file_format("b.NII") == "nifti"
    assert file_format("seg.dcm") == "seg" and file_format("SEG0001") == "seg"
    with pytest.raises(ValueError):
        file_format("mask.nrrd")

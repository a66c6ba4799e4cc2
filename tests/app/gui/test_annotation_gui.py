"""Annotation in the main window, offscreen: strokes from real mouse events, overlay pixels, undo, constraints,
saving on the original grid (NIfTI, DICOM SEG), crash recovery, the unsaved-edits prompt, AI import, shortcuts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from PySide6 import QtCore

from viewer.core.volume import Volume
from viewer.dicom.write import write_ct_series
from viewer.io.recovery import RecoveryStore
from viewer.io.seg import load_source_datasets, read_dicom_seg
from viewer.io.volumes import open_volume, write_volume
from viewer.labels.label_map import LabelMap
from viewer.labels.tools import HU_PRESETS, Brush, flood_fill
from viewer.state.slicing import Orientation
from viewer.synthetic.phantom import PhantomConfig, make_phantom

LEFT = QtCore.Qt.MouseButton.LeftButton
CTRL = QtCore.Qt.KeyboardModifier.ControlModifier
PERM, FLIPS = (2, 0, 1), (True, False, True)  # the NIfTI CT's axes: a sagittal-like, flipped acquisition


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(shape=(32, 112, 112), spacing=(5.0, 3.0, 3.0), n_ggo=2, n_consolidation=1,
                                      seed=11))


@pytest.fixture(scope="module")
def dicom_dir(tmp_path_factory, phantom):
    folder = tmp_path_factory.mktemp("ct") / "dicom"
    write_ct_series(phantom.volume, folder, uid_seed="annotation-gui")
    return folder


def scrambled(volume: Volume) -> Volume:
    """The same image on a non-canonical grid: axes permuted by PERM and flipped by FLIPS."""
    array = np.transpose(volume.array, PERM)
    direction = volume.direction[:, list(PERM)].copy()
    corner = [0, 0, 0]
    for a, (src, flip) in enumerate(zip(PERM, FLIPS)):
        if flip:
            array = np.flip(array, axis=a)
            direction[:, a] *= -1
            corner[src] = volume.shape[src] - 1
    return Volume(np.ascontiguousarray(array), tuple(volume.spacing[s] for s in PERM),
                  tuple(volume.index_to_lps(corner)), direction)


def to_scrambled(array: np.ndarray) -> np.ndarray:
    out = np.transpose(array, PERM)
    for a, flip in enumerate(FLIPS):
        if flip:
            out = np.flip(out, axis=a)
    return out


@pytest.fixture(scope="module")
def nifti_ct(tmp_path_factory, phantom):
    path = tmp_path_factory.mktemp("nifti") / "ct.nii.gz"
    write_volume(scrambled(phantom.volume), path)
    return path


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("LUNGLENS_RECOVERY_DIR", str(tmp_path / "recovery"))


def open_window(qtbot, path, prompt=None):
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    if prompt is not None:
        win.annotation.prompt_answer = prompt
    win.resize(1100, 800)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(path))
    for view in win.views.values():
        view.refresh_now()
    return win


def close_discarding(win) -> None:
    win.annotation.prompt_answer = lambda _kind, _text: "discard"
    win.close()


def drag(qtbot, view, voxels) -> None:
    """Left-button press at the first voxel's pixel, moves through the others, release at the last."""
    vp = view.graphics.viewport()
    pts = [view.view_pixel_of_voxel(v) for v in voxels]
    qtbot.mousePress(vp, LEFT, pos=pts[0])
    for p in pts[1:]:
        qtbot.mouseMove(vp, pos=p)
    qtbot.mouseRelease(vp, LEFT, pos=pts[-1])


def disk(shape, spacing, center, diameter_mm) -> np.ndarray:
    """The voxels of an axial disk brush: centres within diameter/2 of `center` on its slice."""
    k, j, i = center
    jj, ii = np.ogrid[:shape[1], :shape[2]]
    out = np.zeros(shape, bool)
    out[k] = ((jj - j) * spacing[1]) ** 2 + ((ii - i) * spacing[2]) ** 2 <= (diameter_mm / 2) ** 2 * (1 + 1e-9)
    return out


def pixel(view, voxel) -> np.ndarray:
    view.outline.hide()
    view.refresh_now()
    img = view.graphics.grab().toImage()
    c = img.pixelColor(view.view_pixel_of_voxel(voxel))
    return np.array([c.red(), c.green(), c.blue()], int)


def test_brush_stroke_paints_the_disk_shows_it_and_undoes_in_one_step(qtbot, dicom_dir):
    win = open_window(qtbot, dicom_dir)
    view = win.views[Orientation.AXIAL]
    state = win.state
    view.setFocus()
    qtbot.keyClick(view, QtCore.Qt.Key.Key_B)  # B: brush, from the focused slice view
    assert view.tool == "brush" and win.annotation.labels is not None
    win.annotation_panel.size.setValue(14.0)
    cursor = state.cursor
    k = cursor[0]
    center = (k, 30, 34)
    drag(qtbot, view, [center])  # a click: one dab
    labels = win.annotation.labels
    expected = disk(state.shape, state.volume.spacing, center, 14.0)
    assert np.array_equal(labels.array > 0, expected)
    assert np.all(labels.array[expected] == 3) and np.array_equal(labels.touched, expected)
    assert state.cursor == cursor  # painting does not move the crosshair
    qtbot.mouseMove(view.graphics.viewport(), pos=view.view_pixel_of_voxel(center))
    rect = view.outline.rect()  # the brush outline: true size in mm, centred on the voxel under the mouse
    assert view.outline.isVisible() and rect.width() == pytest.approx(14.0) and rect.height() == pytest.approx(14.0)
    assert (rect.center().x(), rect.center().y()) == pytest.approx(((34 + 0.5) * 3.0, (30 + 0.5) * 3.0))

    r, g, b = pixel(view, center)  # ground-glass yellow over grey
    assert r > g + 20 and g > b + 40
    assert np.ptp(pixel(view, (k, 30, 50))) < 8  # beside the disk: plain grey

    before = labels.array.copy()
    path = [(k, 60, 20), (k, 64, 30), (k, 70, 45), (k, 71, 60)]
    drag(qtbot, view, path)  # a drag: dab and lines, one undo step
    ref = LabelMap(before, state.volume.spacing)
    Brush(14.0, 3, shape="axial").stroke(ref, state.volume.array, path)
    assert np.array_equal(labels.array, ref.array)
    assert labels.undo_names == ["brush", "brush"]
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Z, CTRL)  # Ctrl+Z from the slice view
    assert np.array_equal(labels.array, before) and np.array_equal(labels.touched, expected)
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Z, CTRL | QtCore.Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(labels.array, ref.array)
    close_discarding(win)


def test_shortcuts_pick_labels_size_visibility_and_tools(qtbot, dicom_dir):
    win = open_window(qtbot, dicom_dir)
    view = win.views[Orientation.CORONAL]
    view.setFocus()
    qtbot.keyClick(view, QtCore.Qt.Key.Key_E)
    assert view.tool == "eraser" and win.annotation.labels is not None
    qtbot.keyClick(view, QtCore.Qt.Key.Key_4)
    assert win.annotation.settings.value == 4
    assert win.annotation_panel.current_value() == 4  # the table row follows
    size = win.annotation.settings.diameter_mm
    qtbot.keyClick(view, QtCore.Qt.Key.Key_BracketRight)
    assert win.annotation.settings.diameter_mm > size
    assert win.annotation_panel.size.value() == win.annotation.settings.diameter_mm
    qtbot.keyClick(view, QtCore.Qt.Key.Key_BracketLeft)
    qtbot.keyClick(view, QtCore.Qt.Key.Key_BracketLeft)
    assert win.annotation.settings.diameter_mm < size
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Space)
    assert not win.annotation.layer.visible
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Space)
    assert win.annotation.layer.visible
    qtbot.keyClick(view, QtCore.Qt.Key.Key_F)
    assert all(v.tool == "fill" for v in win.views.values())
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Escape)
    assert all(v.tool == "navigate" for v in win.views.values())
    assert win.tool_actions["navigate"].isChecked()
    close_discarding(win)


def test_hu_range_and_locked_labels_hold_through_the_gui(qtbot, dicom_dir, phantom):
    win = open_window(qtbot, dicom_dir)
    view = win.views[Orientation.AXIAL]
    panel, state = win.annotation_panel, win.state
    win.set_tool("brush")
    panel.size.setValue(60.0)
    hu = state.volume.array
    k = state.cursor[0]
    ggo = np.argwhere(phantom.masks["ggo"][k])
    center = (k, *(int(v) for v in ggo[len(ggo) // 2]))
    panel.hu.setCurrentIndex(panel.hu.findData("ggo"))
    drag(qtbot, view, [center])
    labels = win.annotation.labels
    lo, hi = HU_PRESETS["ggo"]
    painted = labels.array > 0
    in_range = (hu >= lo) & (hu <= hi)
    assert painted.any() and np.array_equal(painted, disk(state.shape, state.volume.spacing, center, 60) & in_range)

    panel.hu.setCurrentIndex(panel.hu.findData("none"))
    row = [r[0] for r in panel._rows].index(3)
    panel.table.item(row, 4).setCheckState(QtCore.Qt.CheckState.Checked)  # lock ground-glass
    assert labels.table[3].locked
    ggo = labels.array == 3
    panel.table.selectRow([r[0] for r in panel._rows].index(4))  # paint consolidation over it
    assert win.annotation.settings.value == 4
    drag(qtbot, view, [center])
    assert np.array_equal(labels.array == 3, ggo)  # locked voxels kept
    assert np.count_nonzero(labels.array == 4) > 0
    panel.table.selectRow(row)  # painting with the locked label is refused, not a crash
    before = labels.array.copy()
    drag(qtbot, view, [(k, 20, 20)])
    assert np.array_equal(labels.array, before)
    assert "locked" in win.statusBar().currentMessage()
    close_discarding(win)


def test_lasso_and_fill_from_the_gui(qtbot, dicom_dir):
    win = open_window(qtbot, dicom_dir)
    view = win.views[Orientation.CORONAL]
    state = win.state
    j = state.cursor[1]
    win.set_tool("lasso")
    drag(qtbot, view, [(20, j, 20), (20, j, 40), (10, j, 40), (10, j, 20)])
    labels = win.annotation.labels
    assert labels.array[15, j, 30] == 3 and labels.array[15, j + 1, 30] == 0 and labels.array[5, j, 30] == 0
    assert labels.undo_names == ["polygon"]
    vp = view.graphics.viewport()
    qtbot.mousePress(vp, LEFT, pos=view.view_pixel_of_voxel((20, j, 60)))
    qtbot.mouseMove(vp, pos=view.view_pixel_of_voxel((20, j, 80)))
    qtbot.mouseMove(vp, pos=view.view_pixel_of_voxel((5, j, 80)))
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Escape)  # Esc drops the unfinished lasso
    qtbot.mouseRelease(vp, LEFT, pos=view.view_pixel_of_voxel((5, j, 60)))
    assert labels.undo_names == ["polygon"] and view.tool == "navigate"
    win.set_tool("eraser")
    win.annotation_panel.size.setValue(7.0)
    drag(qtbot, view, [(15, j, 25), (15, j, 35)])  # an eraser drag across the polygon
    assert labels.array[15, j, 30] == 0 and labels.array[18, j, 30] == 3 and labels.undo_names[-1] == "erase"
    win.set_tool("fill")
    win.annotation_panel.hu.setCurrentIndex(win.annotation_panel.hu.findData("none"))
    win.annotation_panel.table.selectRow(0)  # lung left; a 2D bucket fill of the background around the seed
    seed = (25, j, 90)
    ref = LabelMap(labels.array, state.volume.spacing, labels.table)
    flood_fill(ref, state.volume.array, seed, 1, plane="coronal", max_extent_mm=80.0)
    drag(qtbot, view, [seed])
    assert np.array_equal(labels.array, ref.array) and np.count_nonzero(labels.array == 1) > 10
    messages: list = []
    win.annotation.status_message.connect(lambda text, _ms: messages.append(text))
    drag(qtbot, view, [seed])  # the same fill again: nothing changes, and it says so
    assert np.array_equal(labels.array, ref.array) and "the fill changed nothing" in messages[-1]
    steps = list(labels.undo_names)
    win.annotation_panel.fill_mode.setCurrentIndex(1)  # 3D
    win.annotation_panel.table.selectRow(1)
    win.annotation_panel.extent.setValue(1000)
    win.annotation_panel.fill_limit.setValue(1)  # a 3D fill of the background would leak far past 1 mL
    before = labels.array.copy()
    drag(qtbot, view, [(30, j, 5)])
    assert np.array_equal(labels.array, before) and labels.undo_names == steps
    assert "fill stopped: it would fill" in messages[-1] and "over the 1 mL limit" in messages[-1]
    close_discarding(win)


def test_nifti_save_is_on_the_original_grid_and_reloads_voxel_exact(qtbot, nifti_ct, phantom, tmp_path):
    win = open_window(qtbot, nifti_ct)
    assert np.array_equal(win.state.volume.array, phantom.volume.array)  # shown canonical
    view = win.views[Orientation.AXIAL]
    win.set_tool("brush")
    win.annotation_panel.size.setValue(9.0)
    k = win.state.cursor[0]
    drag(qtbot, view, [(k, 20, 10), (k, 40, 30), (k, 45, 70)])
    win.annotation.labels.add_label("nodule")
    win.annotation.set_active_label(6)
    drag(qtbot, win.views[Orientation.SAGITTAL], [(k + 3, 70, 60), (k - 4, 75, 60)])
    labels = win.annotation.labels
    canonical, touched = labels.array.copy(), labels.touched.copy()
    out = tmp_path / "edits.nii.gz"
    with qtbot.waitSignal(win.annotation.saved, timeout=20000):
        win.annotation.save_to(out)
    assert not labels.dirty and win.annotation.path == out
    saved = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(saved), to_scrambled(canonical))  # the CT's own grid
    ct = sitk.ReadImage(str(nifti_ct))
    assert saved.GetDirection() == pytest.approx(ct.GetDirection()) and saved.GetOrigin() == pytest.approx(
        ct.GetOrigin())
    touched_file = tmp_path / json.loads((tmp_path / "edits.labels.json").read_text())["touched"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(touched_file))),
                          to_scrambled(touched).astype(np.uint8))
    win.annotation.new_label_map()
    assert not win.annotation.labels.array.any()
    with qtbot.waitSignal(win.annotation.loaded, timeout=20000):
        win.annotation.open(out)
    labels = win.annotation.labels
    assert np.array_equal(labels.array, canonical) and np.array_equal(labels.touched, touched)
    assert labels.table[6].name == "nodule" and not labels.dirty
    close_discarding(win)


def test_dicom_seg_save_and_reload_voxel_exact(qtbot, dicom_dir, tmp_path):
    win = open_window(qtbot, dicom_dir)
    win.set_tool("sphere")
    win.annotation_panel.size.setValue(20.0)
    k = win.state.cursor[0]
    drag(qtbot, win.views[Orientation.AXIAL], [(k, 40, 40), (k, 50, 70)])
    canonical = win.annotation.labels.array.copy()
    assert np.count_nonzero(canonical[k - 2]) > 0  # a sphere reaches the neighbouring slices
    out = tmp_path / "edits.dcm"
    with qtbot.waitSignal(win.annotation.saved, timeout=30000):
        win.annotation.save_to(out)
    original = open_volume(dicom_dir)
    seg, table = read_dicom_seg(out, original, load_source_datasets(dicom_dir, original))
    assert np.array_equal(seg, canonical) and table[3].name == "ground-glass opacity"
    win.annotation.labels.clear()
    with qtbot.waitSignal(win.annotation.loaded, timeout=30000):
        win.annotation.open(out)
    assert np.array_equal(win.annotation.labels.array, canonical)
    close_discarding(win)


def test_save_errors_keep_the_edits(qtbot, nifti_ct, tmp_path):
    win = open_window(qtbot, nifti_ct)
    win.set_tool("brush")
    k = win.state.cursor[0]
    drag(qtbot, win.views[Orientation.AXIAL], [(k, 30, 30)])
    labels = win.annotation.labels
    before = labels.array.copy()
    with qtbot.waitSignal(win.annotation.save_failed, timeout=20000) as failed:
        win.annotation.save_to(tmp_path / "edits.dcm")  # a NIfTI CT has no DICOM series to reference
    assert "NIfTI" in failed.args[0]
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with qtbot.waitSignal(win.annotation.save_failed, timeout=20000):
        win.annotation.save_to(tmp_path / "blocked" / "edits.nii.gz")
    assert labels.dirty and np.array_equal(labels.array, before) and win.annotation.labels is labels
    close_discarding(win)


def test_a_short_write_keeps_the_saved_file_and_the_unsaved_edits(qtbot, nifti_ct, tmp_path, monkeypatch):
    win = open_window(qtbot, nifti_ct)
    win.set_tool("brush")
    k = win.state.cursor[0]
    drag(qtbot, win.views[Orientation.AXIAL], [(k, 30, 30)])
    out = tmp_path / "edits.nii.gz"
    with qtbot.waitSignal(win.annotation.saved, timeout=20000):
        win.annotation.save_to(out)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    drag(qtbot, win.views[Orientation.AXIAL], [(k, 60, 60), (k, 62, 70)])
    labels = win.annotation.labels
    edited = labels.array.copy()
    real = sitk.WriteImage

    def full_disk(image, name, *args, **kwargs):  # SimpleITK on a full disk: a short file, no exception
        real(image, name, *args, **kwargs)
        with open(name, "r+b") as fh:
            fh.truncate(40)

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    with qtbot.waitSignal(win.annotation.save_failed, timeout=20000) as failed:
        win.annotation.save()
    assert "not saved" in failed.args[0] and "edits.nii.gz" in failed.args[0] and "edits are kept" in failed.args[0]
    assert labels.dirty and np.array_equal(labels.array, edited)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == saved
    close_discarding(win)


def test_autosave_and_restore_after_a_crash(qtbot, dicom_dir, tmp_path):
    win = open_window(qtbot, dicom_dir)
    win.annotation.autosave_interval_ms = 150
    win.set_tool("brush")
    k = win.state.cursor[0]
    with qtbot.waitSignal(win.annotation.autosaved, timeout=10000):
        drag(qtbot, win.views[Orientation.AXIAL], [(k, 30, 30), (k, 50, 60)])
    labels = win.annotation.labels
    labels.add_label("scar", (10, 20, 30))
    win.annotation.set_active_label(6)
    drag(qtbot, win.views[Orientation.CORONAL], [(k, 60, 40), (k - 5, 60, 70)])
    with qtbot.waitSignal(win.annotation.autosaved, timeout=10000):
        pass
    saved_array, saved_touched, saved_table = labels.array.copy(), labels.touched.copy(), labels.table.copy()
    # the first window "crashes": it is never closed, so it neither saves nor discards

    asked = []
    second = open_window(qtbot, dicom_dir, prompt=lambda kind, text: asked.append((kind, text)) or "restore")
    assert asked and asked[0][0] == "restore" and asked[0][1].startswith("Restore unsaved edits from ")
    restored = second.annotation.labels
    assert np.array_equal(restored.array, saved_array) and np.array_equal(restored.touched, saved_touched)
    assert restored.table == saved_table and restored.dirty
    store, key = RecoveryStore(), second.annotation.key
    assert store.find(key) is not None
    with qtbot.waitSignal(second.annotation.saved, timeout=20000):
        second.annotation.save_to(tmp_path / "kept.nii.gz")
    assert store.find(key) is None  # saved: the recovery file is gone
    win.annotation.autosave_interval_ms = 60_000
    close_discarding(win)
    close_discarding(second)


def test_closing_with_unsaved_edits_asks(qtbot, dicom_dir, tmp_path):
    answers = ["cancel"]
    win = open_window(qtbot, dicom_dir, prompt=lambda kind, text: answers.pop(0))
    win.set_tool("brush")
    k = win.state.cursor[0]
    drag(qtbot, win.views[Orientation.AXIAL], [(k, 30, 30)])
    labels = win.annotation.labels
    painted = labels.array.copy()
    win.close()
    assert win.isVisible() and win.annotation.labels is labels and labels.dirty  # Cancel: nothing changed
    assert np.array_equal(labels.array, painted)
    win.annotation.autosave(blocking=True)
    key = win.annotation.key
    assert RecoveryStore().find(key) is not None
    answers.append("cancel")
    win.open_path(str(dicom_dir))  # opening another CT asks too
    assert win.annotation.labels is labels and not answers
    answers.append("discard")
    win.close()
    assert not win.isVisible() and RecoveryStore().find(key) is None


def test_start_from_ai_result_imports_the_lung_mask(qtbot, dicom_dir, phantom):
    win = open_window(qtbot, dicom_dir)
    panel = win.annotation_panel
    assert not panel.ai_button.isEnabled()
    lungs = (phantom.masks["lung_left"] * 1 + phantom.masks["lung_right"] * 2).astype(np.uint8)
    lesions = np.where(phantom.masks["ggo"], 3, 0).astype(np.uint8)
    win.annotation.set_ai_result(SimpleNamespace(lung_mask=lungs, lesion_mask=lesions))
    assert panel.ai_button.isEnabled()
    panel.ai_part.setCurrentText("lungs")
    panel.ai_mode.setCurrentIndex(panel.ai_mode.findData("replace"))
    qtbot.mouseClick(panel.ai_button, LEFT)
    labels = win.annotation.labels
    assert np.array_equal(labels.array, lungs) and not labels.touched.any() and labels.undo_names == ["start from AI"]
    panel.ai_part.setCurrentText("lesions")
    panel.ai_mode.setCurrentIndex(panel.ai_mode.findData("merge"))
    qtbot.mouseClick(panel.ai_button, LEFT)
    assert np.array_equal(labels.array, np.where(lesions > 0, lesions, lungs))
    with qtbot.waitSignal(win.annotation.stats_ready, timeout=10000) as stats:
        win.annotation.request_stats()
    rows = {s.value: s for s in stats.args[0]}
    assert rows[3].voxels == int(phantom.masks["ggo"].sum())
    assert rows[3].volume_ml == pytest.approx(rows[3].voxels * labels.voxel_ml)
    close_discarding(win)


def test_3d_surfaces_follow_edits_once_they_pause(qtbot, dicom_dir):
    win = open_window(qtbot, dicom_dir)
    if not hasattr(win.view3d, "labels_edited"):
        pytest.skip("no 3D view on this system")
    qtbot.waitUntil(lambda: win.view3d.renderer.volume is win.state.volume, timeout=5000)
    qtbot.wait(50)
    win.set_tool("brush")
    calls = []
    original = win.sync_3d_labels
    win.sync_3d_labels = lambda: (calls.append(1), original())
    k = win.state.cursor[0]
    for n in range(4):
        drag(qtbot, win.views[Orientation.AXIAL], [(k, 30 + 5 * n, 30)])
    assert calls == []  # never on a dab
    qtbot.waitUntil(lambda: len(calls) == 1, timeout=3000)
    assert win.view3d.wait_for_surfaces(10.0)  # built in a worker thread
    assert win.view3d.renderer.surface_labels() == {3}
    qtbot.wait(700)
    assert len(calls) == 1
    close_discarding(win)


def test_whole_label_operations_from_the_panel(qtbot, dicom_dir, monkeypatch):
    from PySide6 import QtWidgets

    win = open_window(qtbot, dicom_dir)
    panel = win.annotation_panel
    buttons = {b.text(): b for b in panel.findChildren(QtWidgets.QPushButton)}
    view = win.views[Orientation.AXIAL]
    win.set_tool("brush")
    panel.size.setValue(15.0)
    k = win.state.cursor[0]
    for z in (k - 3, k + 3):
        win.state.set_slice(Orientation.AXIAL, z)
        view.refresh_now()
        drag(qtbot, view, [(z, 40, 40)])
    drag(qtbot, view, [(k + 3, 90, 90)])  # a second, smaller piece on the last slice
    labels = win.annotation.labels
    assert not labels.array[k].any()
    done = win.annotation.operation_done
    with qtbot.waitSignal(done, timeout=10000) as blocker:  # run in a worker; the GUI stays live
        qtbot.mouseClick(buttons["Interpolate slices"], LEFT)
        assert win.annotation.operation_running == "interpolate"
        qtbot.mouseClick(buttons["Keep largest"], LEFT)  # refused while another operation runs
    assert blocker.args[0] == "interpolate" and blocker.args[1] is not None
    assert all(labels.array[z, 40, 40] == 3 for z in range(k - 3, k + 4))
    with qtbot.waitSignal(done, timeout=10000):
        qtbot.mouseClick(buttons["Keep largest"], LEFT)
    assert labels.array[k + 3, 90, 90] == 0 and labels.array[k, 40, 40] == 3
    assert labels.undo_names[-2:] == ["interpolate", "keep largest"]
    qtbot.waitUntil(panel.undo_button.isEnabled, timeout=2000)  # the panel follows edits on the next event turn
    qtbot.mouseClick(panel.undo_button, LEFT)
    assert labels.array[k + 3, 90, 90] == 3
    qtbot.waitUntil(panel.redo_button.isEnabled, timeout=2000)
    qtbot.mouseClick(panel.redo_button, LEFT)
    assert labels.array[k + 3, 90, 90] == 0
    close_discarding(win)

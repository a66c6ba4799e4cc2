"""The viewer's widgets, offscreen: rendered pixels, linked views, aspect ratio, overlays, main window."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PySide6 import QtCore

from tests.cli_process import run_cli
from viewer.core.windowing import PRESETS
from viewer.dicom.write import write_ct_series
from viewer.gui.slice_view import SliceView
from viewer.state.layers import HeatmapLayer, LabelLayer
from viewer.state.slicing import Orientation
from viewer.state.view_state import ViewerState
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def phantom():
    # anisotropic on purpose: 6 mm slices, 3.5 mm pixels
    return make_phantom(PhantomConfig(shape=(40, 96, 96), spacing=(6.0, 3.5, 3.5), n_ggo=2, n_consolidation=1,
                                      seed=3))


def pixel(view: SliceView, voxel) -> np.ndarray:
    """RGB of the widget pixel where a voxel is drawn."""
    view.refresh_now()
    img = view.graphics.grab().toImage()
    p = view.view_pixel_of_voxel(voxel)
    c = img.pixelColor(p)
    return np.array([c.red(), c.green(), c.blue()])


def make_view(qtbot, state, orientation, size=(400, 400)) -> SliceView:
    view = SliceView(state, orientation)
    qtbot.addWidget(view)
    view.resize(*size)
    view.show()
    qtbot.waitExposed(view)
    view.reset_view()
    view.refresh_now()
    return view


def lung_voxel(phantom, side="lung_left") -> tuple[int, int, int]:
    mask = phantom.masks[side] & (phantom.volume.array < -800)
    idx = np.argwhere(mask)
    return tuple(int(v) for v in idx[len(idx) // 2])


def test_lung_is_dark_in_lung_window_and_black_in_mediastinal(qtbot, phantom):
    state = ViewerState(phantom.volume)
    voxel = lung_voxel(phantom)
    state.set_cursor((voxel[0], 0, 0))
    view = make_view(qtbot, state, Orientation.AXIAL)
    hu = phantom.volume.array[voxel]
    expected = np.clip((hu + 1350) / 1500 * 255, 0, 255)
    assert abs(pixel(view, voxel).mean() - expected) < 12
    bone = tuple(int(v) for v in np.argwhere(phantom.volume.array[voxel[0]] > 600)[0])
    assert pixel(view, (voxel[0], *bone)).mean() > 240  # bone white in the lung window
    state.apply_preset("mediastinum")
    assert pixel(view, voxel).mean() < 5


def test_scrolling_with_keys_changes_the_slice_and_image(qtbot, phantom):
    state = ViewerState(phantom.volume)
    view = make_view(qtbot, state, Orientation.AXIAL)
    before = view.image_item.image.copy()
    k = state.cursor[0]
    qtbot.keyClick(view, QtCore.Qt.Key.Key_Up)
    qtbot.keyClick(view, QtCore.Qt.Key.Key_PageDown)
    assert state.cursor[0] == k + 1 - 10
    view.refresh_now()
    assert not np.array_equal(before, view.image_item.image)
    from viewer.core.windowing import GreyLUT

    assert np.array_equal(view.image_item.image, GreyLUT(state.window)(state.volume.array[k - 9]))


def test_click_in_one_view_moves_the_others(qtbot, phantom):
    state = ViewerState(phantom.volume)
    axial = make_view(qtbot, state, Orientation.AXIAL)
    coronal = make_view(qtbot, state, Orientation.CORONAL)
    sagittal = make_view(qtbot, state, Orientation.SAGITTAL)
    target = (state.cursor[0], 30, 70)
    pos = axial.view_pixel_of_voxel(target)
    qtbot.mouseClick(axial.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton, pos=pos)
    assert state.cursor == target
    assert state.slice_index(Orientation.CORONAL) == 30 and state.slice_index(Orientation.SAGITTAL) == 70
    coronal.refresh_now()
    sagittal.refresh_now()
    # crosshair lines in the coronal view sit on the clicked column and the axial slice
    assert coronal.vline.value() == pytest.approx((70 + 0.5) * 3.5)
    assert coronal.hline.value() == pytest.approx((39 - target[0] + 0.5) * 6.0)


def test_physical_aspect_ratio_on_anisotropic_voxels(qtbot, phantom):
    state = ViewerState(phantom.volume)
    view = make_view(qtbot, state, Orientation.CORONAL, size=(500, 500))
    k, j, i = state.cursor
    a = view.view_pixel_of_voxel((k, j, i))
    b = view.view_pixel_of_voxel((k - 10, j, i))  # 10 slices = 60 mm down
    c = view.view_pixel_of_voxel((k, j, i + 10))  # 10 columns = 35 mm right
    vertical, horizontal = b.y() - a.y(), c.x() - a.x()
    assert vertical / horizontal == pytest.approx(6.0 / 3.5, rel=0.05)


def test_overlay_colours_at_known_lesion_voxels(qtbot, phantom):
    state = ViewerState(phantom.volume)
    state.layers.add(LabelLayer("truth", phantom.label_map(), opacity=0.6), state.shape)
    ggo = tuple(int(v) for v in np.argwhere(phantom.masks["ggo"])[0])
    cons = tuple(int(v) for v in np.argwhere(phantom.masks["consolidation"])[0])
    view = make_view(qtbot, state, Orientation.AXIAL)
    state.set_cursor((ggo[0], 0, 0))  # that slice, crosshair away from the voxel
    r, g, b = pixel(view, ggo)
    assert r > 150 and g > 110 and b < 0.6 * g  # yellow over grey
    state.set_cursor((cons[0], 0, 0))
    r, g, b = pixel(view, cons)
    assert r > 170 and g < 0.7 * r and b < 0.7 * r  # red over grey
    state.layers["truth"].update(visible=False)
    r, g, b = pixel(view, cons)
    assert abs(int(r) - int(g)) < 8 and abs(int(g) - int(b)) < 8  # plain grey again


def test_heatmap_overlay_is_drawn_above_threshold_only(qtbot, phantom):
    state = ViewerState(phantom.volume)
    heat = np.zeros(state.shape, np.float32)
    k = state.cursor[0]
    heat[k, 10:40, 10:40] = 1.0
    state.layers.add(HeatmapLayer("cam", heat, colormap="jet", opacity=1.0, threshold=0.5), state.shape)
    view = make_view(qtbot, state, Orientation.AXIAL)
    r, g, b = pixel(view, (k, 25, 25))
    assert r > 100 and b < 60  # top of the jet map: dark red
    outside = pixel(view, (k, 60, 60))
    assert np.ptp(outside) < 8  # grey: the heat map is transparent below the threshold


def test_right_drag_changes_window(qtbot, phantom):
    state = ViewerState(phantom.volume)
    view = make_view(qtbot, state, Orientation.AXIAL)

    class Drag:
        def button(self):
            return QtCore.Qt.MouseButton.RightButton

        def scenePos(self):
            return QtCore.QPointF(120, 80)

        def lastScenePos(self):
            return QtCore.QPointF(100, 100)

        def accept(self):
            pass

    view.viewbox.mouseDragEvent(Drag())
    assert state.window.width > PRESETS["lung"].width and state.window.center > PRESETS["lung"].center


def test_ruler_and_ellipse_measure_in_mm_and_hu(qtbot, phantom):
    import pyqtgraph as pg

    state = ViewerState(phantom.volume)
    view = make_view(qtbot, state, Orientation.AXIAL)
    view.set_tool("ruler")
    start, end = QtCore.QPointF(10 * 3.5 + 1.75, 20 * 3.5 + 1.75), QtCore.QPointF(40 * 3.5 + 1.75, 60 * 3.5 + 1.75)
    m = view._new_measurement(start, end)
    assert isinstance(m.roi, pg.LineSegmentROI)
    assert view.measurement_text(m) == f"{np.hypot(30 * 3.5, 40 * 3.5):.1f} mm"
    view.set_tool("ellipse")
    m2 = view._new_measurement(start, start)
    m2.roi.setPos((30 * 3.5, 30 * 3.5))
    m2.roi.setSize((10 * 3.5, 10 * 3.5))
    text = view.measurement_text(m2)
    assert "HU" in text and "mm\u00b2" in text


@pytest.fixture(scope="module")
def phantom_series(tmp_path_factory, phantom):
    folder = tmp_path_factory.mktemp("series")
    write_ct_series(phantom.volume, folder / "dicom", uid_seed="gui")
    paths = phantom.write_masks_nifti(folder / "masks")
    return folder, paths["labels"]


def test_main_window_loads_in_a_worker_and_shows_every_view(qtbot, phantom_series, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    folder, labels = phantom_series
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1000, 800)
    win.show()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(folder / "dicom"), overlays=[str(labels)])
    assert win.state.volume.shape == (40, 96, 96)
    assert "labels" in win.state.layers
    for layout in ("1+3", "1x1", "2x2"):
        win.set_layout(layout)
    shot = win.save_screenshot(str(tmp_path / "shot.png"))
    assert shot.stat().st_size > 10000
    win.close()
    assert str(folder / "dicom") in (tmp_path / "cfg" / "settings.json").read_text()


def test_main_window_reports_bad_folder(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.load_failed, timeout=10000) as blocker:
        win.open_path(str(tmp_path / "junk"))
    assert "no DICOM image series" in blocker.args[0]
    win.close()


def test_screenshot_command(phantom_series, tmp_path):
    folder, _ = phantom_series
    out = tmp_path / "view.png"
    env = dict(os.environ, LUNGLENS_CONFIG_DIR=str(tmp_path / "cfg"))
    done = run_cli(["view", str(folder / "dicom"), "--screenshot", str(out), "--layout", "1+3", "--preset",
                    "mediastinum"], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    from PySide6 import QtGui

    img = QtGui.QImage(str(out))
    assert img.width() >= 1000 and img.height() >= 600
    # a one-shot screenshot leaves the user's settings alone (recent files, layout, window)
    assert not (tmp_path / "cfg" / "settings.json").exists()


def test_folder_with_several_series_opens_the_main_ct_without_asking(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow
    from app.gui.series_browser import SeriesBrowser
    from tests.dicom_factory import axial_positions, write_planes
    from viewer.dicom.scan import scan

    write_planes(tmp_path / "s" / "a", axial_positions(5), uid_seed="one", series_number=1)
    write_planes(tmp_path / "s" / "b", axial_positions(9), uid_seed="two", series_number=2)
    browser = SeriesBrowser(scan(tmp_path / "s"))
    qtbot.addWidget(browser)
    assert browser.table.rowCount() == 2
    assert not browser.table.item(0, 0).icon().isNull()  # thumbnails decoded
    headers = [browser.table.horizontalHeaderItem(c).text() for c in range(browser.table.columnCount())]
    assert headers[1:5] == ["patient", "study date", "series", "description"] and "slices" in headers
    rows = {browser.table.item(r, 3).text(): browser.table.item(r, headers.index("slices")).text() for r in range(2)}
    assert rows == {"1": "5", "2": "9"}
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(tmp_path / "s"))
    assert win.state.volume.shape[0] == 9  # the largest CT series
    win.close()


def test_dropping_a_folder_opens_it(qtbot, phantom_series, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from PySide6 import QtGui

    from app.gui.main_window import MainWindow

    folder, _ = phantom_series
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    mime = QtCore.QMimeData()
    mime.setUrls([QtCore.QUrl.fromLocalFile(str(folder / "dicom"))])
    drop = QtGui.QDropEvent(QtCore.QPointF(10, 10), QtCore.Qt.DropAction.CopyAction, mime,
                            QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.dropEvent(drop)
    assert win.state.volume.shape == (40, 96, 96)
    win.close()


def test_layer_panel_edits_reach_the_rendered_overlay(qtbot, phantom):
    from app.gui.docks.layer_panel import LayerPanel

    state = ViewerState(phantom.volume)
    layer = state.layers.add(LabelLayer("truth", phantom.label_map(), opacity=0.6), state.shape)
    panel = LayerPanel(state.layers)
    qtbot.addWidget(panel)
    view = make_view(qtbot, state, Orientation.AXIAL)
    cons = tuple(int(v) for v in np.argwhere(phantom.masks["consolidation"])[0])
    state.set_cursor((cons[0], 0, 0))
    panel.set_label_color(4, (0, 0, 255))
    r, g, b = pixel(view, cons)
    assert b > 150 and r < 0.7 * b  # now blue
    row = sorted(layer.colors).index(4)
    panel.labels.item(row, 1).setCheckState(QtCore.Qt.CheckState.Unchecked)
    assert 4 in layer.hidden_labels
    r, g, b = pixel(view, cons)
    assert np.ptp([r, g, b]) < 8  # label 4 hidden: grey
    panel.opacity.setValue(20)
    assert layer.opacity == pytest.approx(0.2)


def test_analyze_adds_heatmap_and_masks_and_the_plot_jumps_to_slices(qtbot, phantom_series, tmp_path, monkeypatch):
    """GUI wiring of the AI: worker thread, overlays, results panel (weights here are untrained)."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    import torch

    from app.gui.analysis import HEATMAP_LAYER, MASK_LAYER
    from app.gui.main_window import MainWindow
    from inference.inferers.slice import SliceClassifier
    from inference.models._api import get_model
    from inference.models.light_squeezenet import light_squeezenet

    torch.manual_seed(0)
    clf = SliceClassifier(get_model("light-squeezenet"), device="cpu", module=light_squeezenet())
    folder, _ = phantom_series
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(folder / "dicom"))
    failures = []
    win.analysis_failed.connect(failures.append)
    assert [win.heatmap_box.itemData(i) for i in range(win.heatmap_box.count())] == ["grad-cam", "cam"]
    win.heatmap_box.setCurrentIndex(1)  # the paper's CAM, as a user would pick it
    with qtbot.waitSignal(win.analysis_done, timeout=120000) as blocker:
        win.analyze(model=clf)
    pred = blocker.args[0]
    assert failures == []
    assert pred.heatmap_method == "cam" and "heat map CAM (paper)" in win.results.headline.text()
    assert HEATMAP_LAYER in win.state.layers and MASK_LAYER in win.state.layers
    assert 0.0 <= pred.positive_probability <= 1.0
    assert "P(COVID)" in win.results.headline.text()
    win.resize(1280, 720)  # a laptop: the AI dock shares the column with the layers; its results scroll, none clipped
    win.show()
    qtbot.waitExposed(win)
    head = win.results.headline
    qtbot.waitUntil(lambda: head.height() >= head.heightForWidth(head.width()), timeout=2000)
    assert win.results.plot.height() >= 120 and not win.results.disclaimer.visibleRegion().isEmpty()
    k = int(pred.slice_indices[len(pred.slice_indices) // 2])
    win.results.jump_to_slice(k + 0.3)
    assert win.state.cursor[0] == k
    assert not win.results.plot.isHidden()
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):  # another CT: the old result must leave the panel
        win.open_path(str(folder / "dicom"))
    assert win.results.prediction is None and win.results.plot.isHidden()
    assert "No analysis yet" in win.results.headline.text() and win.results.table.rowCount() == 0
    win.close()


def test_analyze_says_not_assessable_instead_of_a_probability(qtbot, tmp_path, monkeypatch):
    """The rules `screen` applies hold in the viewer too: a CT without lungs gets the reason, no probability."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    import torch

    from app.gui.main_window import MainWindow
    from inference.inferers.slice import SliceClassifier
    from inference.models._api import get_model
    from inference.models.light_squeezenet import light_squeezenet
    from viewer.io.volumes import write_volume
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    ph = make_phantom(PhantomConfig(shape=(24, 96, 96), spacing=(5.0, 3.6, 3.6), seed=3))
    ph.volume.array[ph.volume.array < -300] = 40  # everything solid: no lungs
    path = write_volume(ph.volume, tmp_path / "solid.nii.gz")
    torch.manual_seed(0)
    clf = SliceClassifier(get_model("light-squeezenet"), device="cpu", module=light_squeezenet())
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(path))
    with qtbot.waitSignal(win.analysis_done, timeout=120000):
        win.analyze(model=clf)
    text = win.results.headline.text()
    assert text.startswith("Not assessable: no lungs found") and "P(COVID)" not in text
    assert win.results.plot.isHidden() and win.results.table.rowCount() == 0
    win.close()


def test_toolbar_boxes_follow_the_window_and_the_layout(qtbot, tmp_path, monkeypatch):
    """The Window box says "custom" once W/L is dragged off a preset and names a preset the window equals; the
    Layout box follows View > Layout."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow
    from viewer.core.windowing import Window

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.apply_preset("lung")
    assert win.preset_box.currentText() == "lung"
    lung = win.settings.presets()["lung"]
    win.state.set_window(Window(lung.center - 255, lung.width + 510))  # a right-button drag
    assert win.preset_box.currentIndex() == -1 and win.preset_box.placeholderText() == "custom"
    bone = win.settings.presets()["bone"]
    win.state.set_window(Window(bone.center, bone.width))
    assert win.preset_box.currentText() == "bone"
    for layout in ("1x1", "1+3", "2x2"):
        win.set_layout(layout)  # as View > Layout does
        assert win.layout_box.currentText() == layout
    win.close()


def test_corner_text_shows_the_series_and_follows_the_slice(qtbot, tmp_path, monkeypatch):
    """Patient, study and acquisition text in the corners (key I toggles it); the slice line follows the cursor;
    a series without tags shows no "None"."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    import dataclasses

    from app.gui.main_window import MainWindow
    from viewer.core.volume import SeriesMetadata
    from viewer.state.slicing import Orientation
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    vol = make_phantom(PhantomConfig(shape=(20, 64, 64), spacing=(5.0, 4.0, 4.0), seed=3)).volume
    vol = dataclasses.replace(vol, metadata=dataclasses.replace(vol.metadata, patient_age="061Y", exposure_mas="95"))
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1000, 800)
    win.show()
    win.set_layout("1x1")  # the axial view large: a small pane shows the short line only (checked below)
    win.state.set_volume(vol)
    view = win.views[Orientation.AXIAL]
    qtbot.waitUntil(lambda: view.graphics.width() >= 420)
    view.refresh_now()
    text = {corner: lab.text() for corner, lab in view.corners.items()}
    assert text["top_left"].splitlines() == ["PHANTOM^LUNGLENS", "ID PHANTOM-0003", "O / 61 y"]
    assert "2020-03-15  12:00" in text["top_right"] and "Se 1: Synthetic chest CT phantom (seed 3)" in text["top_right"]
    assert text["bottom_right"].startswith("120 kVp  95 mAs\nW ")
    assert view.corners["top_left"].isVisible() and not view.info.isVisible()
    win.state.set_slice(Orientation.AXIAL, 4)
    view.refresh_now()
    first, second = view.corners["bottom_left"].text().splitlines()
    z = vol.index_to_lps((4, 0, 0))[2]
    assert first == "axial 5/20" and second == f"{z:.1f} mm  thk 5 mm"
    assert win.corner_text_action.shortcut().toString() == "I"
    win.corner_text_action.trigger()  # View > Corner text, or key I
    assert not view.corners["top_left"].isVisible() and view.info.isVisible()
    assert not win.corner_text_action.isChecked()
    win.set_corner_text(True)
    small = make_view(qtbot, win.state, Orientation.CORONAL)  # a small pane: the short line, no corners
    small.resize(300, 300)
    qtbot.waitUntil(lambda: small.graphics.width() < 420)
    small._place_overlays()
    assert not any(lab.isVisible() for lab in small.corners.values()) and small.info.isVisible()
    win.state.set_volume(dataclasses.replace(vol, metadata=SeriesMetadata(series_description="scan.nii.gz")))
    view.refresh_now()
    shown = "\n".join(lab.text() for lab in view.corners.values() if lab.isVisible())
    assert "None" not in shown and "scan.nii.gz" in shown and not view.corners["top_left"].isVisible()
    win.close()


def window_on_path(qtbot, tmp_path, monkeypatch, path, show=True):
    """A non-interactive main window (settings in tmp_path) that has opened `path`."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    if show:
        win.resize(1200, 800)
        win.show()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(path))
    return win


def test_dicom_tag_dock_lists_the_current_slices_file_and_filters(qtbot, phantom_series, tmp_path, monkeypatch):
    folder, labels = phantom_series
    win = window_on_path(qtbot, tmp_path, monkeypatch, folder / "dicom")
    assert win.tag_dock.isHidden()
    win.tag_dock.toggleViewAction().trigger()  # View > DICOM tags
    panel = win.tag_panel
    assert panel.isVisible() and "(0008,0060)" in panel.shown_tags()
    modality = next(r for r in panel.rows if r.tag == "(0008,0060)")
    assert (modality.keyword, modality.vr, modality.value, modality.differs) == ("Modality", "CS", "CT", False)
    assert next(r for r in panel.rows if r.keyword == "InstanceNumber").differs
    assert "* (0020,0013)" in panel.shown_tags()
    first = panel._shown_file
    win.state.set_slice(Orientation.AXIAL, win.state.shape[0] - 1)  # the crosshair moves: another file
    assert panel._shown_file != first and panel._shown_file in win.state.volume.files
    z = float(next(r for r in panel.rows if r.keyword == "ImagePositionPatient").value.split("\\")[2])
    expected = win.state.volume.index_to_lps(win.state.cursor)[2]
    assert abs(z - expected) < 1e-3
    panel.filter.setText("modality")
    assert panel.shown_tags() == ["(0008,0060)"]
    panel.filter.setText("")
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(labels))  # a NIfTI: no tags, and it says why
    assert panel.shown_tags() == [] and "not read from DICOM" in panel.file_label.text()
    win.close()


def test_thick_slab_shows_the_projection_in_every_view(qtbot, tmp_path, monkeypatch):
    """MIP/MinIP slabs: the displayed pixels are the window of numpy's max/min over the slab; the toolbar, key M
    and the corner text follow."""
    from viewer.core.windowing import GreyLUT
    from viewer.state.slicing import extract, slab_range

    win = window_on_phantom(qtbot, tmp_path, monkeypatch, (30, 64, 64), (2.0, 4.0, 4.0), seed=2, show=True)
    view = win.views[Orientation.AXIAL]
    view.refresh_now()
    plain = view.image_item.image.copy()
    win.set_slab(10.0, "mip")
    view.refresh_now()
    k = win.state.slice_index(Orientation.AXIAL)
    start, stop = slab_range(30, k, 10.0, 2.0)
    arr = win.state.volume.array
    lut = GreyLUT(win.state.window)
    np.testing.assert_array_equal(view.image_item.image, lut(arr[start:stop].max(axis=0)))
    assert not np.array_equal(view.image_item.image, plain)
    assert win.slab_box.value() == 10.0 and win.projection_box.currentData() == "mip"
    assert "MIP 10 mm" in view.corners["bottom_left"].text()
    win.projection_box.setCurrentIndex(1)  # MinIP, as a user picks it
    cor = win.views[Orientation.CORONAL]
    cor.refresh_now()
    j = win.state.slice_index(Orientation.CORONAL)
    start, stop = slab_range(64, j, 10.0, 4.0)
    np.testing.assert_array_equal(cor.image_item.image, lut(extract(arr[:, start:stop].min(axis=1)[:, None],
                                                                    Orientation.CORONAL, 0)))
    win.toggle_slab()  # key M
    view.refresh_now()
    assert win.state.slab_mm == 0 and np.array_equal(view.image_item.image, plain)
    win.toggle_slab()
    assert win.state.slab_mm == 10.0 and win.state.projection == "minip"
    win.close()


def window_on_phantom(qtbot, tmp_path, monkeypatch, shape, spacing, seed=1, show=False):
    """A non-interactive main window (settings in tmp_path) showing a phantom of `shape` and `spacing`."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    if show:
        win.resize(1000, 800)
        win.show()
    win.state.set_volume(make_phantom(PhantomConfig(shape=shape, spacing=spacing, seed=seed)).volume)
    return win


def test_cine_plays_through_the_main_views_slices_and_loops(qtbot, tmp_path, monkeypatch):
    win = window_on_phantom(qtbot, tmp_path, monkeypatch, (12, 32, 32), (5.0, 4.0, 4.0))
    win.set_main_view(Orientation.CORONAL)
    win.cine_fps.setValue(60)
    start = win.state.slice_index(Orientation.CORONAL)
    axial = win.state.slice_index(Orientation.AXIAL)
    assert win.cine_action.shortcut().toString() == "P"
    win.cine_action.trigger()  # play
    qtbot.waitUntil(lambda: win.state.slice_index(Orientation.CORONAL) >= start + 3, timeout=5000)
    assert win.state.slice_index(Orientation.AXIAL) == axial  # only the main view's slices move
    win.state.set_slice(Orientation.CORONAL, 31)
    qtbot.waitUntil(lambda: win.state.slice_index(Orientation.CORONAL) < 5, timeout=5000)  # looped to the start
    win.cine_action.trigger()  # pause
    assert not win._cine_timer.isActive() and not win.cine_action.isChecked()
    stopped = win.state.slice_index(Orientation.CORONAL)
    qtbot.wait(100)
    assert win.state.slice_index(Orientation.CORONAL) == stopped
    win.close()


def test_thick_slice_reformats_are_interpolated_unless_nearest_is_chosen(qtbot, tmp_path, monkeypatch):
    win = window_on_phantom(qtbot, tmp_path, monkeypatch, (10, 64, 64), (8.0, 2.0, 2.0))
    view = win.views[Orientation.CORONAL]
    view.refresh_now()
    smooth = view.image_item.image
    assert smooth.shape == (40, 64)  # 10 slices of 8 mm as 40 rows of about 2 mm
    assert len(np.unique(smooth[:, 32])) > len(np.unique(smooth[::4, 32]))  # in-between values, not copies
    win.set_smooth_reformat(False)  # View > Smooth thick-slice reformats off: the acquired slices' staircase
    view.refresh_now()
    assert view.image_item.image.shape == (10, 64) and not win.smooth_action.isChecked()
    assert win.views[Orientation.AXIAL].image_item.image.shape == (64, 64)
    win.close()


def test_load_warnings_stay_behind_a_button_and_the_hover_read_out_is_cleared(qtbot, phantom_series, tmp_path,
                                                                              monkeypatch):
    folder, labels = phantom_series
    win = window_on_path(qtbot, tmp_path, monkeypatch, folder / "dicom")
    assert win.warnings_button.isHidden() and win.load_warnings == []
    win._show_hover((1, 2, 3))
    assert "HU" in win.position_label.text()
    win.set_load_warnings(["gantry tilt 15 degrees: resampled", "slice spacing varies 1.0-2.5 mm"])
    assert not win.warnings_button.isHidden() and win.warnings_button.text().endswith("2 warnings")
    assert "gantry tilt" in win.statusBar().currentMessage() and "+1 more" in win.statusBar().currentMessage()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(labels))  # another series: its own warnings (none) and no stale read-out
    assert win.position_label.text() == "" and win.warnings_button.isHidden()
    win.close()


def test_segments_from_the_ai_are_saved_as_automatic_or_semiautomatic(qtbot, phantom_series, tmp_path, monkeypatch):
    """Start from AI, correct one label, save as DICOM SEG: the untouched AI label is AUTOMATIC, the corrected one
    SEMIAUTOMATIC (both naming the algorithm), a label drawn by hand MANUAL."""
    from types import SimpleNamespace

    import pydicom

    folder, _ = phantom_series
    win = window_on_path(qtbot, tmp_path, monkeypatch, folder / "dicom", show=False)
    shape = win.state.shape
    lungs = np.zeros(shape, np.uint8)
    lungs[:, 20:40, 10:30] = 2
    lesions = np.zeros(shape, np.uint8)
    lesions[5:10, 25:30, 15:20] = 3
    lesions[12:15, 25:30, 15:20] = 4
    ann = win.annotation
    ann.set_ai_result(SimpleNamespace(lung_mask=lungs, lesion_mask=lesions, model="light-squeezenet",
                                      lesion_method="dcn"))
    ann.start_from_ai("lungs + lesions")
    labels = ann.labels
    one = np.ones((1, 1, 1), bool)
    ann.apply("fix", lambda lm: lm.write((5, 6, 25, 26, 15, 16), one, 4, overwrite=[3]))  # a GGO voxel -> 4
    ann.apply("draw", lambda lm: lm.write((20, 21, 60, 61, 60, 61), one, 5))  # a label drawn by hand
    assert labels.touched.any()
    failed: list = []
    ann.save_failed.connect(failed.append)
    with qtbot.waitSignal(ann.saved, timeout=30000):
        ann.save_to(tmp_path / "out.dcm")
    assert failed == []
    seg = pydicom.dcmread(tmp_path / "out.dcm")
    kinds = {int(s.SegmentDescription.split()[-1]): (s.SegmentAlgorithmType, str(s.get("SegmentAlgorithmName", "")))
             for s in seg.SegmentSequence}
    assert kinds[2] == ("AUTOMATIC", "LungLens lung segmentation") and kinds[3] == ("AUTOMATIC", "dcn")
    assert kinds[4] == ("SEMIAUTOMATIC", "dcn")  # the AI's consolidation, with a voxel a person added
    assert kinds[5] == ("MANUAL", "") and 1 not in kinds  # no empty segment for the unused left-lung label
    win.close()


def test_labels_as_outlines_and_per_label_opacity(qtbot, tmp_path, monkeypatch):
    """Lungs drawn faint or as outlines leave the lung tissue visible; lesions stay strong."""
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.docks.layer_panel import LayerPanel
    from viewer.state.layers import LabelLayer, LayerList, label_edges
    from viewer.state.slicing import Orientation

    data = np.zeros((3, 20, 20), np.uint8)
    data[:, 4:16, 4:16] = 1
    data[:, 8:11, 8:11] = 3
    layers = LayerList()
    layer = LabelLayer("labels", data)
    layers.add(layer, data.shape)
    panel = LayerPanel(layers)
    qtbot.addWidget(panel)
    filled = layer.rgba(Orientation.AXIAL, 1)
    assert filled[10, 5, 3] == 128 and filled[9, 9, 3] == 128  # 50 % fill everywhere
    row = [panel._label_value(r) for r in range(panel.labels.rowCount())].index(1)
    panel.labels.cellWidget(row, 2).setValue(20)  # the lungs at 20 % of the layer's opacity
    assert layer.label_opacity == {1: 0.2}
    rgba = layer.rgba(Orientation.AXIAL, 1)
    assert rgba[10, 5, 3] == round(0.5 * 0.2 * 255) and rgba[9, 9, 3] == 128
    assert panel.labels.cellWidget(row, 2).value() == 20  # the spin box survived its own change
    panel.outline.setChecked(True)
    assert layer.outline
    rgba = layer.rgba(Orientation.AXIAL, 1)
    edges = label_edges(data[1])
    assert rgba[9, 9, 3] == 0 and rgba[12, 12, 3] == 0  # inside: no fill
    assert rgba[4, 10, 3] > 0 and rgba[8, 9, 3] > 0  # the lung's and the lesion's outlines
    assert np.array_equal(rgba[..., 3] > 0, edges & (data[1] != 0))


def test_measurements_survive_a_series_switch(qtbot, phantom_series, tmp_path, monkeypatch):
    folder, labels = phantom_series
    win = window_on_path(qtbot, tmp_path, monkeypatch, folder / "dicom")
    view = win.views[Orientation.AXIAL]
    view.set_tool("ruler")
    ruler = view._new_measurement(QtCore.QPointF(20.0, 30.0), QtCore.QPointF(80.0, 110.0))
    view.set_tool("ellipse")
    roi = view._new_measurement(QtCore.QPointF(40.0, 40.0), QtCore.QPointF(40.0, 40.0))
    roi.roi.setSize((30.0, 20.0))
    texts = [view.measurement_text(ruler), view.measurement_text(roi)]
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(labels))  # another series: its own (no) measurements
    assert view.measurements == []
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(folder / "dicom"))  # back: the measurements are there again, same values
    assert [m.kind for m in view.measurements] == ["ruler", "ellipse"]
    assert [view.measurement_text(m) for m in view.measurements] == texts
    assert [m.label.toPlainText() for m in view.measurements] == texts
    win.close()


def test_measurements_dock_lists_jumps_renames_deletes_and_exports(qtbot, phantom_series, tmp_path, monkeypatch):
    import csv

    folder, labels = phantom_series
    win = window_on_path(qtbot, tmp_path, monkeypatch, folder / "dicom")
    panel = win.measurements_panel
    axial, coronal = win.views[Orientation.AXIAL], win.views[Orientation.CORONAL]
    axial.set_tool("ruler")
    ruler = axial._new_measurement(QtCore.QPointF(20.0, 30.0), QtCore.QPointF(80.0, 110.0))
    coronal.set_tool("ellipse")
    win.state.set_slice(Orientation.CORONAL, 40)
    roi = coronal._new_measurement(QtCore.QPointF(40.0, 40.0), QtCore.QPointF(40.0, 40.0))
    roi.roi.setSize((30.0, 20.0))
    coronal.measurements_changed.emit()  # as the end of a drag does
    assert panel.table.rowCount() == 2
    assert [panel.table.item(r, 1).text() for r in range(2)] == ["axial", "coronal"]
    assert panel.table.item(0, 4).text() == axial.measurement_text(ruler)
    panel.table.item(1, 0).setText("aorta ROI")  # rename in place
    assert roi.name == "aorta ROI"
    win.state.set_slice(Orientation.CORONAL, 5)
    panel.go_to(1)
    assert win.state.slice_index(Orientation.CORONAL) == 40
    rows = list(csv.DictReader(panel.export_csv(tmp_path / "m.csv").read_text().splitlines()))
    assert [r["name"] for r in rows] == ["ruler 1", "aorta ROI"]
    assert float(rows[0]["length_mm"]) == pytest.approx(axial.measurement_values(ruler)["length_mm"], abs=1e-3)
    assert rows[1]["mean_hu"] and rows[1]["area_mm2"] and rows[0]["mean_hu"] == ""
    # DICOM SR (TID 1500), read back by highdicom: names, values and the ruler's ends in LPS mm
    import highdicom as hd

    from viewer.io.measurement_sr import read_measurement_sr

    panel.export_sr(tmp_path / "m.dcm")
    sr = hd.sr.srread(str(tmp_path / "m.dcm"))
    groups = sr.content.get_planar_roi_measurement_groups()
    assert [str(g.tracking_identifier) for g in groups] == ["ruler 1", "aorta ROI"]
    back = read_measurement_sr(tmp_path / "m.dcm")
    assert back[0].kind == "ruler" and back[1].kind == "ellipse" and back[1].points_lps.shape == (4, 3)
    assert back[0].values["length_mm"] == pytest.approx(float(rows[0]["length_mm"]), abs=1e-3)
    assert back[1].values["mean_hu"] == pytest.approx(float(rows[1]["mean_hu"]), abs=1e-3)
    ends = back[0].points_lps
    assert np.linalg.norm(ends[1] - ends[0]) == pytest.approx(back[0].values["length_mm"], rel=1e-6)
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(labels))
    assert panel.table.rowCount() == 0
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(folder / "dicom"))
    assert panel.table.rowCount() == 2 and panel.table.item(1, 0).text() == "aorta ROI"  # names come back too
    panel.table.selectRow(0)
    panel.delete_selected()
    assert panel.table.rowCount() == 1 and axial.measurements == []
    win.close()


def test_labels_of_two_measurements_do_not_overlap(qtbot, phantom):
    state = ViewerState(phantom.volume)
    view = make_view(qtbot, state, Orientation.AXIAL)
    view.set_tool("ruler")
    a = view._new_measurement(QtCore.QPointF(20.0, 30.0), QtCore.QPointF(80.0, 110.0))
    b = view._new_measurement(QtCore.QPointF(30.0, 40.0), QtCore.QPointF(80.0, 110.0))  # the same end point
    view._update_measurement(a)
    view._update_measurement(b)
    ra, rb = a.label.sceneBoundingRect(), b.label.sceneBoundingRect()
    assert ra.width() > 0 and not ra.intersects(rb)


def test_the_study_strip_shows_every_series_and_opens_the_one_clicked(qtbot, phantom_series, tmp_path, monkeypatch):
    from tests.dicom_factory import axial_positions, write_planes

    write_planes(tmp_path / "s" / "a", axial_positions(5), uid_seed="one", series_number=1)
    write_planes(tmp_path / "s" / "b", axial_positions(9), uid_seed="two", series_number=2)
    win = window_on_path(qtbot, tmp_path, monkeypatch, tmp_path / "s")
    strip = win.series_strip
    assert win.state.volume.shape[0] == 9 and not win.study_dock.isHidden() and strip.count() == 2
    assert strip.item(0).text().startswith("1:") and "5 slices" in strip.item(0).text()
    assert not strip.item(0).icon().isNull()
    assert strip.currentRow() == 1  # the series on show
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        strip.itemClicked.emit(strip.item(0))  # a click on the other series
    assert win.state.volume.shape[0] == 5 and strip.currentRow() == 0 and not win.study_dock.isHidden()
    folder, _ = phantom_series
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(folder / "dicom"))  # another study with one series: no strip
    assert win.study_dock.isHidden()
    win.close()

"""Angle and long/short axis measurements, and measurements kept between sessions."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PySide6 import QtCore

from tests.app.gui.drag import Drag
from viewer.dicom.write import write_ct_series
from viewer.state.slicing import Orientation
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("measure") / "dicom"
    write_ct_series(make_phantom(PhantomConfig(shape=(20, 64, 64), spacing=(5.0, 2.0, 2.0), seed=5)).volume, folder,
                    uid_seed="measure")
    return folder


def open_window(qtbot, config, path):
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(path))
    return win


def draw(view, tool, start, end):
    """Drag `tool` in `view` from `start` to `end` (view mm) as a user does; returns the new measurement."""
    view.set_tool(tool)
    vb = view.viewbox
    vb.mouseDragEvent(Drag(vb.mapViewToScene(QtCore.QPointF(*start)), vb.mapViewToScene(QtCore.QPointF(*end))))
    return view.measurements[-1]


def points(view, m):
    return [(round(p.x(), 6), round(p.y(), 6)) for p in view._handle_points(m)]


def test_angle_and_long_short_axis_measure_and_keep_the_short_axis_perpendicular(qtbot, tmp_path, monkeypatch,
                                                                              series):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    win = open_window(qtbot, tmp_path, series)
    axial = win.views[Orientation.AXIAL]
    angle = draw(axial, "angle", (50, 50), (90, 50))  # vertex, then the first arm's end
    assert points(axial, angle) == [(90, 50), (50, 50), (50, 10)]  # the second arm square to it, to move
    assert axial.measurement_text(angle) == "90.0\u00b0"
    axial.measurement_text(angle)
    angle.roi.movePoint(angle.roi.getHandles()[2], QtCore.QPointF(90, 90))  # the user drags the second arm
    assert axial.measurement_values(angle)["angle_deg"] == pytest.approx(45.0)
    assert angle.label.toPlainText() == "45.0\u00b0"

    cross = draw(axial, "axes", (20, 60), (100, 60))
    assert points(axial, cross) == [(20, 60), (100, 60), (60, 80), (60, 40)]
    v = axial.measurement_values(cross)
    assert (v["long_mm"], v["short_mm"]) == pytest.approx((80.0, 40.0))
    # turning the long axis carries the short one along, still perpendicular and as long
    cross.roi.movePoint(cross.roi.getHandles()[1], QtCore.QPointF(20, 140))
    p = np.array(points(axial, cross))
    assert np.dot(p[1] - p[0], p[3] - p[2]) == pytest.approx(0.0, abs=1e-6)
    assert axial.measurement_values(cross)["short_mm"] == pytest.approx(40.0)
    # a short-axis end dragged anywhere: the axis slides along the long one to the foot and stays perpendicular
    cross.roi.movePoint(cross.roi.getHandles()[2], QtCore.QPointF(40, 120))
    p = np.array(points(axial, cross))
    assert tuple(p[2]) == pytest.approx((40.0, 120.0)) and p[3][1] == pytest.approx(120.0)
    assert np.dot(p[1] - p[0], p[3] - p[2]) == pytest.approx(0.0, abs=1e-6)
    assert "long 80.0 mm" in cross.label.toPlainText()

    # the dock, CSV and DICOM SR carry them
    panel = win.measurements_panel
    assert [panel.table.item(r, 3).text() for r in range(panel.table.rowCount())] == ["angle", "axes"]
    rows = list(csv.DictReader(panel.export_csv(tmp_path / "m.csv").read_text().splitlines()))
    assert float(rows[0]["angle_deg"]) == pytest.approx(45.0)
    assert float(rows[1]["long_mm"]) == pytest.approx(80.0) and rows[1]["length_mm"] == ""
    from viewer.io.measurement_sr import read_measurement_sr

    back = read_measurement_sr(panel.export_sr(tmp_path / "m.dcm"))
    assert [r.kind for r in back] == ["angle", "axes"]
    assert back[0].values["angle_deg"] == pytest.approx(45.0) and back[0].points_lps.shape == (3, 3)
    a, vertex, b = back[0].points_lps
    cos = np.dot(a - vertex, b - vertex) / np.linalg.norm(a - vertex) / np.linalg.norm(b - vertex)
    assert np.degrees(np.arccos(cos)) == pytest.approx(45.0)  # the points in LPS agree with the value
    assert back[1].values["long_mm"] == pytest.approx(80.0) and back[1].values["short_mm"] == pytest.approx(
        axial.measurement_values(cross)["short_mm"])
    win.close()


def test_measurements_come_back_after_a_restart_and_deletions_stay_deleted(qtbot, tmp_path, monkeypatch, series):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    win = open_window(qtbot, tmp_path, series)
    axial, coronal = win.views[Orientation.AXIAL], win.views[Orientation.CORONAL]
    ruler = draw(axial, "ruler", (10, 10), (40, 50))
    ruler.name = "nodule"
    win.state.set_slice(Orientation.CORONAL, 20)
    draw(coronal, "axes", (20, 30), (80, 30))
    win.set_tool("navigate")
    texts = [axial.measurement_text(ruler), coronal.measurement_text(coronal.measurements[0])]
    win.close()  # saves what the 0.4 s debounce had not yet written
    saved = list((tmp_path / "cfg" / "measurements").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["views"]["axial"][0]["name"] == "nodule"

    again = open_window(qtbot, tmp_path, series)  # a new session
    axial, coronal = again.views[Orientation.AXIAL], again.views[Orientation.CORONAL]
    assert [m.kind for m in axial.measurements] == ["ruler"] and axial.measurements[0].name == "nodule"
    assert [axial.measurement_text(axial.measurements[0]), coronal.measurement_text(coronal.measurements[0])] == texts
    assert coronal.measurements[0].slice_index == 20
    axial.remove_measurement(axial.measurements[0])
    qtbot.waitUntil(lambda: not json.loads(saved[0].read_text())["views"]["axial"], timeout=3000)
    again.close()

    saved[0].write_text("{not json")  # a damaged file: said, not trusted, and the series still opens
    third = open_window(qtbot, tmp_path, series)
    assert "saved measurements unreadable" in third.statusBar().currentMessage()
    assert all(not v.measurements for v in third.views.values())
    third.close()


def test_screenshot_windows_keep_no_measurements(qtbot, tmp_path, monkeypatch, series):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False, persist=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(series))
    draw(win.views[Orientation.AXIAL], "ruler", (10, 10), (40, 50))
    win.close()
    assert not (tmp_path / "cfg" / "measurements").exists()


def test_store_problems_never_stop_a_series_opening_nor_lose_a_file(qtbot, tmp_path, monkeypatch, series):
    from viewer.core.errors import LoadError
    from viewer.gui.slice_view import series_key
    from viewer.io.measurement_store import load_measurements, save_measurements, store_path

    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    folder = tmp_path / "cfg" / "measurements"
    win = open_window(qtbot, tmp_path, series)
    qtbot.wait(600)
    assert not folder.exists()  # opening a series changes nothing on disk
    key = series_key(win.state.volume)
    # a rename is saved too
    draw(win.views[Orientation.AXIAL], "ruler", (10, 10), (40, 50))
    win.measurements_panel.table.item(0, 0).setText("nodule A")
    win.close()
    assert load_measurements(folder, key)["axial"][0][3] == "nodule A"
    # a well-formed file with a wrong record: refused by the store, set aside by the window, series opens
    save_measurements(folder, key, {"axial": [("axes", 3, ((0.0, 0.0), (1.0, 1.0)), "")]})
    with pytest.raises(LoadError, match="needs 4 finite points"):
        load_measurements(folder, key)
    again = open_window(qtbot, tmp_path, series)  # volume_loaded arrives
    assert all(not v.measurements for v in again.views.values())
    assert store_path(folder, key).with_suffix(".unreadable").exists()
    draw(again.views[Orientation.AXIAL], "ruler", (10, 10), (30, 30))
    again.close()
    assert len(load_measurements(folder, key)["axial"]) == 1  # new work saved; the bad file kept aside
    assert store_path(folder, key).with_suffix(".unreadable").exists()

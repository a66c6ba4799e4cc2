"""Prior comparison in the main window: a second series beside the main view, scrolling and pointing with it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PySide6 import QtCore

from viewer.core.windowing import GreyLUT, Window
from viewer.dicom.write import write_ct_series
from viewer.state.slicing import Orientation, extract
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Today's CT and a prior of the same patient: other frame of reference, table 60 mm further on, a smaller
    field of view."""
    root = tmp_path_factory.mktemp("studies")
    current = make_phantom(PhantomConfig(shape=(30, 64, 64), spacing=(5.0, 4.0, 4.0), seed=4)).volume
    prior = make_phantom(PhantomConfig(shape=(30, 64, 64), spacing=(5.0, 3.0, 3.0), seed=9, n_ggo=0)).volume
    prior = dataclasses.replace(prior, origin=(prior.origin[0], prior.origin[1], prior.origin[2] + 60.0),
                                metadata=dataclasses.replace(prior.metadata, study_date="20250101"))
    write_ct_series(current, root / "current", uid_seed="current")
    write_ct_series(prior, root / "prior", uid_seed="prior")
    return root / "current", root / "prior"


def mm_per_px(view) -> float:
    (x0, x1), _ = view.viewbox.viewRange()
    return (x1 - x0) / view.viewbox.width()


def open_both(qtbot, tmp_path, monkeypatch, studies):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1200, 700)
    win.show()
    with qtbot.waitSignal(win.volume_loaded, timeout=30000):
        win.open_path(str(studies[0]))
    with qtbot.waitSignal(win.comparison_loaded, timeout=30000):
        win.open_comparison(str(studies[1]))
    return win


def test_prior_opens_beside_the_main_view_and_scrolls_with_it(qtbot, tmp_path, monkeypatch, studies):
    win = open_both(qtbot, tmp_path, monkeypatch, studies)
    main, prior = win.views[Orientation.AXIAL], win.compare_view
    assert prior is not None and prior.isVisible() and main.isVisible()
    assert not win.views[Orientation.CORONAL].isVisible() and not win.layout_box.isEnabled()
    assert main.width() == pytest.approx(prior.width(), abs=10)  # side by side, the same size
    assert win.state.volume.shape == win.compare_state.volume.shape == (30, 64, 64)
    prior.refresh_now()
    assert "2025-01-01" in prior.corners["top_right"].text()  # the prior says which study it is
    assert "2025-01-01" not in main.corners["top_right"].text()

    # another frame of reference: linked by the volumes' centres, so the same slice of the same-sized stack
    assert not win.compare_link.absolute
    start = win.compare_state.cursor[0]
    win.state.step(Orientation.AXIAL, 3)  # the wheel in the main view
    assert win.compare_state.cursor[0] == start + 3
    qtbot.keyClick(prior, QtCore.Qt.Key.Key_Down)  # paging the prior pages the main series
    assert win.compare_state.cursor[0] == start + 2 and win.state.cursor[0] == win.compare_state.cursor[0]
    # the crosshair: a click in the main view puts the prior's crosshair on the same point
    main.set_cursor_at(QtCore.QPointF(31 * 4.0 + 1, 20 * 4.0 + 1))
    assert win.state.cursor[1:] == (20, 31)
    expected_voxel = np.round(win.compare_link.voxel_in_b(win.state.cursor)).astype(int)
    assert win.compare_state.cursor[1:] == tuple(expected_voxel[1:]) == (16, 31)  # 3 mm pixels, centres aligned
    prior.refresh_now()
    row, col = prior.hline.value() / 3.0 - 0.5, prior.vline.value() / 3.0 - 0.5
    assert (row, col) == (16, 31)
    # the same scale in both: a smaller field of view is not blown up; zooming either zooms both
    qtbot.waitUntil(lambda: mm_per_px(prior) == pytest.approx(mm_per_px(main), rel=1e-3), timeout=3000)
    main.zoom_by(0.5)
    assert mm_per_px(prior) == pytest.approx(mm_per_px(main), rel=1e-3)
    prior.zoom_by(0.8)  # Ctrl+wheel on the prior
    assert mm_per_px(main) == pytest.approx(mm_per_px(prior), rel=1e-3)
    prior.resize(prior.width() - 40, prior.height())  # a resize of the prior alone does not zoom the main view
    qtbot.wait(50)  # the window's layout settles (it may give the prior its share back)
    win.reset_views()  # Home: both fitted, at the main view's scale
    fitted = mm_per_px(main)
    qtbot.wait(50)
    assert mm_per_px(prior) == pytest.approx(fitted, rel=1e-3) and mm_per_px(main) == fitted
    # what the prior view shows is the prior's slice at its crosshair, in the shared window
    win.state.set_window(Window(-500, 1200))
    assert win.compare_state.window == Window(-500, 1200)
    prior.refresh_now()
    k = win.compare_state.cursor[0]
    expected = GreyLUT(Window(-500, 1200))(extract(win.compare_state.volume.array, Orientation.AXIAL, k))
    np.testing.assert_array_equal(prior.image_item.image, expected)
    win.close()


def test_unlinking_aligning_and_linking_again_keeps_the_users_alignment(qtbot, tmp_path, monkeypatch, studies):
    win = open_both(qtbot, tmp_path, monkeypatch, studies)
    win.sync_action.trigger()  # Ctrl+L: unlink
    assert not win.sync_action.isChecked()
    main_k = win.state.cursor[0]
    win.compare_state.step(Orientation.AXIAL, 4)  # the user pages the prior alone to the matching anatomy
    assert win.state.cursor[0] == main_k
    prior_k = win.compare_state.cursor[0]
    win.sync_action.trigger()  # link again: this alignment is the new anchor
    assert win.compare_state.cursor[0] == prior_k
    win.state.step(Orientation.AXIAL, -2)
    assert win.compare_state.cursor[0] == prior_k - 2
    # the main view's plane changes: the comparison shows the same plane
    win.set_main_view(Orientation.CORONAL)
    assert win.compare_view.orientation is Orientation.CORONAL and win.views[Orientation.CORONAL].isVisible()
    before = win.compare_state.cursor[1]
    win.state.step(Orientation.CORONAL, 6)  # 24 mm with 4 mm pixels: 8 of the prior's 3 mm
    assert win.compare_state.cursor[1] == before + 8
    win.close_comparison()
    assert win.compare_view is None and win.compare_state is None and win.layout_box.isEnabled()
    win.set_main_view(Orientation.AXIAL)
    assert all(v.isVisible() for v in win.views.values())  # the 2x2 layout is back
    win.close()


def test_comparison_needs_a_main_series(qtbot, tmp_path, monkeypatch, studies):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    with qtbot.waitSignal(win.load_failed, timeout=5000) as failed:
        win.open_comparison(str(studies[1]))
    assert "open a series before" in failed.args[0] and win.compare_view is None
    win.close()


def test_view_command_shows_the_comparison_in_its_screenshot(tmp_path, studies):
    import os

    from PySide6 import QtGui

    from tests.cli_process import run_cli

    out = tmp_path / "compare.png"
    env = dict(os.environ, LUNGLENS_CONFIG_DIR=str(tmp_path / "cfg"))
    run = ["view", str(studies[0]), "--screenshot", str(out)]
    done = run_cli([*run, "--compare", str(studies[1])], env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    img = QtGui.QImage(str(out))
    grey = np.array([[QtGui.qGray(img.pixel(x, y)) for x in range(0, img.width(), 8)]
                     for y in range(60, img.height() - 60, 8)])
    # two CT images side by side, each with bright body pixels, and they are not the same image
    left, right = grey[:, : grey.shape[1] // 3], grey[:, grey.shape[1] // 3: 2 * grey.shape[1] // 3]
    assert (left > 150).sum() > 100 and (right > 150).sum() > 100
    missing = run_cli([*run, "--compare", str(tmp_path / "nowhere")], env=env, timeout=60)
    assert missing.returncode == 1 and "nowhere: no such file or folder" in missing.stderr


def test_changing_the_main_plane_leaves_no_dead_view_behind(qtbot, tmp_path, monkeypatch, studies):
    from PySide6 import QtWidgets

    from viewer.core.windowing import Window

    win = open_both(qtbot, tmp_path, monkeypatch, studies)
    win.set_main_view(Orientation.SAGITTAL)
    win.set_main_view(Orientation.AXIAL)
    for _ in range(3):
        QtWidgets.QApplication.processEvents()  # the replaced views are deleted now
    win.state.step(Orientation.AXIAL, 2)  # raised "Internal C++ object already deleted" from the old views
    win.state.set_window(Window(40, 400))
    assert win.compare_state.window == Window(40, 400)
    assert len(win.compare_state.cursor_changed._callbacks) == 2  # the link and the one live view
    win.close_comparison()
    win.close()


def test_the_comparisons_measurements_are_kept_across_plane_changes_and_sessions(qtbot, tmp_path, monkeypatch,
                                                                                studies):
    win = open_both(qtbot, tmp_path, monkeypatch, studies)
    prior = win.compare_view
    prior.set_tool("ruler")
    prior._new_measurement(QtCore.QPointF(20.0, 30.0), QtCore.QPointF(80.0, 110.0))
    prior.measurements_changed.emit()  # as the end of a drag does
    text = prior.measurement_text(prior.measurements[0])
    win.set_main_view(Orientation.CORONAL)
    assert win.compare_view.measurements == []  # the ruler was drawn on the axial plane
    win.set_main_view(Orientation.AXIAL)
    assert [win.compare_view.measurement_text(m) for m in win.compare_view.measurements] == [text]
    win.close()
    again = open_both(qtbot, tmp_path, monkeypatch, studies)  # a new session
    assert [again.compare_view.measurement_text(m) for m in again.compare_view.measurements] == [text]
    with qtbot.waitSignal(again.volume_loaded, timeout=30000):
        again.open_path(str(studies[1]))  # the prior as the main series: its ruler is there too
    assert [again.views[Orientation.AXIAL].measurement_text(m) for m in again.views[Orientation.AXIAL].measurements] \
        == [text]
    again.close()

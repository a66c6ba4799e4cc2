"""Oblique MPR in the main window: the Rotate tool turns the crosshair axes, the other views show turned planes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PySide6 import QtCore

from tests.app.gui.drag import Drag
from viewer.core.volume import Volume
from viewer.core.windowing import GreyLUT
from viewer.state.layers import LabelLayer
from viewer.state.slicing import Orientation, extract

ANGLE = 30.0  # degrees, clockwise on the axial screen


def vessel_volume() -> tuple[Volume, np.ndarray]:
    """Air-like lung with a 2-voxel vessel running at ANGLE through the centre of axial slices 6..9."""
    n = 64
    a = np.full((16, n, n), -800, np.int16)
    rad = math.radians(ANGLE)
    for s in np.linspace(-28, 28, 400):
        j, i = int(round(31.5 + s * math.sin(rad))), int(round(31.5 + s * math.cos(rad)))
        a[6:10, j - 1: j + 1, i - 1: i + 1] = 300
    return Volume(a, spacing=(1.0, 1.0, 1.0)), (a > 0).astype(np.uint8)


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    vol, mask = vessel_volume()
    win.state.set_volume(vol)
    win.state.set_cursor((8, 31.5, 31.5))
    win.state.layers.add(LabelLayer("vessel", mask, opacity=1.0), win.state.shape)
    win.render_all()
    yield win
    win.close()


def drag_about_crosshair(view, degrees: float, button=QtCore.Qt.MouseButton.LeftButton) -> None:
    """A drag in `view` sweeping `degrees` clockwise about the crosshair."""
    y, x = view.state.plane_grid(view.orientation).screen_of(view.state.point)
    r = 20.0
    last = QtCore.QPointF(x + r, y)
    now = QtCore.QPointF(x + r * math.cos(math.radians(degrees)), y + r * math.sin(math.radians(degrees)))
    view.viewbox.mouseDragEvent(Drag(view.viewbox.mapViewToScene(last), view.viewbox.mapViewToScene(now), button))


def test_rotate_tool_turns_the_other_planes_onto_an_oblique_vessel(qtbot, window):
    win = window
    axial, coronal = win.views[Orientation.AXIAL], win.views[Orientation.CORONAL]
    assert win.tool_actions["rotate"].shortcut().toString() == "O"
    win.tool_actions["rotate"].trigger()
    row = 16 - 1 - 8  # the crosshair's row in the coronal view (superior at the top)
    coronal.refresh_now()
    assert (coronal.image_item.image[row] > 200).sum() <= 6  # the plain coronal plane cuts the vessel across
    drag_about_crosshair(axial, ANGLE)
    assert coronal.oblique and win.views[Orientation.SAGITTAL].oblique and not axial.oblique
    win.render_all()
    # the axial view's coronal line (horizontal) and sagittal line (vertical) turned with the mouse
    assert axial.hline.angle == pytest.approx(ANGLE) and axial.vline.angle % 180 == pytest.approx(90 + ANGLE)
    # the turned coronal plane holds the vessel along its length, drawn trilinear in the lung window
    expected = GreyLUT(win.state.window)(win.state.plane_grid(Orientation.CORONAL).sample(win.state.volume.array))
    np.testing.assert_array_equal(coronal.image_item.image, expected)
    assert (coronal.image_item.image[row] > 200).sum() >= 40
    labels = next(iter(coronal._overlay_items.values())).image
    assert (labels[row, :, 3] > 0).sum() >= 40  # and the vessel's label with it
    assert "coronal oblique" in coronal.corners["bottom_left"].text()
    # its edges name the turned directions: right and anterior on the left, left and posterior on the right
    assert (coronal._edge_labels["left"].text(), coronal._edge_labels["right"].text()) == ("RA", "LP")
    assert " mm" not in coronal.corners["bottom_left"].text().splitlines()[0]

    # clicking in the turned plane moves the crosshair on it, not the plane
    before = coronal.image_item.image.copy()
    coronal.set_cursor_at(QtCore.QPointF(20.0, row + 0.5))
    win.render_all()
    np.testing.assert_array_equal(coronal.image_item.image, before)
    # paging the turned view moves the crosshair along its normal
    normal = win.state.plane_grid(Orientation.CORONAL).normal
    start = win.state.point.copy()
    qtbot.keyClick(coronal, QtCore.Qt.Key.Key_Up)
    moved = win.state.point - start
    assert np.linalg.norm(moved) == pytest.approx(1.0) and abs(abs(moved @ normal) - 1.0) < 1e-9

    win.reset_oblique()  # Shift+O
    win.render_all()
    assert not win.state.oblique and axial.hline.angle == 0 and axial.vline.angle == 90
    assert (coronal._edge_labels["left"].text(), coronal._edge_labels["right"].text()) == ("R", "L")
    k = win.state.slice_index(Orientation.CORONAL)
    expected = GreyLUT(win.state.window)(extract(win.state.volume.array, Orientation.CORONAL, k))
    np.testing.assert_array_equal(coronal.image_item.image, expected)


def test_measuring_and_editing_on_a_turned_plane_are_refused_with_a_reason(qtbot, window):
    win = window
    axial, coronal = win.views[Orientation.AXIAL], win.views[Orientation.CORONAL]
    win.set_tool("rotate")
    drag_about_crosshair(axial, 20.0)
    win.set_tool("ruler")
    with qtbot.waitSignal(coronal.notice, timeout=1000) as notice:
        coronal.viewbox.mouseDragEvent(Drag(QtCore.QPointF(100, 100), QtCore.QPointF(150, 120)))
    assert "reset the oblique planes" in notice.args[0] and coronal.measurements == []
    win.set_tool("brush")
    layer = win.annotation.layer
    painted = layer.data.copy()
    with qtbot.waitSignal(coronal.notice, timeout=1000):
        qtbot.mousePress(coronal.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton,
                         pos=coronal.view_pixel_of_voxel(win.state.cursor))
    qtbot.mouseRelease(coronal.graphics.viewport(), QtCore.Qt.MouseButton.LeftButton)
    np.testing.assert_array_equal(layer.data, painted)
    # the orthogonal axial view still measures
    win.set_tool("ruler")
    axial.viewbox.mouseDragEvent(Drag(axial.viewbox.mapViewToScene(QtCore.QPointF(10, 10)),
                                      axial.viewbox.mapViewToScene(QtCore.QPointF(40, 50))))
    assert len(axial.measurements) == 1 and axial.measurement_text(axial.measurements[0]) == "50.0 mm"


def test_a_new_series_shows_orthogonal_planes_and_their_letters(qtbot, window):
    win = window
    coronal = win.views[Orientation.CORONAL]
    drag = win.views[Orientation.AXIAL]
    win.set_tool("rotate")
    drag_about_crosshair(drag, 30.0)
    win.render_all()
    assert coronal._edge_labels["left"].text() == "RA"
    vol, _ = vessel_volume()
    win.state.set_volume(vol)
    win.render_all()
    assert not win.state.oblique and coronal._edge_labels["left"].text() == "R"

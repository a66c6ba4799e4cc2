"""3D rendering: the offscreen VTK renderer and its Qt view, checked on real pixels (headless)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from vtkmodules.util import numpy_support

from viewer.core.volume import Volume
from viewer.render import volume_render
from viewer.render.volume_render import BACKGROUND, RENDER_PRESETS, VolumeRenderer, detect_render_backend
from viewer.synthetic.phantom import LABELS, PhantomConfig, make_phantom

SIZE = 160
BG = np.round(np.asarray(BACKGROUND) * 255).astype(int)
RED, GREEN = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(shape=(48, 96, 96), spacing=(5.0, 3.6, 3.6), n_nodules=1))


@pytest.fixture
def renderer(phantom):
    r = VolumeRenderer(SIZE, SIZE, backend="cpu")
    r.set_volume(phantom.volume)
    yield r
    r.close()


def foreground(frame: np.ndarray) -> np.ndarray:
    """Pixels that differ clearly from the background."""
    return np.abs(frame.astype(int) - BG).max(axis=2) > 12


def strongly(frame: np.ndarray, channel: int) -> np.ndarray:
    """Pixels dominated by one colour channel."""
    f = frame.astype(int)
    others = np.delete(f, channel, axis=2).max(axis=2)
    return (f[..., channel] > 120) & (others < 0.35 * f[..., channel])


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


# -- backend ------------------------------------------------------------------------------------


def test_backend_env_override(monkeypatch):
    monkeypatch.setenv(volume_render.BACKEND_ENV, "gpu")
    assert detect_render_backend() == "gpu"
    monkeypatch.setenv(volume_render.BACKEND_ENV, "CPU")
    assert detect_render_backend() == "cpu"
    monkeypatch.setenv(volume_render.BACKEND_ENV, "nonsense")
    assert detect_render_backend() in ("cpu", "gpu")


def test_software_opengl_is_cpu(monkeypatch):
    monkeypatch.delenv(volume_render.BACKEND_ENV, raising=False)
    name = volume_render.opengl_renderer_string()
    if "llvmpipe" in name.lower() or not name:
        assert detect_render_backend() == "cpu"
    monkeypatch.setattr(volume_render, "opengl_renderer_string", lambda: "NVIDIA H100 PCIe/PCIe/SSE2")
    assert detect_render_backend() == "gpu"
    monkeypatch.setattr(volume_render, "opengl_renderer_string", lambda: "llvmpipe (LLVM 15.0.6, 256 bits)")
    assert detect_render_backend() == "cpu"


def test_no_opengl_raises_instead_of_crashing(monkeypatch):
    monkeypatch.setattr(volume_render, "opengl_renderer_string", lambda: "")
    with pytest.raises(RuntimeError, match="OpenGL"):
        VolumeRenderer(32, 32, backend="cpu")


def test_unknown_backend_rejected():
    with pytest.raises(ValueError):
        VolumeRenderer(32, 32, backend="quantum")


# -- volume rendering ---------------------------------------------------------------------------


def test_render_is_rgb_and_not_empty(renderer):
    frame = renderer.render()
    assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
    assert np.abs(frame[0, 0].astype(int) - BG).max() <= 2  # corner is background
    assert foreground(frame).mean() > 0.15


def test_volume_buffer_is_shared_not_copied(renderer, phantom):
    scalars = numpy_support.vtk_to_numpy(renderer.image_data.GetPointData().GetScalars())
    assert np.shares_memory(scalars, phantom.volume.array)


def test_every_preset_renders_and_they_differ(renderer):
    frames = {}
    for name in RENDER_PRESETS:
        renderer.set_preset(name)
        frames[name] = renderer.render()
        assert foreground(frames[name]).mean() > 0.05, name
    assert diff(frames["lung"], frames["bone"]) > 5
    assert diff(frames["soft tissue"], frames["bone"]) > 5
    with pytest.raises(KeyError):
        renderer.set_preset("brain")


def test_opacity_scale_and_threshold(renderer):
    full = renderer.render()
    renderer.set_opacity_scale(0.0)
    assert foreground(renderer.render()).mean() < 0.001
    renderer.set_opacity_scale(1.0)
    renderer.set_threshold(3000.0)
    assert foreground(renderer.render()).mean() < 0.001
    renderer.set_threshold(None)
    assert diff(renderer.render(), full) < 0.5
    renderer.set_volume_visible(False)
    assert foreground(renderer.render()).mean() < 0.001


def test_rotation_changes_image_and_reset_restores_it(renderer):
    front = renderer.render()
    renderer.rotate(90.0, 0.0)
    side = renderer.render()
    assert diff(front, side) > 3
    renderer.zoom(1.5)
    renderer.pan(20, -10)
    assert diff(renderer.render(), side) > 3
    renderer.reset_camera()
    assert diff(renderer.render(), front) < 0.5


def test_interactive_mode_renders_and_is_not_slower(renderer):
    def best_time() -> tuple[float, np.ndarray]:
        times = []
        for _ in range(3):
            renderer.rotate(5.0, 0.0)
            t0 = time.perf_counter()
            frame = renderer.render()
            times.append(time.perf_counter() - t0)
        return min(times), frame

    renderer.render()
    full_t, full = best_time()
    renderer.set_interactive(True)
    fast_t, fast = best_time()
    assert renderer.interactive
    assert foreground(fast).mean() > 0.1
    assert fast_t < 1.5 * full_t + 0.01
    renderer.set_interactive(False)
    assert not renderer.interactive


def test_world_placement_follows_the_affine(phantom):
    """The same anatomy stored with permuted/flipped axes renders identically (world = LPS via the affine)."""
    v, lab = phantom.volume, phantom.label_map()
    d, (sz, sy, sx) = v.direction, v.spacing
    corner = v.index_to_lps((0, 0, v.shape[2] - 1))  # voxel [0, 0, 0] once x is reversed
    layouts = [
        (lambda a: a, v.spacing, v.origin, d),
        # array axes (z, -x, y): a rotated grid
        (lambda a: a.transpose(0, 2, 1)[:, ::-1, :], (sz, sx, sy), corner, np.stack([d[:, 0], -d[:, 2], d[:, 1]], 1)),
        # array axes (z, y, -x): a mirrored grid
        (lambda a: a[:, :, ::-1], v.spacing, corner, np.stack([d[:, 0], d[:, 1], -d[:, 2]], 1)),
    ]
    frames = []
    for reorder, spacing, origin, direction in layouts:
        vol = Volume(np.ascontiguousarray(reorder(v.array)), spacing, origin, direction)
        r = VolumeRenderer(SIZE, SIZE, backend="cpu")
        r.set_volume(vol)
        volume_frame = r.render()
        r.set_volume_visible(False)
        r.set_labels(np.ascontiguousarray(reorder(lab)), {LABELS["lung_right"]: RED})
        frames.append((volume_frame, r.render()))
        r.close()
    for volume_frame, surface_frame in frames[1:]:
        assert diff(volume_frame, frames[0][0]) < 1.0
        assert diff(surface_frame, frames[0][1]) < 1.5


# -- label surfaces -----------------------------------------------------------------------------


def test_label_surfaces_have_their_colour_and_anatomical_side(renderer, phantom):
    renderer.set_volume_visible(False)
    renderer.set_labels(phantom.label_map(), {LABELS["lung_right"]: RED, LABELS["lung_left"]: GREEN})
    frame = renderer.render()
    red, green = strongly(frame, 0), strongly(frame, 1)
    assert red.mean() > 0.03 and green.mean() > 0.03
    # anterior view: the patient's right lung is on the image left, the head at the top
    cols = np.arange(SIZE)[None, :]
    assert (cols * red).sum() / red.sum() < SIZE / 2 < (cols * green).sum() / green.sum()


def test_label_surfaces_are_cached_when_toggled(renderer, phantom, monkeypatch):
    calls = []
    real = volume_render.label_surface
    monkeypatch.setattr(volume_render, "label_surface", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    labels = phantom.label_map()
    colors = {LABELS["lung_left"]: RED, LABELS["ggo"]: GREEN, LABELS["other_lesion"]: (0.0, 0.0, 1.0)}
    renderer.set_volume_visible(False)
    renderer.set_labels(labels, colors, visible={LABELS["lung_left"]})
    with_lung = renderer.render()
    renderer.set_labels(labels, colors, visible=set())
    assert foreground(renderer.render()).mean() < 0.001
    renderer.set_labels(labels, colors, visible={LABELS["lung_left"]})
    assert diff(renderer.render(), with_lung) < 0.5
    assert calls == [LABELS["lung_left"]]
    renderer.set_surfaces_visible(False)
    assert foreground(renderer.render()).mean() < 0.001
    renderer.set_surfaces_visible(True)
    renderer.set_labels(labels, colors)  # all three: only the two new ones are computed
    assert sorted(calls) == sorted(colors)
    assert renderer.surface_labels() == set(colors)
    with pytest.raises(ValueError):
        renderer.set_labels(labels[:-1], colors)
    renderer.set_labels(None, colors)
    assert renderer.surface_labels() == set()


def test_missing_label_value_is_ignored(renderer, phantom):
    renderer.set_labels(phantom.label_map(), {99: RED})
    assert renderer.surface_labels() == set()
    renderer.render()


# -- cursor -------------------------------------------------------------------------------------


def test_cursor_marker_moves_with_the_index(renderer, phantom):
    renderer.set_volume_visible(False)
    nz, ny, nx = phantom.volume.shape
    renderer.set_cursor((nz - 4, ny / 2, nx / 2))
    high = renderer.render()
    renderer.set_cursor((4, ny / 2, nx / 2))
    low = renderer.render()
    rows = np.arange(SIZE)[:, None]
    high_fg, low_fg = foreground(high), foreground(low)
    assert high_fg.sum() > 30 and low_fg.sum() > 30
    assert (rows * high_fg).sum() / high_fg.sum() < (rows * low_fg).sum() / low_fg.sum()  # superior is up
    renderer.set_cursor(None)
    assert foreground(renderer.render()).mean() < 0.001


# -- odd volumes --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 40, 40), (1, 1, 1), (2, 1, 30), (0, 8, 8)])
def test_degenerate_volumes_do_not_crash(shape):
    array = np.full(shape, 500, np.int16)
    r = VolumeRenderer(64, 64, backend="cpu")
    r.set_preset("bone")
    r.set_volume(Volume(array, (2.0, 1.0, 1.0)))
    frame = r.render()
    assert frame.shape == (64, 64, 3)
    if shape == (1, 40, 40):  # a one-slice slab is still drawn (edge-on from the front)
        r.rotate(0.0, 60.0)
        assert foreground(r.render()).mean() > 0.1
    r.set_labels(np.ones(shape, np.uint8), {1: RED})
    r.set_cursor((0, 0, 0))
    r.rotate(30, 20)
    r.render()
    r.set_volume(None)
    r.render()
    r.close()


def test_other_dtypes_render():
    array = np.zeros((20, 30, 30), np.float64)
    array[5:15, 10:20, 10:20] = 800.0
    r = VolumeRenderer(64, 64, backend="cpu")
    r.set_preset("bone")
    r.set_volume(Volume(array.astype(np.float32)))
    assert foreground(r.render()).mean() > 0.02
    r.set_volume(Volume(array > 0))
    r.render()
    r.close()


# -- Qt view ------------------------------------------------------------------------------------


def _grab_rgb(widget) -> np.ndarray:
    from PySide6 import QtGui

    image = widget.grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    w, h = image.width(), image.height()
    buf = np.frombuffer(image.constBits(), np.uint8, count=image.bytesPerLine() * h)
    return buf.reshape(h, image.bytesPerLine())[:, : 3 * w].reshape(h, w, 3).copy()


@pytest.fixture
def view(qtbot, phantom):
    from viewer.gui.volume_view import VolumeView

    widget = VolumeView(backend="cpu")
    qtbot.addWidget(widget)
    widget.resize(260, 220)
    widget.show()
    widget.set_volume(phantom.volume)
    qtbot.waitUntil(lambda: widget.last_frame().size > 0, timeout=5000)
    yield widget
    widget.shutdown()


def test_view_shows_a_frame(view):
    frame = view.last_frame()
    assert frame.ndim == 3 and foreground(frame).mean() > 0.1
    canvas = view._canvas
    assert frame.shape[:2] == (canvas.height(), canvas.width())
    assert foreground(_grab_rgb(canvas)).mean() > 0.1


def test_view_controls_rerender(view, qtbot, phantom):
    first = view.last_frame()
    view.preset_box.setCurrentText("bone")
    qtbot.waitUntil(lambda: view.renderer.preset == "bone" and diff(view.last_frame(), first) > 3, timeout=5000)
    view.set_preset("lung")
    view.volume_check.setChecked(False)
    view.set_labels(phantom.label_map(), {LABELS["lung_right"]: RED})
    qtbot.waitUntil(lambda: strongly(view.last_frame(), 0).mean() > 0.02, timeout=5000)
    view.set_surfaces_visible(False)
    assert not view.surfaces_check.isChecked()
    qtbot.waitUntil(lambda: foreground(view.last_frame()).mean() < 0.001, timeout=5000)
    view.set_volume_visible(True)
    view.set_opacity_scale(0.0)
    assert view.volume_check.isChecked() and view.opacity_slider.value() == 0
    qtbot.waitUntil(lambda: foreground(view.last_frame()).mean() < 0.001, timeout=5000)
    view.opacity_slider.setValue(100)
    qtbot.waitUntil(lambda: foreground(view.last_frame()).mean() > 0.1, timeout=5000)


def test_view_builds_surfaces_in_a_worker_and_keeps_old_ones_until_the_rebuild(view, qtbot, phantom, monkeypatch):
    import threading

    threads = []
    real = volume_render.label_surface

    def spy(*a, **k):
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*a, **k)

    monkeypatch.setattr(volume_render, "label_surface", spy)
    view.volume_check.setChecked(False)
    labels = phantom.label_map()
    view.set_labels(labels, {LABELS["lung_right"]: RED})
    assert view.surfaces_pending()  # set_labels returned before the surface was built
    assert view.wait_for_surfaces(30.0)
    assert threads == [False]  # built off the GUI thread
    qtbot.waitUntil(lambda: strongly(view.last_frame(), 0).mean() > 0.02, timeout=5000)
    before = strongly(view.last_frame(), 0).mean()

    labels[labels == LABELS["lung_right"]] = 0  # edited in place: the right lung is gone
    view.labels_edited()
    view.set_labels(labels, {LABELS["lung_right"]: RED})
    view.render_now()
    assert strongly(view.last_frame(), 0).mean() == pytest.approx(before, abs=0.01)  # old surface kept meanwhile
    assert view.wait_for_surfaces(30.0)
    qtbot.waitUntil(lambda: strongly(view.last_frame(), 0).mean() < 0.001, timeout=5000)
    assert view.renderer.surface_labels() == set()


def test_view_drops_a_surface_result_for_labels_it_no_longer_shows(view, qtbot, phantom):
    view.volume_check.setChecked(False)
    first, second = phantom.label_map(), phantom.label_map()
    second[second == LABELS["lung_right"]] = 0
    view.set_labels(first, {LABELS["lung_right"]: RED})
    view.set_labels(second, {LABELS["lung_right"]: RED})  # before the first job is done
    assert view.wait_for_surfaces(30.0)
    qtbot.wait(100)  # the first job's result, if late, arrives and must be ignored
    assert view.renderer.labels is second and view.renderer.surface_labels() == set()
    view.render_now()
    assert strongly(view.last_frame(), 0).mean() < 0.001


def test_view_runs_one_surface_job_at_a_time_and_builds_what_is_missing_after_it(view, qtbot, phantom, monkeypatch):
    import threading

    release, running, most = threading.Event(), [], []
    real = volume_render.compute_surfaces

    def slow(*a, **k):
        running.append(1)
        most.append(len(running))
        release.wait(10)
        out = real(*a, **k)
        running.pop()
        return out

    monkeypatch.setattr(volume_render, "compute_surfaces", slow)
    monkeypatch.setattr("viewer.gui.volume_view.compute_surfaces", slow)
    view.volume_check.setChecked(False)
    labels = phantom.label_map()
    colors = {LABELS["lung_right"]: RED, LABELS["lung_left"]: GREEN}
    view.set_labels(labels, colors, visible={LABELS["lung_right"]})
    for _ in range(3):  # edits while the job runs: no second thread
        view.labels_edited()
        view.set_labels(labels, colors)
    assert most == [1]  # one job started, the edits queued behind it
    release.set()
    assert view.wait_for_surfaces(30.0)
    assert view.renderer.surface_labels() == set(colors) and max(most) == 1


def test_view_mouse_drag_rotates_then_renders_full_quality(view, qtbot):
    from PySide6 import QtCore

    canvas = view._canvas
    before = view.last_frame()
    left = QtCore.Qt.MouseButton.LeftButton
    qtbot.mousePress(canvas, left, pos=QtCore.QPoint(100, 100))
    assert view.renderer.interactive
    for x in range(110, 200, 15):
        qtbot.mouseMove(canvas, QtCore.QPoint(x, 100))
    qtbot.waitUntil(lambda: diff(view.last_frame(), before) > 3, timeout=5000)
    qtbot.mouseRelease(canvas, left, pos=QtCore.QPoint(190, 100))
    assert not view.renderer.interactive
    after_release = view.last_frame()
    qtbot.waitUntil(lambda: view.last_frame() is not after_release, timeout=5000)
    view.reset_camera()
    qtbot.waitUntil(lambda: diff(view.last_frame(), before) < 0.5, timeout=5000)


def test_view_wheel_zooms(view, qtbot):
    from PySide6 import QtCore, QtGui

    canvas = view._canvas
    before = foreground(view.last_frame()).mean()
    pos = QtCore.QPointF(100, 100)
    event = QtGui.QWheelEvent(pos, canvas.mapToGlobal(pos), QtCore.QPoint(), QtCore.QPoint(0, 360),
                              QtCore.Qt.MouseButton.NoButton, QtCore.Qt.KeyboardModifier.NoModifier,
                              QtCore.Qt.ScrollPhase.NoScrollPhase, False)
    QtCore.QCoreApplication.sendEvent(canvas, event)
    qtbot.waitUntil(lambda: not view.renderer.interactive, timeout=5000)
    qtbot.waitUntil(lambda: foreground(view.last_frame()).mean() > before + 0.05, timeout=5000)


def test_view_shows_a_message_when_opengl_is_missing(qtbot, monkeypatch):
    from viewer.gui import volume_view

    def broken(*_args, **_kwargs):
        raise RuntimeError("no OpenGL context")

    monkeypatch.setattr(volume_view, "VolumeRenderer", broken)
    widget = volume_view.VolumeView()
    qtbot.addWidget(widget)
    widget.resize(200, 150)
    widget.show()
    assert widget.error and "no OpenGL context" in widget.error
    widget.set_volume(None)
    widget.reset_camera()
    assert widget.last_frame().size == 0
    assert foreground(_grab_rgb(widget._canvas)).mean() > 0.001  # the message text is drawn


def test_view_survives_a_failing_render(view, qtbot, monkeypatch):
    def broken():
        raise RuntimeError("context lost")

    monkeypatch.setattr(view.renderer, "render", broken)
    view.rotate(10, 0)
    qtbot.waitUntil(lambda: view.error is not None, timeout=5000)
    assert "context lost" in view.error

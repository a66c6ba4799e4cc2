"""The 3D view: an offscreen `VolumeRenderer` shown as an image, with mouse camera control.

VTK renders into its own offscreen window and the frame is painted as a QImage,
which works under every Qt platform (QVTKRenderWindowInteractor crashes under
the offscreen platform). Renders are coalesced: all input between two turns of
the event loop costs one frame. Dragging renders at interactive quality and the
release renders at full quality. Label surfaces are built in a worker thread (from a
snapshot of the labels) and appear when ready, so edits and loads never wait for them.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from viewer.core.volume import Volume
from viewer.render.volume_render import BACKGROUND, RENDER_PRESETS, VolumeRenderer, compute_surfaces

log = logging.getLogger(__name__)

DEGREES_PER_PIXEL = 0.4
ZOOM_PER_PIXEL = 1.01
WHEEL_ZOOM = 1.15  # per wheel notch
SETTLE_MS = 250  # full-quality render this long after the last wheel step


def _to_qimage(rgb: np.ndarray) -> QtGui.QImage:
    h, w, _ = rgb.shape
    return QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class _Canvas(QtWidgets.QWidget):
    """Paints the last frame (or an error message) and turns mouse input into camera moves."""

    def __init__(self, view: VolumeView) -> None:
        super().__init__(view)
        self._view = view
        self._image: QtGui.QImage | None = None
        self._message = ""
        self._drag_button: QtCore.Qt.MouseButton | None = None
        self._drag_zoom = False
        self._last = QtCore.QPointF()
        self.setMinimumSize(64, 64)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)

    def show_frame(self, image: QtGui.QImage) -> None:
        self._image = image
        self._message = ""
        self.update()

    def show_message(self, text: str) -> None:
        self._message = text
        self._image = None
        self.update()

    def paintEvent(self, _event: QtGui.QPaintEvent) -> None:
        painter = QtGui.QPainter(self)
        painter.fillRect(self.rect(), QtGui.QColor.fromRgbF(*BACKGROUND))
        if self._image is not None:
            size = self._image.deviceIndependentSize().toSize()
            x = (self.width() - size.width()) // 2
            y = (self.height() - size.height()) // 2
            painter.drawImage(QtCore.QPoint(x, y), self._image)
        if self._message:
            painter.setPen(QtGui.QColor(220, 220, 220))
            flags = QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap
            painter.drawText(self.rect().adjusted(16, 16, -16, -16), flags, self._message)
        painter.end()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._view.request_render()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:
        button = event.button()
        if button not in (QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.MouseButton.RightButton,
                          QtCore.Qt.MouseButton.MiddleButton):
            return
        self._drag_button = button
        ctrl = bool(event.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier)
        self._drag_zoom = button == QtCore.Qt.MouseButton.RightButton or (
            button == QtCore.Qt.MouseButton.LeftButton and ctrl)
        self._last = event.position()
        self._view.begin_interaction()
        event.accept()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:
        if self._drag_button is None:
            return
        pos = event.position()
        dx, dy = pos.x() - self._last.x(), pos.y() - self._last.y()
        self._last = pos
        if self._drag_zoom:
            self._view.zoom(ZOOM_PER_PIXEL ** (-dy))
        elif self._drag_button == QtCore.Qt.MouseButton.MiddleButton:
            ratio = self.devicePixelRatioF()
            self._view.pan(dx * ratio, dy * ratio)
        else:
            self._view.rotate(-dx * DEGREES_PER_PIXEL, dy * DEGREES_PER_PIXEL)
        event.accept()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:
        if event.button() == self._drag_button:
            self._drag_button = None
            self._view.end_interaction()
        event.accept()

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self._view.wheel_zoom(WHEEL_ZOOM**steps)
        event.accept()


class VolumeView(QtWidgets.QWidget):
    """3D volume rendering with label surfaces and a cursor; a toolbar for preset, opacity and visibility.

    Args:
        parent: Qt parent.
        backend: "cpu", "gpu" or None (detect; see `detect_render_backend`).
    """

    renderFailed = QtCore.Signal(str)
    surfacesReady = QtCore.Signal(int, object)

    def __init__(self, parent: QtWidgets.QWidget | None = None, backend: str | None = None) -> None:
        super().__init__(parent)
        self._frame = np.zeros((0, 0, 3), np.uint8)
        self._error: str | None = None
        self._coarse_frame_shown = False
        self._labels_stale = False
        self._surface_generation = 0  # bumped whenever pending surfaces stop matching the labels shown
        self._surface_thread: threading.Thread | None = None
        self._label_args: tuple = ()
        self.surfacesReady.connect(self._on_surfaces_ready, QtCore.Qt.ConnectionType.QueuedConnection)
        self._canvas = _Canvas(self)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.render_now)
        self._settle = QtCore.QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.end_interaction)
        self._renderer: VolumeRenderer | None = None
        try:
            self._renderer = VolumeRenderer(256, 256, backend=backend)
        except Exception as exc:  # noqa: BLE001 - no OpenGL must not take the application down
            self._fail(exc)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(self._build_toolbar())
        layout.addWidget(self._canvas, 1)
        if self._error is None:
            self._canvas.show_message("No volume loaded")
        else:
            self._toolbar_enabled(False)

    def _toolbar_enabled(self, enabled: bool) -> None:
        for w in (self.preset_box, self.opacity_slider, self.volume_check, self.surfaces_check, self.reset_button):
            w.setEnabled(enabled)

    # -- toolbar -------------------------------------------------------------------------------

    def _build_toolbar(self) -> QtWidgets.QHBoxLayout:
        bar = QtWidgets.QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 0)
        self.preset_box = QtWidgets.QComboBox()
        self.preset_box.addItems(list(RENDER_PRESETS))
        self.preset_box.setToolTip("Transfer-function preset")
        self.preset_box.currentTextChanged.connect(self.set_preset)
        self.opacity_slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(100)
        self.opacity_slider.setMinimumWidth(70)
        self.opacity_slider.setMaximumWidth(120)
        self.opacity_slider.setToolTip("Volume opacity")
        self.opacity_slider.valueChanged.connect(lambda v: self._apply("set_opacity_scale", v / 100.0))
        self.opacity_slider.sliderPressed.connect(self.begin_interaction)
        self.opacity_slider.sliderReleased.connect(self.end_interaction)
        self.volume_check = QtWidgets.QCheckBox("Volume")
        self.volume_check.setChecked(True)
        self.volume_check.toggled.connect(self.set_volume_visible)
        self.surfaces_check = QtWidgets.QCheckBox("Surfaces")
        self.surfaces_check.setChecked(True)
        self.surfaces_check.toggled.connect(self.set_surfaces_visible)
        self.reset_button = QtWidgets.QToolButton()
        self.reset_button.setText("Reset camera")
        self.reset_button.clicked.connect(self.reset_camera)
        for w in (self.preset_box, QtWidgets.QLabel("Opacity"), self.opacity_slider, self.volume_check,
                  self.surfaces_check, self.reset_button):
            bar.addWidget(w)
        bar.addStretch(1)
        return bar

    # -- state ---------------------------------------------------------------------------------

    @property
    def renderer(self) -> VolumeRenderer | None:
        return self._renderer

    @property
    def error(self) -> str | None:
        """Why 3D rendering is unavailable (None while it works)."""
        return self._error

    def last_frame(self) -> np.ndarray:
        """The last rendered frame, (H, W, 3) uint8 RGB; (0, 0, 3) before the first."""
        return self._frame

    def _fail(self, exc: BaseException) -> None:
        self._error = f"3D rendering is unavailable on this system.\n\n{exc}"
        log.warning("3D view disabled: %s", exc)
        self._timer.stop()
        self._canvas.show_message(self._error)
        if hasattr(self, "reset_button"):
            self._toolbar_enabled(False)
        self.renderFailed.emit(self._error)

    def _apply(self, method: str, *args, render: bool = True) -> None:
        """Call a renderer method and schedule a frame; failures other than bad arguments disable the view."""
        if self._renderer is None:
            return
        try:
            getattr(self._renderer, method)(*args)
        except (KeyError, ValueError):
            raise
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        if render:
            self.request_render()

    # -- public API (mirrors VolumeRenderer) ---------------------------------------------------

    def set_volume(self, volume: Volume | None) -> None:
        self._surface_generation += 1  # surfaces on their way belong to the old grid
        self._label_args = ()
        self._apply("set_volume", volume)

    def set_labels(self, labels: np.ndarray | None, colors: dict[int, tuple[float, float, float]],
                   visible: set[int] | None = None, opacity: float | dict[int, float] = 1.0) -> None:
        """Label surfaces (cached per array and value; see `labels_edited` for arrays edited in place).

        Cached surfaces show at once; missing ones are built in a worker thread and appear when ready.
        One job runs at a time: what is still missing when it ends is built next.
        """
        renderer = self._renderer
        if renderer is None:
            return
        if self._labels_stale or labels is None or labels is not renderer.labels:
            self._surface_generation += 1  # a result still on its way belongs to other labels
            if self._labels_stale and labels is not None and labels is renderer.labels:
                renderer.retire_surfaces(labels)  # shown until the rebuilt ones land
        self._labels_stale = False
        try:
            missing = renderer.set_labels(labels, colors, visible, opacity, compute=False)
        except (KeyError, ValueError):
            self._label_args = ()
            raise
        except Exception as exc:  # noqa: BLE001
            self._label_args = ()
            self._fail(exc)
            return
        self._label_args = (labels, colors, visible, opacity)
        self.request_render()
        self._start_surfaces(missing)

    def _job_running(self) -> bool:
        return self._surface_thread is not None and self._surface_thread.is_alive()

    def _start_surfaces(self, values: list[int]) -> None:
        if not values or self._renderer is None or self._job_running():
            return  # a running job's end starts whatever is still missing then
        generation = self._surface_generation
        job = self._renderer.surface_job(values)

        def work() -> None:
            try:
                polys = compute_surfaces(*job)
            except Exception as exc:  # noqa: BLE001 - reported on the GUI thread
                polys = exc
            try:
                self.surfacesReady.emit(generation, polys)
            except RuntimeError:  # the view was deleted meanwhile: nobody waits for these surfaces
                pass

        self._surface_thread = threading.Thread(target=work, name="lunglens-surfaces", daemon=True)
        self._surface_thread.start()

    def _on_surfaces_ready(self, generation: int, polys) -> None:
        thread, self._surface_thread = self._surface_thread, None
        if thread is not None:
            thread.join()  # it has emitted: only its return is left
        renderer = self._renderer
        if renderer is None or not self._label_args:
            return
        if generation == self._surface_generation and isinstance(polys, Exception):
            log.warning("label surfaces failed: %s", polys)
            self._label_args = ()  # nothing more is pending; the next set_labels tries again
            return
        labels, colors, visible, opacity = self._label_args
        try:
            if generation == self._surface_generation:
                renderer.add_surfaces(polys)
            missing = renderer.set_labels(labels, colors, visible, opacity, compute=False)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        self.request_render()
        self._start_surfaces(missing)  # labels changed or values shown while the job ran

    def surfaces_pending(self) -> bool:
        """Whether a surface job is running or its result is not yet installed."""
        if self._renderer is None or not self._label_args or self._label_args[0] is None:
            return False
        labels, colors, visible, _ = self._label_args
        shown = set(colors) if visible is None else set(visible) & set(colors)
        return bool(shown - set(self._renderer.cached_surface_values()))

    def _missing_now(self) -> list[int]:
        if self._renderer is None or not self._label_args:
            return []
        return self._renderer.set_labels(*self._label_args, compute=False)

    def wait_for_surfaces(self, timeout_s: float = 60.0) -> bool:
        """Block until the pending surfaces are shown (screenshots, tests); False on timeout."""
        deadline = QtCore.QDeadlineTimer(int(timeout_s * 1000))
        while self.surfaces_pending() and not deadline.hasExpired():
            thread = self._surface_thread
            if thread is not None:
                thread.join(0.05)
            QtCore.QCoreApplication.processEvents()
            if self._surface_thread is None and self.surfaces_pending():
                self._start_surfaces(self._missing_now())  # e.g. a job that ended for older labels
        return not self.surfaces_pending()

    def labels_edited(self) -> None:
        """The label array was edited in place: the next `set_labels` rebuilds the surfaces."""
        self._labels_stale = True

    @property
    def labels_stale(self) -> bool:
        return self._labels_stale

    def set_cursor(self, index_zyx: tuple[float, float, float] | None) -> None:
        self._apply("set_cursor", index_zyx)

    def set_preset(self, name: str) -> None:
        if name not in RENDER_PRESETS:
            raise KeyError(f"unknown render preset {name!r}; choose from {sorted(RENDER_PRESETS)}")
        if self.preset_box.currentText() != name:
            self.preset_box.setCurrentText(name)  # re-enters through currentTextChanged
            return
        self._apply("set_preset", name)

    def set_opacity_scale(self, scale: float) -> None:
        """Scale the preset's opacity (0..1); the slider follows."""
        value = round(float(np.clip(scale, 0.0, 1.0)) * 100)
        if self.opacity_slider.value() != value:
            self.opacity_slider.setValue(value)  # re-enters through valueChanged

    def set_threshold(self, hu: float | None) -> None:
        self._apply("set_threshold", hu)

    def set_volume_visible(self, visible: bool) -> None:
        if self.volume_check.isChecked() != bool(visible):
            self.volume_check.setChecked(bool(visible))  # re-enters through toggled
            return
        self._apply("set_volume_visible", bool(visible))

    def set_surfaces_visible(self, visible: bool) -> None:
        if self.surfaces_check.isChecked() != bool(visible):
            self.surfaces_check.setChecked(bool(visible))
            return
        self._apply("set_surfaces_visible", bool(visible))

    def reset_camera(self) -> None:
        self._apply("reset_camera")

    def rotate(self, d_azimuth: float, d_elevation: float) -> None:
        self._apply("rotate", d_azimuth, d_elevation)

    def zoom(self, factor: float) -> None:
        self._apply("zoom", factor)

    def pan(self, dx_px: float, dy_px: float) -> None:
        self._apply("pan", dx_px, dy_px)

    # -- interaction quality ---------------------------------------------------------------------

    def begin_interaction(self) -> None:
        """Fast, coarser frames until `end_interaction` (which renders at full quality)."""
        self._settle.stop()
        self._apply("set_interactive", True, render=False)

    def end_interaction(self) -> None:
        self._settle.stop()
        # a click without a drag showed no coarse frame, so there is nothing to refine
        self._apply("set_interactive", False, render=self._coarse_frame_shown)

    def wheel_zoom(self, factor: float) -> None:
        self.begin_interaction()
        self.zoom(factor)
        self._settle.start()

    # -- rendering -----------------------------------------------------------------------------

    def request_render(self) -> None:
        """Schedule one frame for the next turn of the event loop (coalesces many requests)."""
        if self._renderer is not None and not self._timer.isActive():
            self._timer.start()

    def render_now(self) -> None:
        """Render at the canvas size and show the frame."""
        renderer = self._renderer
        if renderer is None:
            return
        if renderer.volume is None:
            self._frame = np.zeros((0, 0, 3), np.uint8)
            self._canvas.show_message("No volume loaded")
            return
        ratio = self._canvas.devicePixelRatioF()
        width = max(1, round(self._canvas.width() * ratio))
        height = max(1, round(self._canvas.height() * ratio))
        try:
            if renderer.size != (width, height):
                renderer.resize(width, height)
            frame = renderer.render()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return
        self._frame = frame
        self._coarse_frame_shown = renderer.interactive
        image = _to_qimage(frame)
        image.setDevicePixelRatio(ratio)
        self._canvas.show_frame(image)

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self._timer.stop()
        self._settle.stop()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Release the OpenGL context (the widget shows nothing afterwards)."""
        self._timer.stop()
        self._settle.stop()
        self._surface_generation += 1
        if self._surface_thread is not None:
            self._surface_thread.join(10.0)  # VTK filters must not run on while the interpreter exits
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

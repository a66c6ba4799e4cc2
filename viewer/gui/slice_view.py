"""One 2D slice view (pyqtgraph): CT, overlays, linked crosshair, measurements.

The widget forwards input to the `ViewerState` and redraws when the state says
something changed; it holds no viewer state of its own beyond zoom and pan.
Redraws are coalesced: many wheel events between two paints cost one redraw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from viewer.core.corner_text import CORNERS, ViewFacts, corner_text
from viewer.core.measure import CrossAxes, angle_deg, distance_mm, ellipse_stats
from viewer.core.windowing import GreyLUT
from viewer.gui.measure_rois import SegmentsROI
from viewer.labels.session import EDIT_TOOLS
from viewer.state.layers import HeatmapLayer, LabelLayer
from viewer.state.oblique import PlaneGrid, edge_letters
from viewer.state.slicing import (
    PROJECTION_NAMES,
    Orientation,
    display_shape,
    display_to_voxel,
    extract,
    extract_slab,
    pixel_spacing,
    slice_count,
    upsample_rows,
    voxel_to_display,
)
from viewer.state.view_state import ViewerState

COMPACT_BELOW_PX = (420, 320)  # views narrower or lower than this show no corner text, only the short info
CROSSHAIR_COLORS = {Orientation.AXIAL: (255, 80, 80), Orientation.CORONAL: (80, 220, 80),
                    Orientation.SAGITTAL: (90, 150, 255)}
MEASURE_TOOLS = ("ruler", "ellipse", "angle", "axes")  # axes: the long and the short axis across it
SEGMENTS = {"angle": ((0, 1), (1, 2)), "axes": ((0, 1), (2, 3))}  # handle pairs drawn; handle 1 carries the label
TOOLS = ("navigate", "rotate", *MEASURE_TOOLS, *EDIT_TOOLS)  # rotate: turn the crosshair axes (oblique MPR)
OBLIQUE_REFUSAL = "measuring and editing work on orthogonal planes: reset the oblique planes first (Shift+O)"
Voxel = tuple[float, float, float]


class EditHandler(Protocol):
    """What a view calls while an editing tool is active; voxels are (k, j, i) of the view's volume."""

    def stroke_begin(self, view: SliceView, voxel: tuple[int, int, int]) -> None: ...

    def stroke_move(self, view: SliceView, voxel: tuple[int, int, int]) -> None: ...

    def stroke_end(self, view: SliceView) -> None: ...

    def lasso(self, view: SliceView, points: list[Voxel]) -> None: ...

    def outline(self, tool: str) -> tuple[float, tuple[int, int, int]] | None:
        """(diameter in mm, RGB) of the brush outline drawn at the mouse, or None for no outline."""


@dataclass
class Measurement:
    """A ruler or ellipse drawn on one slice of one view."""

    kind: str
    slice_index: int
    roi: pg.ROI
    label: pg.TextItem
    name: str = ""  # the user's name for it (Measurements dock)
    cross: CrossAxes | None = None  # long and short axis: the short one kept perpendicular


def series_key(volume) -> str:
    """What identifies a series across openings: its Series Instance UID and grid, else its source path."""
    uid = volume.metadata.series_instance_uid
    return f"{uid}|{volume.shape}" if uid else f"{volume.source}|{volume.shape}"


class _SliceViewBox(pg.ViewBox):
    """ViewBox whose mouse handling is the viewer's, not pyqtgraph's default pan/zoom."""

    def __init__(self, view: SliceView) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._view = view
        self.setMouseEnabled(False, False)

    def wheelEvent(self, ev, axis=None) -> None:
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        if ev.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier:
            self._view.zoom_by(0.85 ** (delta / 120.0), self.mapSceneToView(ev.scenePos()))
        else:
            self._view.state.step(self._view.orientation, 1 if delta > 0 else -1)
        ev.accept()

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == QtCore.Qt.MouseButton.LeftButton and self._view.tool == "navigate":
            self._view.set_cursor_at(self.mapSceneToView(ev.scenePos()))
            ev.accept()
        else:
            ev.ignore()

    def mouseDragEvent(self, ev, axis=None) -> None:
        button = ev.button()
        view = self._view
        if button == QtCore.Qt.MouseButton.LeftButton:
            if view.tool == "navigate":
                view.set_cursor_at(self.mapSceneToView(ev.scenePos()))
            elif view.tool == "rotate":
                view.rotate_drag(self.mapSceneToView(ev.lastScenePos()), self.mapSceneToView(ev.scenePos()))
            elif view.tool in MEASURE_TOOLS:
                if view.oblique:
                    view.notice.emit(OBLIQUE_REFUSAL)
                else:
                    view.draw_measurement(ev)
        elif button == QtCore.Qt.MouseButton.MiddleButton:
            last = self.mapSceneToView(ev.lastScenePos())
            now = self.mapSceneToView(ev.scenePos())
            self.translateBy(x=last.x() - now.x(), y=last.y() - now.y())
        elif button == QtCore.Qt.MouseButton.RightButton:
            d = ev.scenePos() - ev.lastScenePos()
            w = view.state.window
            scale = max(w.width, 10.0) / 200.0
            view.state.set_window(w.adjusted(-d.y() * scale, d.x() * scale))
        ev.accept()


class SliceView(QtWidgets.QWidget):
    """Axial, coronal or sagittal view of the state's volume.

    Signals:
        hovered(object): voxel (k, j, i) under the mouse, or None.
        measured(str): text of the last measurement.
        measurements_changed(): the list of measurements (or one of them) changed.

    With an editing tool (`EDIT_TOOLS`) the left button goes to `editor` (see `EditHandler`) instead of
    moving the crosshair; middle drag still pans, right drag windows, the wheel still pages.
    """

    hovered = QtCore.Signal(object)
    measured = QtCore.Signal(str)
    notice = QtCore.Signal(str)  # a short message for the status bar (e.g. why an action was refused)
    measurements_changed = QtCore.Signal()  # one added, finished, renamed, removed, or the list replaced

    def __init__(self, state: ViewerState, orientation: Orientation, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.orientation = Orientation(orientation)
        self.tool = "navigate"
        self.measurements: list[Measurement] = []
        self.smooth_reformat = True  # thick-slice coronal/sagittal images: linear between slices
        self._constraining = False  # True while a long/short axis cross moves its own handles
        self._shown_centre = np.full(3, np.nan)  # where the turned plane on show is centred (world mm)
        self._air: tuple | None = None  # (volume, its minimum): what an oblique plane shows outside the volume
        self.zooming = False  # True while the user zooms (`zoom_by`): range listeners tell it from a resize
        self._series_key: str | None = None  # the series on show, whose measurements are in `measurements`
        self._kept: dict[str, list] = {}  # measurements of the other series opened, by `series_key`
        self._x_major_cache: tuple | None = None  # (volume, its x-major copy) for sagittal slabs
        self._lut: GreyLUT | None = None
        self._dirty: set[str] = set()
        self._timer = QtCore.QTimer(self, singleShot=True, interval=0)
        self._timer.timeout.connect(self.refresh_now)
        self._overlay_items: dict[int, pg.ImageItem] = {}
        self._dirty_layers: set[int] = set()
        self._drawing: Measurement | None = None
        self.editor: EditHandler | None = None
        self._editing = False
        self._lasso_points: list[Voxel] = []
        self._build()
        self._subscriptions = [
            (state.cursor_changed, self._on_cursor),
            (state.window_changed, lambda _w: self._schedule("image")),
            (state.slab_changed, self._on_slab),
            (state.planes_changed, lambda _n: self._schedule("image", "overlays", "cursor", "measurements", "letters")),
            (state.volume_changed, self._on_volume),
            (state.layers.changed, lambda _l: self._schedule("overlays")),
            (state.layers.layer_changed, lambda _l: self._schedule("overlays")),
        ]
        for event, callback in self._subscriptions:
            event.connect(callback)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        if state.volume is not None:
            self._on_volume(state.volume)

    def detach(self) -> None:
        """Stop following the state (before the view is deleted while its state lives on)."""
        for event, callback in self._subscriptions:
            event.disconnect(callback)
        self._subscriptions = []
        self._timer.stop()

    # -- construction ------------------------------------------------------------------------

    def _build(self) -> None:
        self.graphics = pg.GraphicsView(background="k")
        self.viewbox = _SliceViewBox(self)
        self.viewbox.disableAutoRange()
        self.graphics.setCentralItem(self.viewbox)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.image_item.setAutoDownsample(False)
        self.viewbox.addItem(self.image_item)
        # each line shows where another view's plane cuts this one, in that view's colour
        v_plane, h_plane = {Orientation.AXIAL: (Orientation.SAGITTAL, Orientation.CORONAL),
                            Orientation.CORONAL: (Orientation.SAGITTAL, Orientation.AXIAL),
                            Orientation.SAGITTAL: (Orientation.CORONAL, Orientation.AXIAL)}[self.orientation]
        self.vline = pg.InfiniteLine(angle=90, pen=pg.mkPen((*CROSSHAIR_COLORS[v_plane], 170)), movable=False)
        self.hline = pg.InfiniteLine(angle=0, pen=pg.mkPen((*CROSSHAIR_COLORS[h_plane], 170)), movable=False)
        self._plane_lines = {v_plane: self.vline, h_plane: self.hline}
        for line in (self.vline, self.hline):
            line.setZValue(50)
            self.viewbox.addItem(line, ignoreBounds=True)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)
        self._edge_labels: dict[str, QtWidgets.QLabel] = {}
        for edge, letter in self.orientation.labels.items():
            lab = QtWidgets.QLabel(letter, self.graphics)
            lab.setStyleSheet("color: #ffd24d; font-weight: bold; font-size: 13px; background: transparent;")
            lab.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self._edge_labels[edge] = lab
        self.info = QtWidgets.QLabel(self.graphics)  # plane, slice and window: shown while corner text is off
        self.info.setStyleSheet("color: #e8e8e8; font-size: 11px; background: rgba(0, 0, 0, 110); padding: 1px 3px;")
        self.info.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.corners: dict[str, QtWidgets.QLabel] = {}
        for corner in CORNERS:
            lab = QtWidgets.QLabel(self.graphics)
            lab.setStyleSheet("color: #f0f0f0; font-size: 13px; background: rgba(0, 0, 0, 150); padding: 1px 3px;")
            lab.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            if corner.endswith("right"):
                lab.setAlignment(QtCore.Qt.AlignmentFlag.AlignRight)
            self.corners[corner] = lab
        self.scale_bar = _ScaleBar(self.graphics)
        self.set_corner_text(True)
        self.viewbox.sigRangeChanged.connect(lambda *_: self._place_overlays())
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.outline = QtWidgets.QGraphicsEllipseItem()  # the brush, true size in mm, at the mouse
        self.outline.setZValue(60)
        self.outline.hide()
        self.viewbox.addItem(self.outline, ignoreBounds=True)
        self.lasso_path = QtWidgets.QGraphicsPathItem()
        self.lasso_path.setPen(_cosmetic_pen((255, 255, 255), 1.5))
        self.lasso_path.setZValue(60)
        self.viewbox.addItem(self.lasso_path, ignoreBounds=True)
        self.graphics.viewport().installEventFilter(self)

    # -- state reactions ---------------------------------------------------------------------

    def _on_slab(self, slab: tuple[float, str]) -> None:
        if slab[0] <= 0:
            self._x_major_cache = None  # single slices again: free the sagittal copy
        self._schedule("image")

    def _on_volume(self, volume) -> None:
        self._x_major_cache = None
        # measurements belong to their series: put them aside, and bring back those of the series now shown
        if self._series_key is not None and self.measurements:
            self._kept[self._series_key] = [self._record(m) for m in self.measurements]
        self.clear_measurements()
        self._series_key = series_key(volume)
        restore = self._kept.pop(self._series_key, [])
        rows, cols = display_shape(volume.shape, self.orientation)
        self.pixel_mm = pixel_spacing(volume.spacing, self.orientation)
        # setRect only works once an item has an image of the right shape: set image and rect together
        self._rect = QtCore.QRectF(0, 0, cols * self.pixel_mm[1], rows * self.pixel_mm[0])
        self._schedule("image", "overlays", "cursor", "letters")  # letters: a new volume's planes are orthogonal
        self.refresh_now()
        self._needs_fit = True
        self.reset_view()
        for kind, index, points, name in restore:
            self._restore(kind, index, points, name)
        if restore:
            self._schedule("measurements")

    @property
    def oblique(self) -> bool:
        """Whether this view shows a turned plane (resampled; no measuring or editing)."""
        return self.state.volume is not None and self.state.is_oblique(self.orientation)

    def _on_cursor(self, _cursor) -> None:
        if self.oblique:
            # a move within the turned plane moves only the crosshair; one off it moves the plane
            if not np.allclose(self.state.plane_grid(self.orientation).centre, self._shown_centre):
                self._schedule("image", "overlays")
        elif self.state.slice_index(self.orientation) != getattr(self, "_shown_index", None):
            self._schedule("image", "overlays", "measurements")
        self._schedule("cursor")

    def _schedule(self, *parts: str) -> None:
        self._dirty.update(parts)
        if not self._timer.isActive():
            self._timer.start()

    def refresh_now(self) -> None:
        """Bring everything that is out of date up to date (called lazily by a zero timer)."""
        vol = self.state.volume
        dirty, self._dirty = self._dirty, set()
        if vol is None:
            return
        index = self.state.slice_index(self.orientation)
        grid = self.state.plane_grid(self.orientation) if self.oblique else None
        if "image" in dirty:
            if self._lut is None or self._lut.window != self.state.window:
                self._lut = GreyLUT(self.state.window)
            if grid is not None:
                self._show_oblique(grid)
            else:
                self._show_slice(vol, index)
            self._shown_index = index
            self._update_info()
        layers, self._dirty_layers = self._dirty_layers, set()
        if "overlays" in dirty:
            self._update_overlays(index, grid=grid)
        elif layers:
            self._update_overlays(index, only=layers, grid=grid)
        if "cursor" in dirty:
            self._place_crosshair(vol)
        if "letters" in dirty:
            letters = edge_letters(grid) if grid is not None else self.orientation.labels
            for edge, lab in self._edge_labels.items():
                _set_text(lab, letters[edge])
            self._place_overlays()
        if "measurements" in dirty:
            for m in self.measurements:
                visible = m.slice_index == index and grid is None
                m.roi.setVisible(visible)
                m.label.setVisible(visible)

    def _show_slice(self, vol, index: int) -> None:
        image = (extract_slab(vol.array, self.orientation, index, self.state.slab_mm, vol.spacing,
                                  self.state.projection, self._x_major()) if self.state.slab_mm > 0
                     else extract(vol.array, self.orientation, index))
        grey = self._lut(image)
        if self.smooth_reformat and self.orientation is not Orientation.AXIAL:
            # thick slices: rows of dz mm shown as interpolated rows about one pixel spacing apart
            grey = upsample_rows(grey, int(round(self.pixel_mm[0] / self.pixel_mm[1])))
        self.image_item.setImage(grey, autoLevels=False, levels=(0, 255), rect=self._rect)

    def _show_oblique(self, grid: PlaneGrid) -> None:
        """The turned plane, trilinear, in the orthogonal view's rectangle (no slab: a single plane)."""
        vol = self.state.volume
        if self._air is None or self._air[0] is not vol:  # the fill outside the volume: its minimum, found once
            self._air = (vol, float(vol.array.min()))
        self.image_item.setImage(self._lut(grid.sample(vol.array, fill=self._air[1])), autoLevels=False,
                                 levels=(0, 255), rect=self._rect)
        self._shown_centre = grid.centre

    def _place_crosshair(self, vol) -> None:
        """The lines where the other two planes cut this one, through the crosshair (turned with them)."""
        if not self.state.oblique:
            row, col = voxel_to_display(vol.shape, self.orientation, self.state.cursor)
            if self.vline.angle != 90 or self.hline.angle != 0:  # back from oblique planes (a transform each)
                self.vline.setAngle(90)
                self.hline.setAngle(0)
                self.vline.setVisible(True)
                self.hline.setVisible(True)
            self.vline.setPos((col + 0.5) * self.pixel_mm[1])
            self.hline.setPos((row + 0.5) * self.pixel_mm[0])
            return
        grid = self.state.plane_grid(self.orientation)
        y, x = grid.screen_of(self.state.point)
        for plane, line in self._plane_lines.items():
            angle = grid.line_angle(self.state.plane_grid(plane).normal)
            line.setVisible(angle is not None)
            if angle is not None:
                if line.angle != angle:
                    line.setAngle(angle)
                line.setPos(QtCore.QPointF(x, y))

    def _x_major(self) -> np.ndarray | None:
        """Sagittal slabs: a contiguous (x, z, y) copy of the volume, made on first use (one more volume in
        memory, about 0.3 s for 512 x 512 x 300) and dropped with the volume; None for the other views."""
        vol = self.state.volume
        if self.orientation is not Orientation.SAGITTAL or vol is None:
            return None
        cached = self._x_major_cache
        if cached is None or cached[0] is not vol:
            self._x_major_cache = (vol, np.ascontiguousarray(vol.array.transpose(2, 0, 1)))
        return self._x_major_cache[1]

    def _overlay_rgba(self, layer, index: int, grid: PlaneGrid | None) -> np.ndarray:
        """A layer's RGBA on this view: its slice, or its nearest samples on the turned plane (labels must stay
        whole numbers; heat maps are smooth, and nearest costs a quarter of trilinear)."""
        if grid is None:
            return layer.rgba(self.orientation, index)
        fill = 0 if isinstance(layer, LabelLayer) else layer.vmin
        return layer.colorize(grid.sample(layer.data, order=0, fill=fill))

    def _update_overlays(self, index: int, only: set[int] | None = None, grid: PlaneGrid | None = None) -> None:
        """Re-render the overlay images (all, or the layers whose ids are in `only`)."""
        if only is not None:
            for layer in self.state.layers:
                item = self._overlay_items.get(id(layer))
                if id(layer) in only and item is not None and layer.visible:
                    item.setImage(self._overlay_rgba(layer, index, grid), levels=None, rect=self._rect)
            return
        live = set()
        for z, layer in enumerate(self.state.layers):
            key = id(layer)
            live.add(key)
            item = self._overlay_items.get(key)
            if item is None:
                item = pg.ImageItem(axisOrder="row-major")
                self.viewbox.addItem(item)
                self._overlay_items[key] = item
            item.setZValue(10 + z)
            item.setVisible(layer.visible)
            if layer.visible and isinstance(layer, (LabelLayer, HeatmapLayer)):
                # levels=None: pyqtgraph wraps uint8 RGBA as a QImage without converting it
                item.setImage(self._overlay_rgba(layer, index, grid), levels=None, rect=self._rect)
        for key in list(self._overlay_items):
            if key not in live:
                self.viewbox.removeItem(self._overlay_items.pop(key))

    def refresh_layer(self, layer, box: tuple[int, int, int, int, int, int] | None = None) -> None:
        """Redraw one overlay after its data changed inside `box` (z0, z1, y0, y1, x0, x1), lazily.

        Nothing happens when the box misses the slice on show; the other overlays are not re-rendered.
        """
        if box is not None and not self.oblique:
            a = self.orientation.axis
            if not box[2 * a] <= self.state.slice_index(self.orientation) < box[2 * a + 1]:
                return
        self._dirty_layers.add(id(layer))
        self._schedule()

    def set_smooth_reformat(self, smooth: bool) -> None:
        """Coronal and sagittal images of thick-slice stacks: linear interpolation between slices (True, the
        default) or nearest neighbour (the staircase of the acquired slices)."""
        self.smooth_reformat = smooth
        self._schedule("image")

    def set_corner_text(self, visible: bool) -> None:
        """Show the patient, study and acquisition text in the four corners (`viewer.core.corner_text`), or only
        the plane, slice and window in the top left."""
        self.corner_text_visible = visible
        self._show_corners()
        if self.state.volume is not None:
            self._update_info()
            self._place_overlays()

    def corner_lines(self) -> dict[str, list[str]]:
        """The lines each corner shows now (empty lists without a volume)."""
        vol = self.state.volume
        if vol is None:
            return {corner: [] for corner in CORNERS}
        index = self.state.slice_index(self.orientation)
        cursor = list(self.state.cursor)
        cursor[self.orientation.axis] = index
        lps = vol.index_to_lps(cursor)
        position = float(lps[2 - self.orientation.axis])  # the LPS coordinate along this plane's normal
        px_per_mm = self.scale_bar.px_per_mm if self.scale_bar.px_per_mm != 1.0 else None
        oblique = self.oblique
        facts = ViewFacts(self.orientation.value, index, slice_count(vol.shape, self.orientation),
                          None if oblique else position, self.state.window, px_per_mm, self._slab_caption(),
                          oblique=oblique)
        return corner_text(vol.metadata, facts)

    def _slab_caption(self) -> str:
        """E.g. "MIP 10 mm" while a thick slab is shown, else ""."""
        if self.state.slab_mm <= 0:
            return ""
        if self.oblique:
            return "slab: orthogonal planes only"
        return f"{PROJECTION_NAMES[self.state.projection]} {self.state.slab_mm:g} mm"

    def _update_info(self) -> None:
        vol = self.state.volume
        n = slice_count(vol.shape, self.orientation)
        w = self.state.window
        slab = self._slab_caption()
        where = "oblique" if self.oblique else f"{self.state.slice_index(self.orientation) + 1}/{n}"
        _set_text(self.info, f"{self.orientation.value} {where}{'  ' + slab if slab else ''}\n"
                             f"W {w.width:.0f}  L {w.center:.0f}")
        if self.corner_text_visible:
            # while scrolling only the slice lines change: the other corners keep their text (and size)
            for corner, lines in self.corner_lines().items():
                _set_text(self.corners[corner], "\n".join(lines))
        self._show_corners()

    def _show_corners(self) -> None:
        """Corner text where it is on and the view is big enough; a small view (a 1+3 side pane) keeps the short
        plane, slice and window line, which the corners would otherwise bury its image under."""
        w, h = self.graphics.width(), self.graphics.height()
        full = self.corner_text_visible and w >= COMPACT_BELOW_PX[0] and h >= COMPACT_BELOW_PX[1]
        for lab in self.corners.values():
            lab.setVisible(full and bool(lab.text()))
        self.info.setVisible(not full)

    # -- geometry helpers --------------------------------------------------------------------

    def voxel_at(self, point: QtCore.QPointF) -> tuple[float, float, float] | None:
        """Voxel (k, j, i) under a view-coordinate point (mm), or None outside the image."""
        vol = self.state.volume
        if vol is None:
            return None
        row, col = point.y() / self.pixel_mm[0], point.x() / self.pixel_mm[1]
        rows, cols = display_shape(vol.shape, self.orientation)
        if not (0 <= row < rows and 0 <= col < cols):
            return None
        if self.oblique:
            voxel = np.rint(self.state.plane_grid(self.orientation).voxel_of(point.y(), point.x()))
            if not all(0 <= v < n for v, n in zip(voxel, vol.shape)):
                return None
            return float(voxel[0]), float(voxel[1]), float(voxel[2])
        return display_to_voxel(vol.shape, self.orientation, self.state.slice_index(self.orientation),
                                math.floor(row), math.floor(col))

    def set_cursor_at(self, point: QtCore.QPointF) -> None:
        if self.oblique and self.voxel_at(point) is not None:  # exactly on the plane: it must not move
            self.state.set_cursor(self.state.plane_grid(self.orientation).voxel_of(point.y(), point.x()))
            return
        voxel = self.voxel_at(point)
        if voxel is not None:
            self.state.set_cursor(voxel)

    def _on_mouse_moved(self, scene_pos) -> None:
        if self.state.volume is None:
            return
        self.hovered.emit(self.voxel_at(self.viewbox.mapSceneToView(scene_pos)))

    def reset_view(self) -> None:
        """Fit the whole slice in the view (Home)."""
        if self.state.volume is None:
            return
        self.viewbox.setRange(rect=self._rect, padding=0.02)
        self._needs_fit = not self.isVisible() or self.graphics.width() < 10

    def rotate_drag(self, last: QtCore.QPointF, now: QtCore.QPointF) -> None:
        """The rotate tool: turn the other views' planes by the angle the mouse swept about the crosshair."""
        if self.state.volume is None:
            return
        y, x = self.state.plane_grid(self.orientation).screen_of(self.state.point)
        swept = (math.atan2(now.y() - y, now.x() - x) - math.atan2(last.y() - y, last.x() - x))
        swept = (swept + math.pi) % (2 * math.pi) - math.pi
        self.state.rotate_planes(self.orientation, swept)

    def zoom_by(self, factor: float, center: QtCore.QPointF | None = None) -> None:
        """Zoom by `factor` (< 1 magnifies) about `center` (view mm; default the middle): Ctrl+wheel."""
        self.zooming = True
        try:
            self.viewbox.scaleBy((factor, factor), center=center)
        finally:
            self.zooming = False

    def view_pixel_of_voxel(self, voxel) -> QtCore.QPoint:
        """Widget pixel where the centre of voxel (k, j, i) is drawn (for tests and tools)."""
        row, col = voxel_to_display(self.state.shape, self.orientation, voxel)
        scene = self.viewbox.mapViewToScene(QtCore.QPointF((col + 0.5) * self.pixel_mm[1],
                                                           (row + 0.5) * self.pixel_mm[0]))
        return self.graphics.mapFromScene(scene)

    # -- measurements ------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; tools: {', '.join(TOOLS)}")
        if self._editing and self.tool == "lasso":  # switching tools (Esc) drops an unfinished lasso
            self._editing = False
            self._lasso_points = []
            self.lasso_path.setPath(QtGui.QPainterPath())
        elif self._editing:
            self._finish_edit()
        self.tool = tool
        cursor = {"navigate": QtCore.Qt.CursorShape.ArrowCursor, "rotate": QtCore.Qt.CursorShape.SizeAllCursor}.get(
            tool, QtCore.Qt.CursorShape.CrossCursor)
        self.graphics.viewport().setCursor(cursor)
        self.outline.hide()

    # -- editing -----------------------------------------------------------------------------

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:
        """Left-button input of an editing tool goes to the editor, before pyqtgraph sees it."""
        if self.tool not in EDIT_TOOLS or self.state.volume is None or obj is not self.graphics.viewport():
            return False
        kind = ev.type()
        left = QtCore.Qt.MouseButton.LeftButton
        if kind == QtCore.QEvent.Type.MouseButtonPress and ev.button() == left:
            self.setFocus()
            if self.oblique:
                self.notice.emit(OBLIQUE_REFUSAL)
                return True
            self._begin_edit(ev.position())
            return True
        if kind == QtCore.QEvent.Type.MouseMove:
            if self.oblique:
                return False
            self._move_outline(ev.position())
            if self._editing:
                self._continue_edit(ev.position())
                return True
            return False
        if kind == QtCore.QEvent.Type.MouseButtonRelease and ev.button() == left:
            if self._editing:
                self._finish_edit()
            return True
        if kind == QtCore.QEvent.Type.MouseButtonDblClick and ev.button() == left:
            return True
        if kind == QtCore.QEvent.Type.Leave:
            self.outline.hide()
        return False

    def _view_point(self, pos: QtCore.QPointF) -> QtCore.QPointF:
        return self.viewbox.mapSceneToView(self.graphics.mapToScene(pos.toPoint()))

    def _display_of(self, pos: QtCore.QPointF) -> tuple[float, float]:
        """Fractional display (row, column) under a viewport position; voxel centres are integers."""
        p = self._view_point(pos)
        return p.y() / self.pixel_mm[0] - 0.5, p.x() / self.pixel_mm[1] - 0.5

    def _voxel_of(self, pos: QtCore.QPointF) -> tuple[int, int, int]:
        """The voxel whose pixel is under a viewport position (may lie outside the volume)."""
        row, col = self._display_of(pos)
        v = display_to_voxel(self.state.shape, self.orientation, self.state.slice_index(self.orientation),
                             math.floor(row + 0.5), math.floor(col + 0.5))
        return int(v[0]), int(v[1]), int(v[2])

    def _begin_edit(self, pos: QtCore.QPointF) -> None:
        self._editing = True
        if self.tool == "lasso":
            self._lasso_points = []
            self._add_lasso_point(pos)
        elif self.editor is not None:
            self.editor.stroke_begin(self, self._voxel_of(pos))
        self.hovered.emit(self.voxel_at(self._view_point(pos)))

    def _continue_edit(self, pos: QtCore.QPointF) -> None:
        if self.tool == "lasso":
            self._add_lasso_point(pos)
        elif self.editor is not None and self.tool != "fill":
            self.editor.stroke_move(self, self._voxel_of(pos))
        self.hovered.emit(self.voxel_at(self._view_point(pos)))

    def _finish_edit(self) -> None:
        self._editing = False
        if self.tool == "lasso":
            points, self._lasso_points = self._lasso_points, []
            self.lasso_path.setPath(QtGui.QPainterPath())
            if self.editor is not None and len(points) >= 3:
                self.editor.lasso(self, points)
        elif self.editor is not None:
            self.editor.stroke_end(self)

    def _add_lasso_point(self, pos: QtCore.QPointF) -> None:
        row, col = self._display_of(pos)
        self._lasso_points.append(display_to_voxel(self.state.shape, self.orientation,
                                                   self.state.slice_index(self.orientation), row, col))
        p = self._view_point(pos)
        path = self.lasso_path.path()
        if path.elementCount() == 0:
            path.moveTo(p)
        else:
            path.lineTo(p)
        self.lasso_path.setPath(path)

    def _move_outline(self, pos: QtCore.QPointF) -> None:
        """The brush outline: a circle of the brush's diameter centred on the voxel under the mouse."""
        got = self.editor.outline(self.tool) if self.editor is not None else None
        if got is None:
            self.outline.hide()
            return
        diameter, rgb = got
        row, col = voxel_to_display(self.state.shape, self.orientation, self._voxel_of(pos))
        cx, cy = (col + 0.5) * self.pixel_mm[1], (row + 0.5) * self.pixel_mm[0]
        self.outline.setRect(QtCore.QRectF(cx - diameter / 2, cy - diameter / 2, diameter, diameter))
        self.outline.setPen(_cosmetic_pen(rgb, 1.5))
        self.outline.show()

    def draw_measurement(self, ev) -> None:
        start = self.viewbox.mapSceneToView(ev.buttonDownScenePos())
        now = self.viewbox.mapSceneToView(ev.scenePos())
        if ev.isStart():
            self._drawing = self._new_measurement(start, now)
        if self._drawing is None:
            return
        m = self._drawing
        if m.kind == "ruler":
            m.roi.movePoint(m.roi.getHandles()[1], now, finish=False)
        elif m.kind == "angle":  # the first arm follows the mouse; the second stays square to it
            handles = m.roi.getHandles()
            m.roi.movePoint(handles[0], now, finish=False)
            m.roi.movePoint(handles[2], _square_arm(start, now), finish=False)
        elif m.kind == "axes":  # the long axis follows the mouse; the short one crosses its middle, half as long
            m.cross = _initial_cross(start, now)
            self._apply_cross(m)
        else:
            x0, y0 = min(start.x(), now.x()), min(start.y(), now.y())
            m.roi.setPos((x0, y0), update=False, finish=False)
            m.roi.setSize((max(abs(now.x() - start.x()), 1e-3), max(abs(now.y() - start.y()), 1e-3)),
                          finish=False)
        self._update_measurement(m)
        if ev.isFinish():
            self._drawing = None
            self.measurements_changed.emit()

    def _new_measurement(self, start: QtCore.QPointF, now: QtCore.QPointF) -> Measurement:
        pen = pg.mkPen((255, 230, 60), width=2)
        cross = None
        if self.tool == "ruler":
            roi = pg.LineSegmentROI([start, now], pen=pen)
        elif self.tool == "angle":
            roi = SegmentsROI([now, start, _square_arm(start, now)], SEGMENTS["angle"], pen=pen)
        elif self.tool == "axes":
            cross = _initial_cross(start, now)
            points = [cross.long_a, cross.long_b, *cross.short_ends]
            roi = SegmentsROI([QtCore.QPointF(*p) for p in points], SEGMENTS["axes"], pen=pen)
        else:
            roi = pg.EllipseROI(start, (1e-3, 1e-3), pen=pen)
        label = pg.TextItem(color=(255, 230, 60), anchor=(0, 1), fill=(0, 0, 0, 140))
        self.viewbox.addItem(roi)
        self.viewbox.addItem(label)
        m = Measurement(self.tool, self.state.slice_index(self.orientation), roi, label, cross=cross)
        roi.sigRegionChanged.connect(lambda *_: self._update_measurement(m))
        roi.sigRegionChangeFinished.connect(lambda *_: self.measurements_changed.emit())
        self.measurements.append(m)
        self.measurements_changed.emit()
        return m

    def _apply_cross(self, m: Measurement) -> None:
        """Put the handles of a long/short axis cross where `m.cross` says (the short axis perpendicular)."""
        if m.cross is None:
            return
        self._constraining = True
        try:
            targets = [m.cross.long_a, m.cross.long_b, *m.cross.short_ends]
            for handle, (x, y), p in zip(m.roi.getHandles(), targets, self._handle_points(m)):
                if abs(p.x() - x) > 1e-9 or abs(p.y() - y) > 1e-9:
                    m.roi.movePoint(handle, QtCore.QPointF(x, y), finish=False)
        finally:
            self._constraining = False

    def _constrain_axes(self, m: Measurement) -> None:
        """After a handle of the cross moved: a long-axis end (or the whole cross) carries the short axis along;
        a short-axis end slides the short axis along the long one and sets its reach."""
        if m.cross is None or self._constraining:
            return
        pts = [(p.x(), p.y()) for p in self._handle_points(m)]
        c = m.cross
        short = c.short_ends

        def moved(p, q) -> bool:
            return abs(p[0] - q[0]) > 1e-6 or abs(p[1] - q[1]) > 1e-6

        if moved(pts[0], c.long_a) or moved(pts[1], c.long_b):
            c = c.with_long(pts[0], pts[1])
        elif moved(pts[2], short[0]):
            c = c.with_short_end(0, pts[2])
        elif moved(pts[3], short[1]):
            c = c.with_short_end(1, pts[3])
        m.cross = c
        self._apply_cross(m)

    def _update_measurement(self, m: Measurement) -> None:
        if m.kind == "axes":
            self._constrain_axes(m)
        text = self.measurement_text(m)
        m.label.setText(text)
        if m.kind in ("ruler", *SEGMENTS):
            p = m.roi.getSceneHandlePositions()[1][1]
            m.label.setPos(self.viewbox.mapSceneToView(p))
        else:
            pos = m.roi.pos()
            m.label.setPos(pos.x(), pos.y())
        self._avoid_overlap(m)
        self.measured.emit(text)

    def _avoid_overlap(self, m: Measurement) -> None:
        """Move `m`'s label down, below any other label of the same slice it would cover (up to 20 steps)."""
        others = [o.label.sceneBoundingRect() for o in self.measurements
                  if o is not m and o.slice_index == m.slice_index]
        for _ in range(20):
            mine = m.label.sceneBoundingRect()
            hit = next((r for r in others if r.intersects(mine)), None)
            if hit is None:
                return
            shift = hit.bottom() - mine.top() + 2  # scene pixels: just below the other label
            here = self.viewbox.mapSceneToView(mine.topLeft())
            there = self.viewbox.mapSceneToView(mine.topLeft() + QtCore.QPointF(0, shift))
            m.label.setPos(m.label.pos() + (there - here))

    def measurement_values(self, m: Measurement) -> dict[str, float]:
        """A measurement's numbers: {"length_mm"} for a ruler; {"mean_hu", "sd_hu", "area_mm2"} for an ellipse
        (empty when it holds no pixel); {"angle_deg"} for an angle; {"long_mm", "short_mm"} for a long/short axis
        cross; plus its centre voxel (an angle's vertex) as "k", "j", "i"."""
        vol = self.state.volume
        if m.kind in SEGMENTS:
            mm = [np.array([p.x(), p.y()]) for p in self._handle_points(m)]  # view coordinates are mm
            vox = self.measurement_points(m)
            if m.kind == "angle":
                k, j, i = vox[1]
                return {"angle_deg": angle_deg(mm[0], mm[1], mm[2]), "k": k, "j": j, "i": i}
            k, j, i = vox[:2].mean(axis=0)
            return {"long_mm": float(np.linalg.norm(mm[1] - mm[0])), "short_mm": float(np.linalg.norm(mm[3] - mm[2])),
                    "k": k, "j": j, "i": i}
        if m.kind == "ruler":
            ends = self.measurement_points(m)
            mid = ends.mean(axis=0)
            return {"length_mm": distance_mm(vol, ends[0], ends[1]), "k": mid[0], "j": mid[1], "i": mid[2]}
        pos, size = m.roi.pos(), m.roi.size()
        center = ((pos.y() + size.y() / 2) / self.pixel_mm[0] - 0.5, (pos.x() + size.x() / 2) / self.pixel_mm[1] - 0.5)
        radii = (size.y() / 2 / self.pixel_mm[0], size.x() / 2 / self.pixel_mm[1])
        voxel = display_to_voxel(vol.shape, self.orientation, m.slice_index, *center)
        where = {"k": float(voxel[0]), "j": float(voxel[1]), "i": float(voxel[2])}
        image = extract(vol.array, self.orientation, m.slice_index)
        s = ellipse_stats(image, center, radii, self.pixel_mm)
        if s.pixels == 0:
            return where
        return {"mean_hu": s.mean, "sd_hu": s.std, "area_mm2": s.area_mm2, **where}

    def _handle_points(self, m: Measurement) -> list[QtCore.QPointF]:
        """The handles of a ruler, an angle or a cross in view (mm) coordinates."""
        return [self.viewbox.mapSceneToView(h[1]) for h in m.roi.getSceneHandlePositions()]

    def measurement_points(self, m: Measurement) -> np.ndarray:
        """A measurement's geometry as (k, j, i) voxel coordinates: a ruler's two ends; an ellipse's major then
        minor axis end points (4 points); an angle's first end, vertex and second end; a cross's long then short
        axis ends."""
        vol = self.state.volume

        def voxel(x: float, y: float) -> tuple[float, float, float]:
            return display_to_voxel(vol.shape, self.orientation, m.slice_index,
                                    y / self.pixel_mm[0] - 0.5, x / self.pixel_mm[1] - 0.5)

        if m.kind in ("ruler", *SEGMENTS):
            return np.array([voxel(p.x(), p.y()) for p in self._handle_points(m)], float)
        pos, size = m.roi.pos(), m.roi.size()
        cx, cy, rx, ry = pos.x() + size.x() / 2, pos.y() + size.y() / 2, size.x() / 2, size.y() / 2
        wide = [(cx - rx, cy), (cx + rx, cy)]
        tall = [(cx, cy - ry), (cx, cy + ry)]
        major, minor = (wide, tall) if rx >= ry else (tall, wide)
        return np.array([voxel(x, y) for x, y in (*major, *minor)], float)

    def measurement_text(self, m: Measurement) -> str:
        v = self.measurement_values(m)
        if m.kind == "ruler":
            return f"{v['length_mm']:.1f} mm"
        if m.kind == "angle":
            return f"{v['angle_deg']:.1f}\u00b0"
        if m.kind == "axes":
            return f"long {v['long_mm']:.1f} mm\nshort {v['short_mm']:.1f} mm"
        if "mean_hu" not in v:
            return "ROI: empty"
        return f"mean {v['mean_hu']:.1f} HU  sd {v['sd_hu']:.1f}\narea {v['area_mm2']:.1f} mm\u00b2"

    def _record(self, m: Measurement) -> tuple[str, int, tuple[tuple[float, float], ...], str]:
        """A measurement as plain data on this view's mm grid: kind, slice, points (the handles of a ruler, an
        angle or a cross; an ellipse's corner and size)."""
        if m.kind in ("ruler", *SEGMENTS):
            pts = tuple((p.x(), p.y()) for p in self._handle_points(m))
        else:
            pos, size = m.roi.pos(), m.roi.size()
            pts = ((pos.x(), pos.y()), (size.x(), size.y()))
        return m.kind, m.slice_index, pts, m.name

    def _restore(self, kind: str, index: int, points: tuple[tuple[float, float], ...], name: str = "") -> Measurement:
        """Draw a recorded measurement again (`_record`'s data)."""
        tool, self.tool = self.tool, kind
        try:
            a, b = (QtCore.QPointF(*p) for p in points[:2])
            m = self._new_measurement(a, b if kind == "ruler" else a)
        finally:
            self.tool = tool
        m.slice_index, m.name = index, name
        if kind in SEGMENTS:
            if kind == "axes":
                m.cross = CrossAxes.from_points(*points)
                self._apply_cross(m)
            else:
                for handle, p in zip(m.roi.getHandles(), points):
                    m.roi.movePoint(handle, QtCore.QPointF(*p), finish=False)
        elif kind != "ruler":
            m.roi.setPos(a)
            m.roi.setSize((b.x(), b.y()))
        self._update_measurement(m)
        return m

    def measurement_records(self) -> list[tuple[str, int, tuple[tuple[float, float], ...], str]]:
        """Every measurement of the series on show as plain data (`viewer.io.measurement_store.Record`)."""
        return [self._record(m) for m in self.measurements]

    def restore_measurements(self, records) -> None:
        """Draw recorded measurements (`measurement_records`' data) on the series on show."""
        for kind, index, points, name in records:
            self._restore(kind, index, points, name)
        self._schedule("measurements")
        self.measurements_changed.emit()

    def clear_measurements(self) -> None:
        for m in self.measurements:
            self.viewbox.removeItem(m.roi)
            self.viewbox.removeItem(m.label)
        self.measurements.clear()
        self.measurements_changed.emit()

    def remove_measurement(self, m: Measurement) -> None:
        """Delete one measurement from this view."""
        if m in self.measurements:
            self.viewbox.removeItem(m.roi)
            self.viewbox.removeItem(m.label)
            self.measurements.remove(m)
            self.measurements_changed.emit()

    # -- Qt events ---------------------------------------------------------------------------

    def keyPressEvent(self, ev: QtGui.QKeyEvent) -> None:
        key = ev.key()
        steps = {QtCore.Qt.Key.Key_Up: 1, QtCore.Qt.Key.Key_Down: -1, QtCore.Qt.Key.Key_Right: 1,
                 QtCore.Qt.Key.Key_Left: -1, QtCore.Qt.Key.Key_PageUp: 10, QtCore.Qt.Key.Key_PageDown: -10}
        if key in steps:
            self.state.step(self.orientation, steps[key])
        elif key == QtCore.Qt.Key.Key_Home:
            self.reset_view()
        elif key == QtCore.Qt.Key.Key_Escape:
            self.set_tool("navigate")
        else:
            super().keyPressEvent(ev)

    def resizeEvent(self, ev) -> None:
        super().resizeEvent(ev)
        QtCore.QTimer.singleShot(0, self._after_resize)

    def showEvent(self, ev) -> None:
        super().showEvent(ev)
        QtCore.QTimer.singleShot(0, self._after_resize)

    def _after_resize(self) -> None:
        if getattr(self, "_needs_fit", False):
            self.reset_view()
        self._place_overlays()

    def _place_overlays(self) -> None:
        w, h = self.graphics.width(), self.graphics.height()
        for edge, lab in self._edge_labels.items():
            lab.adjustSize()
            x = {"left": 6, "right": w - lab.width() - 6}.get(edge, (w - lab.width()) // 2)
            y = {"top": 4, "bottom": h - lab.height() - 4}.get(edge, (h - lab.height()) // 2)
            lab.move(x, y)
        self.info.move(6, 4)  # top-left corner: the edge letters sit at the middle of each edge
        if self.state.volume is not None:
            a = self.viewbox.mapViewToDevice(QtCore.QPointF(0, 0))
            b = self.viewbox.mapViewToDevice(QtCore.QPointF(100, 0))
            if a is not None and b is not None:
                scale = abs(b.x() - a.x()) / 100.0
                if scale != self.scale_bar.px_per_mm:
                    self.scale_bar.set_scale(scale)
                    if self.corner_text_visible:
                        self._update_info()  # the zoom line
        self.scale_bar.move(w - self.scale_bar.width() - 10, h - self.scale_bar.height() - 24)
        self._show_corners()
        c = self.corners
        c["top_left"].move(6, 4)
        c["top_right"].move(w - c["top_right"].width() - 6, 4)
        c["bottom_left"].move(6, h - c["bottom_left"].height() - 4)
        c["bottom_right"].move(w - c["bottom_right"].width() - 6, self.scale_bar.y() - c["bottom_right"].height() - 4)


def _square_arm(vertex: QtCore.QPointF, end: QtCore.QPointF) -> QtCore.QPointF:
    """The end of an arm from `vertex` as long as the arm to `end`, a quarter turn from it: a new angle's second
    arm, for the user to move."""
    d = end - vertex
    return vertex + QtCore.QPointF(d.y(), -d.x())


def _initial_cross(start: QtCore.QPointF, now: QtCore.QPointF) -> CrossAxes:
    """A new long axis from `start` to `now` with a short axis across its middle, half as long."""
    length = math.hypot(now.x() - start.x(), now.y() - start.y())
    return CrossAxes((start.x(), start.y()), (now.x(), now.y()), 0.5, length / 4, -length / 4)


def _set_text(label: QtWidgets.QLabel, text: str) -> None:
    """Set a label's text and size, only when it changed (relayout costs on every slice change otherwise)."""
    if label.text() != text:
        label.setText(text)
        label.adjustSize()


def _cosmetic_pen(rgb: tuple[int, int, int], width: float) -> QtGui.QPen:
    pen = QtGui.QPen(QtGui.QColor(*rgb), width)
    pen.setCosmetic(True)  # the same width at any zoom
    return pen


class _ScaleBar(QtWidgets.QWidget):
    """A bar of a round length in mm, sized from the current zoom."""

    def __init__(self, parent: QtWidgets.QWidget) -> None:
        super().__init__(parent)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.px_per_mm = 1.0
        self.length_mm = 50.0
        self.resize(120, 22)

    def set_scale(self, px_per_mm: float) -> None:
        self.px_per_mm = px_per_mm
        target = 90 / max(px_per_mm, 1e-6)  # about 90 pixels long
        for nice in (1, 2, 5, 10, 20, 50, 100, 200, 500):
            if nice >= target * 0.6:
                self.length_mm = float(nice)
                break
        self.update()

    def paintEvent(self, _ev) -> None:
        p = QtGui.QPainter(self)
        length = int(round(self.length_mm * self.px_per_mm))
        x1 = self.width() - 2
        x0 = max(2, x1 - length)
        # a dark backing: the bar and its label stay legible over bright tissue and bone
        label_w = p.fontMetrics().horizontalAdvance(f"{self.length_mm:g} mm") + 6
        p.fillRect(QtCore.QRect(min(x0, self.width() - label_w) - 2, 0, self.width(), self.height()),
                   QtGui.QColor(0, 0, 0, 120))
        p.setPen(QtGui.QPen(QtGui.QColor(240, 240, 240), 2))
        p.drawLine(x0, 16, x1, 16)
        p.drawLine(x0, 12, x0, 20)
        p.drawLine(x1, 12, x1, 20)
        p.drawText(QtCore.QRect(0, 0, self.width(), 13), QtCore.Qt.AlignmentFlag.AlignRight,
                   f"{self.length_mm:g} mm")
        p.end()

"""The LungLens main window: slice views, 3D view, layers, loading with progress and cancel."""

from __future__ import annotations

import os
import time
from pathlib import Path

import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.analysis import (
    LUNG_METHOD_NAMES,
    MASK_LAYER,
    AnalyzeWorker,
    ResultsPanel,
    add_prediction_layers,
    heatmap_choices,
    heatmap_overlay_layer,
    is_slice_model,
    usable_lung_methods,
    usable_models,
)
from app.gui.annotation.controller import AnnotationController
from app.gui.annotation.panel import AnnotationPanel
from app.gui.comparison import Comparison
from app.gui.docks.layer_panel import LayerPanel
from app.gui.docks.measurements_panel import MeasurementsPanel
from app.gui.docks.series_strip import SeriesStrip
from app.gui.docks.tag_panel import TagPanel
from app.gui.instances_panel import InstancesPanel
from app.gui.measurement_keeper import MeasurementKeeper
from app.gui.series_browser import SeriesBrowser
from app.gui.settings import Settings
from app.gui.workers import LoadWorker, start_worker
from inference.screening.assess import lung_problem, prediction_problem, voxel_problem
from viewer.core.corner_text import dicom_date
from viewer.core.errors import LoadError
from viewer.core.volume import Volume
from viewer.core.windowing import Window
from viewer.gui.slice_view import TOOLS, SliceView
from viewer.io.label_grid import read_overlay_on_grid
from viewer.io.user_dirs import config_dir
from viewer.io.volumes import volume_suffix
from viewer.labels.label_map import Box
from viewer.labels.session import EDIT_TOOLS
from viewer.state.layers import HeatmapLayer, LabelLayer
from viewer.state.slicing import PROJECTION_NAMES, PROJECTIONS, Orientation
from viewer.state.sync import CursorLink
from viewer.state.view_state import ViewerState

LAYOUTS = ("2x2", "1+3", "1x1")
APP_NAME = "LungLens"
TOOL_LABELS = {"axes": "Long/short axis"}
TOOL_TIPS = {
    "rotate": "Rotate (O): drag about the crosshair to turn the other views' planes (oblique MPR); Shift+O resets",
    "angle": "Angle: drag the first arm from the vertex, then move the second arm's end",
    "axes": "Long/short axis: drag the long axis; the short axis stays perpendicular (move its ends to fit)",
}
TOOL_SHORTCUTS = {"rotate": "O", "brush": "B", "sphere": "Shift+B", "eraser": "E", "fill": "F", "lasso": "L"}


def _make_3d_view(parent: QtWidgets.QWidget) -> QtWidgets.QWidget:
    """The VTK view, or a message where VTK/OpenGL cannot start (the app must still run)."""
    try:
        from viewer.gui.volume_view import VolumeView

        return VolumeView(parent)
    except Exception as exc:  # noqa: BLE001 - any VTK/GL failure becomes a visible message
        label = QtWidgets.QLabel(f"3D view unavailable:\n{exc}", parent)
        label.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        label.setStyleSheet("color: #ccc; background: #111;")
        label.setWordWrap(True)
        return label


class MainWindow(QtWidgets.QMainWindow):
    """Wires the viewer state to the views, the layer panel, the menus and the loading worker."""

    volume_loaded = QtCore.Signal(object)
    comparison_loaded = QtCore.Signal(object)  # the comparison series' volume, once on show
    load_failed = QtCore.Signal(str)
    analysis_done = QtCore.Signal(object)
    analysis_failed = QtCore.Signal(str)
    overlay_failed = QtCore.Signal(str)  # a refused overlay; the CT stays on show
    instances_saved = QtCore.Signal(str)  # the label map written by Export instances
    instances_failed = QtCore.Signal(str)

    def __init__(self, settings: Settings | None = None, interactive: bool = True, persist: bool = True) -> None:
        """`interactive=False` (screenshots, tests): no modal dialogs; defaults are taken instead.
        `persist=False` (one-shot screenshots): the user's settings file (recent files, layout, window) is read
        but never written."""
        super().__init__()
        self.interactive, self.persist = interactive, persist
        self.settings = settings or Settings.load()
        self.state = ViewerState(window=self.settings.presets().get(self.settings.preset))
        self._thread: QtCore.QThread | None = None
        self._worker: LoadWorker | None = None
        self._threads: list[QtCore.QThread] = []  # every worker thread started, joined before the window goes
        self._closing = False  # set by `join_workers`: results still arriving are dropped
        self._pending_overlays: list[str] = []
        self._loading_series: str | None = None
        self.comparison: Comparison | None = None  # a second series beside the main view (prior comparison)
        self.load_warnings: list[str] = []
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.views = {o: SliceView(self.state, o) for o in Orientation}
        # measurements kept between sessions (none written by one-shot screenshot windows)
        self.keeper = MeasurementKeeper(lambda: self.views.values(), self._measurement_folder() if persist else None,
                                        lambda text: self.statusBar().showMessage(text, 15000), parent=self)
        for view in self.views.values():
            self.keeper.watch(view)
        self.view3d = _make_3d_view(self)
        self.annotation = AnnotationController(self.state, self.settings, self, parent=self)
        self.annotation.status_message.connect(self.statusBar().showMessage)
        for view in self.views.values():
            view.editor = self.annotation
        self.main_view = Orientation.AXIAL
        self.layout_name = self.settings.layout if self.settings.layout in LAYOUTS else "2x2"
        self._build_central()
        self._build_docks()
        self._build_actions()
        self._build_statusbar()
        self.state.cursor_changed.connect(self._on_cursor)
        self.state.window_changed.connect(self._show_window_name)
        self.state.layers.changed.connect(lambda _l: self.sync_3d_labels())
        self.state.layers.layer_changed.connect(lambda _l: self.sync_3d_labels())
        self._cine_timer = QtCore.QTimer(self)
        self._cine_timer.timeout.connect(self._cine_step)
        self._cursor3d_timer = QtCore.QTimer(self, singleShot=True, interval=150)
        self._cursor3d_timer.timeout.connect(self._push_cursor_3d)
        for view in self.views.values():
            view.hovered.connect(self._show_hover)
            view.measured.connect(lambda text: self.statusBar().showMessage(text.replace("\n", "  "), 5000))
            view.notice.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.resize(1280, 900)
        # the viewer's views get the room; the docks start narrow (the user can widen them)
        self.resizeDocks([self.layers_dock, self.ai_dock], [300, 300], QtCore.Qt.Orientation.Horizontal)

    # -- layout ------------------------------------------------------------------------------

    def _build_central(self) -> None:
        self.central = QtWidgets.QWidget()
        self.grid = QtWidgets.QGridLayout(self.central)
        self.grid.setContentsMargins(2, 2, 2, 2)
        self.grid.setSpacing(3)
        self.setCentralWidget(self.central)
        self.set_layout(self.layout_name)

    def panes(self) -> list[QtWidgets.QWidget]:
        panes: list[QtWidgets.QWidget] = [self.views[Orientation.AXIAL], self.views[Orientation.CORONAL],
                                          self.views[Orientation.SAGITTAL], self.view3d]
        return panes + ([self.compare_view] if self.compare_view is not None else [])

    def set_layout(self, name: str) -> None:
        """2x2 (axial, coronal / sagittal, 3D), 1+3 (main view large) or 1x1 (main view only)."""
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}; layouts: {', '.join(LAYOUTS)}")
        self.layout_name = name
        for w in self.panes():
            self.grid.removeWidget(w)
            w.hide()
        for r in range(3):
            self.grid.setRowStretch(r, 0)
        for c in range(2):
            self.grid.setColumnStretch(c, 0)
        main = self.views[self.main_view] if isinstance(self.main_view, Orientation) else self.view3d
        others = [w for w in self.panes()[:4] if w is not main]
        if self.compare_view is not None:
            # prior comparison: the main view of each series, side by side, the same size
            self.grid.addWidget(self.views[self._compare_orientation()], 0, 0)
            self.grid.addWidget(self.compare_view, 0, 1)
            for w in (self.views[self._compare_orientation()], self.compare_view):
                w.show()
            self.grid.setRowStretch(0, 1)
            self.grid.setColumnStretch(0, 1)
            self.grid.setColumnStretch(1, 1)
        elif name == "2x2":
            for w, (r, c) in zip(self.panes(), ((0, 0), (0, 1), (1, 0), (1, 1))):
                self.grid.addWidget(w, r, c)
                w.show()
            for i in range(2):
                self.grid.setRowStretch(i, 1)
                self.grid.setColumnStretch(i, 1)
        elif name == "1+3":
            self.grid.addWidget(main, 0, 0, 3, 1)
            main.show()
            for r, w in enumerate(others):
                self.grid.addWidget(w, r, 1)
                w.show()
                self.grid.setRowStretch(r, 1)
            self.grid.setColumnStretch(0, 3)
            self.grid.setColumnStretch(1, 1)
        else:
            self.grid.addWidget(main, 0, 0)
            main.show()
            self.grid.setRowStretch(0, 1)
            self.grid.setColumnStretch(0, 1)
        self.settings.layout = name
        if hasattr(self, "layout_box"):  # the View menu and the toolbar box must agree
            with QtCore.QSignalBlocker(self.layout_box):
                self.layout_box.setCurrentText(name)
            self.layout_box.setEnabled(self.compare_view is None)
            self.layout_box.setToolTip("" if self.compare_view is None else
                                       "the comparison shows the main view of both series: close it for the layouts")
        if getattr(self.view3d, "labels_stale", False) and self.view3d.isVisible():
            self.sync_3d_labels()  # label edits made while the 3D view was hidden

    def set_main_view(self, orientation: Orientation | str) -> None:
        self.main_view = Orientation(orientation) if orientation != "3d" else "3d"
        if self.compare_view is not None and self.compare_view.orientation is not self._compare_orientation():
            self._make_compare_view()
            self.compare_view.reset_view()
        self.set_layout(self.layout_name)

    # -- prior comparison --------------------------------------------------------------------

    def _compare_orientation(self) -> Orientation:
        return self.main_view if isinstance(self.main_view, Orientation) else Orientation.AXIAL

    def show_worklist(self) -> None:
        """The triage worklist window (one per viewer); its double-clicked cases open here with their overlays."""
        from app.gui.worklist_window import WorklistWindow

        if getattr(self, "_worklist", None) is None:
            model = self.model_box.currentText() or None
            from app.services.cases import ScreenOptions
            from app.services.worklist_db import CacheError

            options = ScreenOptions(model=model) if model else ScreenOptions()
            try:
                self._worklist = WorklistWindow(options, workers=max(1, os.cpu_count() or 1))
            except (CacheError, ValueError, OSError) as exc:
                self.statusBar().showMessage(str(exc).splitlines()[0], 15000)
                if self.interactive:
                    QtWidgets.QMessageBox.warning(self, "Cannot open the worklist", str(exc))
                return
            self._worklist.open_case.connect(
                lambda source, series, overlays: self.open_path(source, series=series or None, overlays=overlays))
        self._worklist.show()
        self._worklist.raise_()

    def pacs_dialog(self):
        """Query a configured PACS node and open the retrieved study here."""
        from app.gui.pacs_dialog import PacsDialog

        dialog = PacsDialog(self)
        dialog.retrieved.connect(lambda folders: self.open_path(folders[0]))
        dialog.show()
        return dialog

    def open_comparison_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open a series to compare (e.g. the prior study)",
                                                          self.settings.last_folder)
        if path:
            self.open_comparison(path)

    def open_comparison(self, path: str | os.PathLike, series: str | None = None) -> None:
        """Load a second series (a prior study, another reconstruction) in the background and show it beside
        the main view, its crosshair following the main series by patient position."""
        if self.state.volume is None:
            self._on_failed("open a series before opening one to compare it with")
            return
        if self._worker is not None and not self._worker.result_delivered:
            self.statusBar().showMessage("busy: wait for the current task or cancel it", 5000)
            return
        self.open_path(path, series=series, target="comparison")

    def show_comparison(self, volume: Volume) -> None:
        """Show `volume` beside the main view, linked (`CursorLink`) when synchronisation is on."""
        if self.comparison is None:
            self.comparison = Comparison(self.state, MeasurementKeeper(
                lambda: [self.compare_view] if self.compare_view is not None else [],
                self._measurement_folder() if self.persist else None,
                lambda text: self.statusBar().showMessage(text, 15000), parent=self))
        self.comparison.show(volume, linked=self.sync_action.isChecked())
        if self.comparison.view is None:
            self._make_compare_view()
        self.close_compare_action.setEnabled(True)
        self.set_layout(self.layout_name)
        link = self.comparison.link
        self.statusBar().showMessage(
            f"comparing with {dicom_date(volume.metadata.study_date) or Path(volume.source).name or 'a series'}"
            + ("" if link is None or link.absolute else
               " (another frame of reference: aligned by the volumes' centres; unlink with Ctrl+L, align, and link "
               "again to re-anchor)"), 10000)
        self.comparison_loaded.emit(volume)

    def _make_compare_view(self) -> None:
        orientation = self._compare_orientation()
        old = self.comparison.make_view(orientation, self.views[orientation])
        if old is not None:
            self.grid.removeWidget(old)
            old.hide()
            old.deleteLater()
        view = self.comparison.view
        view.set_corner_text(self.corner_text_action.isChecked())
        view.set_smooth_reformat(self.smooth_action.isChecked())
        tool = self.views[Orientation.AXIAL].tool
        view.set_tool("navigate" if tool in EDIT_TOOLS else tool)
        view.hovered.connect(lambda voxel: self._show_hover(voxel, self.compare_state))
        view.notice.connect(lambda text: self.statusBar().showMessage(text, 8000))
        view.setToolTip("comparison series: its labels and AI results are not shown here")

    @property
    def compare_state(self) -> ViewerState | None:
        return self.comparison.state if self.comparison is not None else None

    @property
    def compare_view(self) -> SliceView | None:
        return self.comparison.view if self.comparison is not None else None

    @property
    def compare_link(self) -> CursorLink | None:
        return self.comparison.link if self.comparison is not None else None

    def set_sync(self, on: bool) -> None:
        """Link (or unlink) the comparison's crosshair, window and slab to the main series'. Linking again takes
        the offset from where the two crosshairs are now (after aligning them by hand)."""
        with QtCore.QSignalBlocker(self.sync_action):
            self.sync_action.setChecked(on)
        if self.comparison is not None:
            self.comparison.set_linked(on)

    def close_comparison(self) -> None:
        if self.comparison is None:
            return
        view, self.comparison = self.comparison.close(), None
        if view is not None:
            self.grid.removeWidget(view)
            view.hide()
            view.deleteLater()
        self.close_compare_action.setEnabled(False)
        self.set_layout(self.layout_name)

    def _build_docks(self) -> None:
        self.layer_panel = LayerPanel(self.state.layers)
        dock = QtWidgets.QDockWidget("Layers", self)
        dock.setObjectName("layers")
        dock.setWidget(self.layer_panel)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.layers_dock = dock

        ai = QtWidgets.QWidget()
        self.model_box = QtWidgets.QComboBox()
        self.model_box.addItems(usable_models())
        self.lung_box = QtWidgets.QComboBox()  # the lung mask method the model gets
        self.lung_box.setToolTip("lung mask: threshold (classic) or U-Net (when its weights are installed)")
        for method in usable_lung_methods():
            self.lung_box.addItem(LUNG_METHOD_NAMES.get(method, method), method)
        self.heatmap_box = QtWidgets.QComboBox()  # a slice model's heat map (a volume model makes Grad-CAM)
        self.heatmap_box.setToolTip("heat map of a slice model: Grad-CAM at Fire 2 (sits on lesions more) or the "
                                    "paper's class activation map; a volume model always uses Grad-CAM")
        for name, method in heatmap_choices():
            self.heatmap_box.addItem(name, method)
        self.model_box.currentTextChanged.connect(lambda name: self.heatmap_box.setEnabled(is_slice_model(name)))
        self.heatmap_box.setEnabled(is_slice_model(self.model_box.currentText()))
        self.device_label = QtWidgets.QLabel("")
        self.analyze_button = QtWidgets.QPushButton("Analyze")
        self.analyze_button.clicked.connect(lambda: self.analyze())
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("model"))
        row.addWidget(self.model_box, 1)
        row.addWidget(QtWidgets.QLabel("lungs"))
        row.addWidget(self.lung_box)
        row.addWidget(self.analyze_button)
        self.results = ResultsPanel(self.state)
        col = QtWidgets.QVBoxLayout(ai)
        col.setContentsMargins(4, 4, 4, 4)
        col.addLayout(row)
        second = QtWidgets.QHBoxLayout()
        second.addWidget(QtWidgets.QLabel("heat map"))
        second.addWidget(self.heatmap_box)
        second.addWidget(self.device_label, 1)
        col.addLayout(second)
        col.addWidget(self.results, 1)
        # the lesion-instance list joins the dock with the first result that has instances
        self.instances = InstancesPanel(self.state, MASK_LAYER, parent=ai)
        self.instances.export_requested.connect(self._export_instances)
        self._ai_column = col
        dock = QtWidgets.QDockWidget("AI results", self)
        dock.setObjectName("ai-results")
        # scrolls where the dock is shorter than its content (a three-class headline, the instance list): the
        # layout squeezed the headline and the plot to a few clipped pixels instead
        scroll = QtWidgets.QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        scroll.setWidget(ai)
        # as wide as the content needs (a scroll area alone would let the dock shrink and cut its right side off)
        scroll.setMinimumWidth(ai.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        frame = QtWidgets.QWidget()  # the disclaimer stays in sight under the scrolled results
        pinned = QtWidgets.QVBoxLayout(frame)
        pinned.setContentsMargins(0, 0, 0, 4)
        pinned.addWidget(scroll, 1)
        pinned.addWidget(self.results.disclaimer)
        self.results.disclaimer.setContentsMargins(8, 0, 0, 0)
        dock.setWidget(frame)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.ai_dock = dock
        self.ai_dock.setMinimumWidth(280)
        self._update_device_label()

        # further docks are tabs beside AI results: a third column of docks would squeeze the views
        self.annotation_panel = AnnotationPanel(self.annotation)
        self.annotation_dock = self._tab_dock("Annotation", "annotation", self.annotation_panel)
        self.measurements_panel = MeasurementsPanel(self.views)
        self.measurements_panel.renamed.connect(self.keeper.changed)
        self.measurements_dock = self._tab_dock("Measurements", "measurements", self.measurements_panel)
        self.series_strip = SeriesStrip()
        self.series_strip.series_chosen.connect(lambda folder, sid: self.open_path(folder, series=sid))
        self.study_dock = QtWidgets.QDockWidget("Study: series", self)
        self.study_dock.setObjectName("study-strip")
        self.study_dock.setWidget(self.series_strip)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, self.study_dock)
        self.study_dock.hide()  # shown when a folder holds several series
        self.tag_panel = TagPanel(self.state)
        self.tag_dock = dock = self._tab_dock("DICOM tags", "dicom-tags", self.tag_panel)
        dock.hide()  # View > DICOM tags (Ctrl+T)
        self.ai_dock.raise_()

    def _tab_dock(self, title: str, name: str, widget: QtWidgets.QWidget) -> QtWidgets.QDockWidget:
        """A right-hand dock for `widget`, tabbed with AI results."""
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.tabifyDockWidget(self.ai_dock, dock)
        return dock

    def _build_actions(self) -> None:
        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        self._action(file_menu, "Open &Folder...", self.open_folder_dialog, QtGui.QKeySequence.StandardKey.Open)
        self._action(file_menu, "Open F&ile...", self.open_file_dialog, "Ctrl+Shift+O")
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        self._action(file_menu, "Add &Mask Overlay...", self.add_overlay_dialog, "Ctrl+M")
        self._action(file_menu, "Open &Comparison Series...", self.open_comparison_dialog, "Ctrl+Shift+C")
        self.close_compare_action = self._action(file_menu, "Close Comparison", self.close_comparison)
        self._action(file_menu, "&Worklist...", self.show_worklist, "Ctrl+Shift+W")
        self._action(file_menu, "Query &PACS...", self.pacs_dialog)
        self.close_compare_action.setEnabled(False)
        file_menu.addSeparator()
        a = self.annotation
        self._action(file_menu, "&New Label Map", a.new_label_map)
        self._action(file_menu, "Open &Label Map...", a.open_dialog)
        self._action(file_menu, "&Save Label Map", lambda: a.save(), QtGui.QKeySequence.StandardKey.Save)
        self._action(file_menu, "Save Label Map &As...", lambda: a.save_as_dialog(), "Ctrl+Shift+S")
        file_menu.addSeparator()
        self._action(file_menu, "Save &Screenshot...", self.screenshot_dialog)
        self._action(file_menu, "&Quit", self.close, QtGui.QKeySequence.StandardKey.Quit)

        view_menu = self.view_menu = menu.addMenu("&View")
        layout_menu = view_menu.addMenu("&Layout")
        for name in LAYOUTS:
            self._action(layout_menu, name, lambda _=False, n=name: self.set_layout(n))
        main_menu = view_menu.addMenu("&Main view")
        for o in [*Orientation, "3d"]:
            label = o.value if isinstance(o, Orientation) else "3D"
            self._action(main_menu, label, lambda _=False, o=o: self.set_main_view(o))
        self._action(view_menu, "&Reset views", self.reset_views, "Home")
        self._action(view_menu, "Reset &oblique planes (Rotate tool: O)", self.reset_oblique, "Shift+O")
        self.sync_action = self._action(view_menu, "S&ynchronise comparison (link again to re-anchor)",
                                        self.set_sync, "Ctrl+L")
        self.sync_action.setCheckable(True)
        self.sync_action.setChecked(True)
        self.smooth_action = self._action(view_menu, "Smooth &thick-slice reformats (linear)", self.set_smooth_reformat)
        self.smooth_action.setCheckable(True)
        self.smooth_action.setChecked(True)
        tags = self.tag_dock.toggleViewAction()
        tags.setText("DICOM &tags")
        tags.setShortcut(QtGui.QKeySequence("Ctrl+T"))
        view_menu.addAction(tags)
        self.corner_text_action = self._action(view_menu, "&Corner text (patient, study, acquisition)",
                                               self.set_corner_text, "I")
        self.corner_text_action.setCheckable(True)
        self.corner_text_action.setChecked(True)
        view_menu.addAction(self.layers_dock.toggleViewAction())

        edit_menu = menu.addMenu("&Edit")
        self._action(edit_menu, "&Undo", a.undo, QtGui.QKeySequence.StandardKey.Undo)
        redo = self._action(edit_menu, "&Redo", a.redo)
        redo.setShortcuts([QtGui.QKeySequence("Ctrl+Shift+Z"), QtGui.QKeySequence("Ctrl+Y")])
        edit_menu.addSeparator()
        self._action(edit_menu, "Show/hide label map", a.toggle_visible, "Space")
        self._action(edit_menu, "Smaller brush", lambda: a.step_brush_size(False), "[")
        self._action(edit_menu, "Larger brush", lambda: a.step_brush_size(True), "]")
        labels_menu = edit_menu.addMenu("Active &label")
        for n in range(1, 10):
            self._action(labels_menu, f"label {n}", lambda _=False, n=n: a.set_active_label(n), str(n))
        edit_menu.addAction(self.annotation_dock.toggleViewAction())

        ai_menu = menu.addMenu("&AI")
        self._action(ai_menu, "&Analyze", lambda: self.analyze(), "Ctrl+Shift+A")
        ai_menu.addAction(self.ai_dock.toggleViewAction())

        self.preset_menu = menu.addMenu("&Window")
        self._fill_presets()

        tools = menu.addMenu("&Tools")
        self.tool_group = QtGui.QActionGroup(self)
        self.tool_actions: dict[str, QtGui.QAction] = {}
        for tool in TOOLS:
            if tool == EDIT_TOOLS[0]:
                tools.addSeparator()
            act = self._action(tools, TOOL_LABELS.get(tool, tool.capitalize()),
                               lambda _=False, t=tool: self.set_tool(t), TOOL_SHORTCUTS.get(tool))
            if tool in TOOL_TIPS:
                act.setToolTip(TOOL_TIPS[tool])
            act.setCheckable(True)
            act.setChecked(tool == "navigate")
            self.tool_group.addAction(act)
            self.tool_actions[tool] = act
        self._action(tools, "Back to Navigate", lambda: self.set_tool("navigate"), "Esc")
        self._action(tools, "Clear measurements", lambda: [v.clear_measurements() for v in self.views.values()])
        self.annotation_panel.set_tool_actions([self.tool_actions[t] for t in ("navigate", *EDIT_TOOLS)])

        bar = self.addToolBar("Main")
        bar.setObjectName("main-toolbar")
        bar.addAction("Open Folder", self.open_folder_dialog)
        bar.addSeparator()
        self.preset_box = QtWidgets.QComboBox()
        self.preset_box.setPlaceholderText("custom")  # shown when the window matches no preset
        self.preset_box.addItems(list(self.settings.presets()))
        self.preset_box.setCurrentText(self.settings.preset)
        self.preset_box.textActivated.connect(self.apply_preset)
        bar.addWidget(QtWidgets.QLabel(" Window "))
        bar.addWidget(self.preset_box)
        self.layout_box = QtWidgets.QComboBox()
        self.layout_box.addItems(LAYOUTS)
        self.layout_box.setCurrentText(self.layout_name)
        self.layout_box.textActivated.connect(self.set_layout)
        bar.addWidget(QtWidgets.QLabel(" Layout "))
        bar.addWidget(self.layout_box)
        self.slab_box = QtWidgets.QDoubleSpinBox()  # thick slab in mm; 0 shows single slices
        self.slab_box.setRange(0.0, 500.0)
        self.slab_box.setDecimals(0)
        self.slab_box.setSingleStep(5.0)
        self.slab_box.setSuffix(" mm")
        self.slab_box.setSpecialValueText("off")
        self.slab_box.setToolTip("thick slab in every view (M toggles 10 mm): MIP finds nodules, MinIP shows "
                                 "airways and ground glass")
        self.slab_box.valueChanged.connect(lambda mm: self.set_slab(mm))
        self.projection_box = QtWidgets.QComboBox()
        for key in PROJECTIONS:
            self.projection_box.addItem(PROJECTION_NAMES[key], key)
        self.projection_box.currentIndexChanged.connect(
            lambda _i: self.set_slab(self.slab_box.value(), self.projection_box.currentData()))
        bar.addWidget(QtWidgets.QLabel(" Slab "))
        bar.addWidget(self.slab_box)
        bar.addWidget(self.projection_box)
        self.cine_action = self._action(self.view_menu, "&Cine (play through the slices)", self.set_cine, "P")
        self.cine_action.setCheckable(True)
        self.cine_action.setIconText("Cine")
        bar.addAction(self.cine_action)
        self.cine_fps = QtWidgets.QSpinBox()
        self.cine_fps.setRange(1, 60)
        self.cine_fps.setValue(10)
        self.cine_fps.setSuffix(" fps")
        self.cine_fps.setToolTip("cine speed: slices per second")
        self.cine_fps.valueChanged.connect(lambda fps: self._cine_timer.setInterval(round(1000 / fps)))
        bar.addWidget(self.cine_fps)
        self._action(self.view_menu, "Thick &slab on/off (10 mm)", self.toggle_slab, "M")
        bar.addSeparator()
        for act in self.tool_group.actions():
            bar.addAction(act)

    def _action(self, menu, text, slot, shortcut=None) -> QtGui.QAction:
        act = QtGui.QAction(text, self)
        act.triggered.connect(slot)
        if shortcut is not None:
            act.setShortcut(QtGui.QKeySequence(shortcut))
        menu.addAction(act)
        self.addAction(act)
        return act

    def _fill_presets(self) -> None:
        self.preset_menu.clear()
        for n, name in enumerate(self.settings.presets(), start=1):
            w = self.settings.presets()[name]
            shortcut = f"Ctrl+{n}" if n <= 9 else None
            self._action(self.preset_menu, f"{name}  (W {w.width:.0f} / L {w.center:.0f})",
                         lambda _=False, p=name: self.apply_preset(p), shortcut)
        self.preset_menu.addSeparator()
        self._action(self.preset_menu, "Save current as preset...", self.save_preset_dialog)

    def _build_statusbar(self) -> None:
        self.position_label = QtWidgets.QLabel("")
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setRange(0, 1000)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_loading)
        self.warnings_button = QtWidgets.QToolButton()  # the load warnings stay here, not 10 s in the status bar
        self.warnings_button.setStyleSheet("color: #b35c00; font-weight: bold;")
        self.warnings_button.setToolTip("warnings about the open series: click to read them")
        self.warnings_button.clicked.connect(self.show_warnings)
        self.warnings_button.hide()
        sb = self.statusBar()
        sb.addPermanentWidget(self.warnings_button)
        sb.addPermanentWidget(self.position_label)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    # -- window / tools ----------------------------------------------------------------------

    def apply_preset(self, name: str) -> None:
        self.state.apply_preset(name, self.settings.presets())
        self.settings.preset = name
        with QtCore.QSignalBlocker(self.preset_box):
            self.preset_box.setCurrentText(name)

    def _show_window_name(self, window: Window) -> None:
        """The Window box names the preset the display window equals, or shows "custom" (after dragging W/L)."""
        name = next((n for n, w in self.settings.presets().items()
                     if abs(w.center - window.center) < 0.5 and abs(w.width - window.width) < 0.5), None)
        with QtCore.QSignalBlocker(self.preset_box):
            if name is None:
                self.preset_box.setCurrentIndex(-1)
            else:
                self.preset_box.setCurrentText(name)

    def save_preset_dialog(self) -> None:
        name, ok = QtWidgets.QInputDialog.getText(self, "Save window preset", "Name:")
        if ok and name.strip():
            w = self.state.window
            self.settings.user_presets[name.strip()] = (w.center, w.width)
            self.settings.save()
            self._fill_presets()
            self.preset_box.addItem(name.strip())

    def set_tool(self, tool: str) -> None:
        """Navigate, measure or edit in every slice view (an editing tool starts a label map if needed)."""
        for view in self.views.values():
            view.set_tool(tool)
        if self.compare_view is not None:  # measuring works on the comparison too; editing does not
            self.compare_view.set_tool("navigate" if tool in EDIT_TOOLS else tool)
        act = getattr(self, "tool_actions", {}).get(tool)
        if act is not None and not act.isChecked():
            act.setChecked(True)
        if tool in EDIT_TOOLS and self.annotation.ensure_labels() is not None:
            self.annotation_dock.show()
            self.annotation_dock.raise_()

    def set_slab(self, thickness_mm: float, projection: str | None = None) -> None:
        """Show every slice view as a slab `thickness_mm` thick (0: single slices), projected by `projection`
        ("mip", "minip" or "mean"; default the current one); the toolbar boxes follow."""
        self.state.set_slab(thickness_mm, projection)
        with QtCore.QSignalBlocker(self.slab_box), QtCore.QSignalBlocker(self.projection_box):
            self.slab_box.setValue(self.state.slab_mm)
            self.projection_box.setCurrentIndex(PROJECTIONS.index(self.state.projection))
        if self.state.slab_mm > 0:
            self._last_slab_mm = self.state.slab_mm

    def set_cine(self, playing: bool) -> None:
        """Play through the slices of the main view (axial when the main view is 3D) at the chosen frame rate,
        looping at the end (key P toggles)."""
        with QtCore.QSignalBlocker(self.cine_action):
            self.cine_action.setChecked(playing)
        if playing and self.state.volume is not None:
            self._cine_timer.start(round(1000 / self.cine_fps.value()))
        else:
            self._cine_timer.stop()
            with QtCore.QSignalBlocker(self.cine_action):
                self.cine_action.setChecked(False)

    def _cine_step(self) -> None:
        if self.state.volume is None:
            self.set_cine(False)
            return
        orientation = self.main_view if isinstance(self.main_view, Orientation) else Orientation.AXIAL
        index = self.state.slice_index(orientation) + 1
        self.state.set_slice(orientation, 0 if index >= self.state.shape[orientation.axis] else index)

    def toggle_slab(self) -> None:
        """Key M: single slices <-> the last slab (10 mm the first time)."""
        self.set_slab(0.0 if self.state.slab_mm > 0 else getattr(self, "_last_slab_mm", 10.0))

    def set_smooth_reformat(self, smooth: bool) -> None:
        """Coronal and sagittal images of thick-slice series: linear interpolation between the slices, or the
        acquired slices' staircase (nearest)."""
        with QtCore.QSignalBlocker(self.smooth_action):
            self.smooth_action.setChecked(smooth)
        for view in self.slice_views():
            view.set_smooth_reformat(smooth)

    def set_corner_text(self, visible: bool) -> None:
        """Show or hide the patient, study and acquisition text in the slice views' corners (key I)."""
        with QtCore.QSignalBlocker(self.corner_text_action):
            self.corner_text_action.setChecked(visible)
        for view in self.slice_views():
            view.set_corner_text(visible)

    def slice_views(self) -> list[SliceView]:
        """The main series' slice views and, while one is open, the comparison's."""
        return [*self.views.values(), *([self.compare_view] if self.compare_view is not None else [])]

    def reset_oblique(self) -> None:
        """Back to orthogonal axial, coronal and sagittal planes (the comparison's too)."""
        self.state.reset_planes()
        if self.compare_state is not None:
            self.compare_state.reset_planes()

    def reset_views(self) -> None:
        for view in self.slice_views():
            view.reset_view()
        if hasattr(self.view3d, "reset_camera"):
            self.view3d.reset_camera()

    # -- loading -----------------------------------------------------------------------------

    def open_folder_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open DICOM folder", self.settings.last_folder)
        if path:
            self.open_path(path)

    def open_file_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self, "Open CT file", self.settings.last_folder,
            "CT volumes and DICOM (*.nii *.nii.gz *.nrrd *.mha *.mhd *.dcm *);;All files (*)")
        if path:
            self.open_path(path)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent:
            act = self.recent_menu.addAction(path)
            act.triggered.connect(lambda _=False, p=path: self.open_path(p))
        if not self.settings.recent:
            self.recent_menu.addAction("(none)").setEnabled(False)

    def open_path(self, path: str | os.PathLike, series: str | None = None,
                  overlays: list[str] | None = None, target: str = "main") -> None:
        """Load a folder or file in the background; a folder with several series opens the series browser.
        `target` "comparison" shows it beside the main view (`show_comparison`) instead of replacing it."""
        path = str(path)
        if target == "main" and not self.annotation.resolve_unsaved(
                then=lambda: self.open_path(path, series, overlays)):
            return
        if self._thread is not None:
            self.cancel_loading()
        self._pending_overlays = list(overlays or [])
        scan_first = series is None and os.path.isdir(path)
        worker = LoadWorker(path, series=series, scan_only=scan_first)
        self._loading_path, self._loading_series = path, series
        # each target has its own slots: a cancelled load's late result never lands in the other place
        worker.loaded.connect(self._on_loaded if target == "main" else self._on_comparison_loaded)
        worker.scanned.connect(self._on_scanned if target == "main" else self._on_comparison_scanned)
        worker.failed.connect(self._on_failed)
        self._start(worker, f"Opening {path}...")

    def _start(self, worker, message: str) -> None:
        """Run a worker in its thread with the status-bar progress and Cancel button.

        Connections go to bound methods of this QObject, so Qt queues the calls into the GUI thread.
        """
        worker.progress.connect(self._on_progress)
        worker.cancelled.connect(self._on_cancelled)
        worker.finished.connect(self._on_worker_finished)
        self._worker = worker
        self.progress.setValue(0)
        self.progress.show()
        self.cancel_button.show()
        self.statusBar().showMessage(message)
        self._thread = start_worker(worker, self)
        self._threads = [t for t in self._threads if shiboken6.isValid(t)] + [self._thread]

    def cancel_loading(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def join_workers(self, timeout_s: float = 120.0) -> bool:
        """Cancel the running task and wait until every worker thread has ended (before the window goes: Qt
        aborts the process when a running QThread is destroyed). Returns whether they all ended in time."""
        self._closing = True
        self.cancel_loading()
        deadline = time.monotonic() + timeout_s
        while True:
            running = [t for t in self._threads if shiboken6.isValid(t) and t.isRunning()]
            if not running or time.monotonic() >= deadline:
                break
            for thread in running:
                thread.quit()  # ends its event loop once the worker's run returns (its own quit is queued)
            # keep the events flowing and sleep (QThread.wait would hold the GIL the worker needs)
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
            time.sleep(0.01)
        self._threads = [t for t in self._threads if shiboken6.isValid(t) and t.isRunning()]
        return not self._threads

    def _on_worker_finished(self) -> None:
        # A replaced worker can finish after its successor started (sender() is not reliable for
        # queued calls here): only a worker that delivered its result may be cleared, or the successor
        # would lose its progress bar and Cancel. (start_worker keeps every worker alive until its thread ends.)
        if self._worker is not None and not self._worker.result_delivered:
            return
        self._worker = None
        self._thread = None
        self.progress.hide()
        self.cancel_button.hide()

    def _on_cancelled(self) -> None:
        self.statusBar().showMessage("Loading cancelled", 5000)

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.statusBar().showMessage(message)

    def _on_comparison_scanned(self, result) -> None:
        self._on_scanned(result, "comparison")

    def _on_comparison_loaded(self, volume: Volume) -> None:
        if not self._closing:
            self.show_comparison(volume)

    def _on_scanned(self, result, target: str = "main") -> None:
        from viewer.io.volumes import choose_series

        if self._closing:
            return
        path = self._loading_path
        if target == "main":
            self._show_study(path, result)
        try:
            entry = choose_series(result)
            chosen = entry.id
        except LoadError as exc:
            if not result.series:
                self._on_failed(str(exc))
                return
            dialog = SeriesBrowser(result, self)
            if self.interactive and dialog.exec() != QtWidgets.QDialog.DialogCode.Accepted:
                self.statusBar().showMessage("No series opened", 5000)
                return
            chosen = dialog.chosen_id()
        if chosen is not None:
            QtCore.QTimer.singleShot(0, lambda: self.open_path(path, series=chosen, overlays=self._pending_overlays,
                                                               target=target))

    def _show_study(self, folder: str, result) -> None:
        """The thumbnail strip of a folder with several series (hidden for a single series)."""
        if len(result.series) > 1:
            self.series_strip.show_study(folder, result)
            self.study_dock.show()
        else:
            self.study_dock.hide()

    def _on_loaded(self, volume: Volume) -> None:
        if self._closing:
            return
        path = self._loading_path
        folder = self.series_strip.folder
        if folder and os.path.abspath(path) == os.path.abspath(folder):
            self.series_strip.mark(self._loading_series)
        else:
            self.study_dock.hide()  # another study (or a file): the strip belongs to the folder opened before
        self.keeper.leave()  # the last edits of the series going away reach the disk first
        with self.keeper.quiet():  # the views put their measurements aside: nothing changed on disk
            self.state.set_volume(volume)
        self.keeper.arrive(self.state.volume)
        # the slice views paint first; the 3D view (about 1 s on a big series) follows
        QtCore.QTimer.singleShot(30, self._push_volume_3d)
        self.settings.add_recent(path)
        md = volume.metadata
        who = md.patient_name or md.patient_id or Path(path).name
        self.setWindowTitle(f"{APP_NAME} - {who} - {md.series_description or Path(path).name}")
        self.set_load_warnings(volume.warnings)
        self.position_label.setText("")  # the hover read-out of the previous series must not linger
        for overlay in self._pending_overlays:
            self.add_overlay(overlay)
        self._pending_overlays = []
        self.annotation.volume_loaded(volume)
        if self.comparison is not None:
            self.comparison.realign()  # a new main series: align the comparison with it afresh
        self.volume_loaded.emit(volume)

    # -- measurements kept between sessions --------------------------------------------------

    def _measurement_folder(self) -> Path:
        return config_dir() / "measurements"

    def _on_failed(self, message: str) -> None:
        self._report(message, self.load_failed, "Cannot open")

    def _report(self, message: str, signal, title: str) -> None:
        """A failure: status bar, signal for tests and scripts, and a message box for a person."""
        self.statusBar().showMessage(message.splitlines()[0], 15000)
        signal.emit(message)
        if self.interactive and not self._closing:
            QtWidgets.QMessageBox.warning(self, title, message)

    # -- AI --------------------------------------------------------------------------------

    def _update_device_label(self) -> None:
        from inference.core.device import select_device

        try:
            device = select_device("auto")
        except ValueError as exc:
            device = exc
        models = "" if self.model_box.count() else "  (no model with shipped weights installed)"
        self.device_label.setText(f"device: {device}{models}")

    def analyze(self, model=None, lungs: str | None = None, heatmap: str | None = None) -> None:
        """Run the chosen model (with the chosen lung mask method and heat map) on the open volume in a worker;
        results arrive by signal. `model`: a name or a ready classifier (tests); default: the pickers' choices."""
        if self.state.volume is None:
            self._report_analysis_failure("open a CT before analysing it")
            return
        model = model or self.model_box.currentText()
        if not model:
            self._report_analysis_failure("no AI model with shipped weights is installed (see `lunglens models`)")
            return
        if self._worker is not None and not self._worker.result_delivered:
            self.statusBar().showMessage("busy: wait for the current task or cancel it", 5000)
            return
        vol = self.state.volume
        problem = voxel_problem(vol.array)
        if problem:
            self._report_analysis_failure(f"not assessable: {problem}")
            return
        worker = AnalyzeWorker(vol.array, vol.spacing, model, lungs=lungs or self.lung_box.currentData() or "threshold",
                               heatmap=heatmap or (self.heatmap_box.currentData() if self.heatmap_box.isEnabled()
                                                   else None))
        worker.done.connect(self._on_analysis_done)
        worker.failed.connect(self._report_analysis_failure)
        self._start(worker, "analysing...")

    def _on_analysis_done(self, pred) -> None:
        if self._closing or self.state.volume is None or pred.heatmap.shape != self.state.shape:
            return  # the volume changed while the model ran
        add_prediction_layers(self.state, pred)
        self.annotation.set_ai_result(pred)
        vol = self.state.volume
        # the rules `screen` applies: a head CT or a sliver of lung gets no probability, only the reason
        problem = lung_problem(pred.lung_mask, vol.spacing, vol.metadata.body_part) or prediction_problem(pred)
        self.results.show_prediction(pred, problem)
        if pred.instances is not None and not problem and self._ai_column.indexOf(self.instances) < 0:
            self._ai_column.addWidget(self.instances)
        self.instances.show_prediction(None if problem else pred)
        self.ai_dock.raise_()
        self.statusBar().showMessage(f"not assessable: {problem}" if problem else
                                     f"P(COVID) {pred.positive_probability:.2f} ({pred.model})", 10000)
        self.analysis_done.emit(pred)

    def _export_instances(self, per_instance: bool, min_score: float) -> None:
        """Ask for a file (DICOM SEG for a DICOM series, else NIfTI), then `export_instances_to`."""
        mapping = self.annotation.mapping
        if mapping is None or self.instances.prediction is None:
            self._report("no lesion instances to export: run AI > Analyze with covid-ct-mask-net",
                         self.instances_failed, "Export instances")
            return
        filters = (["DICOM SEG (*.dcm)"] if mapping.is_dicom else []) + ["NIfTI label map (*.nii.gz)"]
        folder = Path(self.settings.last_folder or ".")
        suffix = ".dcm" if mapping.is_dicom else ".nii.gz"
        path, chosen = QtWidgets.QFileDialog.getSaveFileName(self, "Export lesion instances",
                                                             str(folder / f"lesion-instances{suffix}"),
                                                             ";;".join(filters))
        if path:
            if not path.lower().endswith((".nii.gz", ".nii", ".dcm")):
                path += ".dcm" if chosen.startswith("DICOM") else ".nii.gz"
            self.export_instances_to(path, per_instance, min_score)

    def export_instances_to(self, path: str | Path, per_instance: bool, min_score: float) -> None:
        """Save the lesion instances scoring at least `min_score` as a label map at `path` (its format by the
        suffix) and `<stem>.instances.json` beside it, in a worker; `instances_saved` or `instances_failed`."""
        from app.services.instance_export import instance_label_map, instances_json
        from viewer.core.version import lunglens_version
        from viewer.io.atomic_files import write_text_atomic
        from viewer.io.label_maps import file_format, save_label_map

        pred, mapping = self.instances.prediction, self.annotation.mapping
        if pred is None or pred.instances is None or pred.instance_labels is None or mapping is None:
            self._report("no lesion instances to export", self.instances_failed, "Export instances")
            return
        try:
            labels, table, records = instance_label_map(pred.instance_labels, pred.instances, min_score,
                                                        per_instance)
            target = Path(path)
            file_format(target)  # a .nii.gz, .nii or .dcm, else ValueError naming the file
            name = target.name
            stem = next((name[: -len(x)] for x in (".nii.gz", ".nii", ".dcm") if name.lower().endswith(x)), name)
            json_path = target.with_name(f"{stem}.instances.json")
        except ValueError as exc:
            self._report(str(exc), self.instances_failed, "Export instances")
            return
        algorithms = {v: ("AUTOMATIC", pred.model, lunglens_version()) for v in table.values()}

        def save() -> Path:
            out = save_label_map(target, labels, table, mapping, algorithms=algorithms)
            write_text_atomic(json_path, instances_json(records, min_score, pred.model, out.name))
            return out

        def done(out: Path) -> None:
            self.statusBar().showMessage(f"saved {len(records)} lesion instance(s) to {out} and {json_path.name}",
                                         10000)
            self.instances_saved.emit(str(out))

        self.annotation.run_in_worker(save, done, lambda m: self._report(
            f"the lesion instances were not saved: {m}", self.instances_failed, "Export instances"))

    def _report_analysis_failure(self, message: str) -> None:
        self._report(message, self.analysis_failed, "Analysis")

    # -- overlays ----------------------------------------------------------------------------

    def add_overlay_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Add mask overlay", self.settings.last_folder,
                                                        "Label volumes (*.nii *.nii.gz *.nrrd *.mha)")
        if path:
            self.add_overlay(path)

    def add_overlay(self, path: str) -> LabelLayer | HeatmapLayer | None:
        """Show a label/mask file, or a float map as a heat map, over the CT (resampled onto its grid if needed).

        A refused file is reported (`overlay_failed`, and a message box for a person); the CT stays.
        """
        if self.state.volume is None:
            self._report("open a CT before adding a mask overlay", self.overlay_failed, "Cannot add overlay")
            return None
        try:
            kind, data = read_overlay_on_grid(path, self.state.volume)
        except LoadError as exc:
            self._report(str(exc), self.overlay_failed, "Cannot add overlay")
            return None
        name = Path(path).name
        suffix = volume_suffix(path)
        name = name[: -len(suffix)] if suffix else name
        layer = heatmap_overlay_layer(name, data) if kind == "heatmap" else LabelLayer(name, data)
        return self.state.layers.add(layer, self.state.shape)

    def _push_volume_3d(self) -> None:
        if hasattr(self.view3d, "set_volume") and self.state.volume is not None:
            self.view3d.set_volume(self.state.volume)
            self.sync_3d_labels()
            self._push_cursor_3d()

    def sync_3d_labels(self) -> None:
        """Show the label surfaces of the annotation layer (else the first visible label layer) in 3D."""
        if not hasattr(self.view3d, "set_labels") or getattr(self.view3d, "renderer", None) is None:
            return
        renderer_volume = getattr(self.view3d.renderer, "volume", None)
        if renderer_volume is None or renderer_volume.shape != self.state.shape:
            return  # the 3D view gets the labels once it has this volume
        candidates = [layer for layer in self.state.layers if isinstance(layer, LabelLayer) and layer.visible]
        candidates.sort(key=lambda layer: layer is not self.annotation.layer)
        labels = candidates[0] if candidates else None
        if labels is None:
            self.view3d.set_labels(None, {})
            return
        colors = {v: tuple(c / 255 for c in rgb) for v, rgb in labels.colors.items()}
        visible = {v for v in colors if v not in labels.hidden_labels}
        lungs_translucent = {1: 0.25, 2: 0.25}  # lesions stay opaque inside them
        self.view3d.set_labels(labels.data, colors, visible, lungs_translucent)

    # -- the annotation controller's host (`AnnotationHost`) ---------------------------------

    def dialog_parent(self) -> QtWidgets.QWidget:
        return self

    def redraw_labels(self, layer: LabelLayer, box: Box) -> None:
        for view in self.views.values():
            view.refresh_layer(layer, box)

    def refresh_label_surfaces(self) -> None:
        """The 3D view rebuilds the label surfaces, once edits paused, and only while it is on show."""
        if hasattr(self.view3d, "labels_edited"):
            self.view3d.labels_edited()
            if self.view3d.isVisible():
                self.sync_3d_labels()

    # -- cursor / status ---------------------------------------------------------------------

    def set_load_warnings(self, warnings: tuple[str, ...] | list[str]) -> None:
        """Keep the open series' load warnings (gantry tilt, uneven spacing, ...) behind a status-bar button."""
        self.load_warnings = list(warnings)
        n = len(self.load_warnings)
        self.warnings_button.setText(f"⚠ {n} warning{'s' if n != 1 else ''}")
        self.warnings_button.setVisible(n > 0)
        self.layer_panel.setToolTip("\n".join(self.load_warnings))
        if n:
            self.statusBar().showMessage(f"warning: {self.load_warnings[0]}" + (f" (+{n - 1} more)" if n > 1 else ""),
                                         10000)

    def show_warnings(self) -> None:
        """The load warnings of the open series, in a dialog (non-interactive windows: nothing to show)."""
        if not self.load_warnings or not self.interactive:
            return
        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("Warnings about this series")
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setText("\n\n".join(self.load_warnings))
        box.exec()

    def _on_cursor(self, _cursor) -> None:
        self._cursor3d_timer.start()  # debounced: the 3D render must not slow slice scrolling

    def _push_cursor_3d(self) -> None:
        if hasattr(self.view3d, "set_cursor") and self.state.volume is not None:
            self.view3d.set_cursor(self.state.cursor)

    def _show_hover(self, voxel, state: ViewerState | None = None) -> None:
        """The read-out of the voxel under the mouse, in the series of `state` (default: the main one)."""
        state = state or self.state
        if voxel is None or state.volume is None:
            self.position_label.setText("")
            return
        k, j, i = (int(v) for v in voxel)
        p = state.volume.index_to_lps((k, j, i))
        hu = state.hu_at((k, j, i))
        prefix = "comparison: " if state is not self.state else ""
        self.position_label.setText(f"{prefix}voxel ({i}, {j}, {k})   LPS ({p[0]:.1f}, {p[1]:.1f}, {p[2]:.1f}) mm   "
                                    f"{hu:.0f} HU")

    # -- screenshots, drag and drop, close ---------------------------------------------------

    def screenshot_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save screenshot", "lunglens.png", "PNG (*.png)")
        if path:
            self.save_screenshot(path)

    def render_all(self) -> None:
        """Bring every view up to date now (screenshots, tests)."""
        for view in self.slice_views():
            view.refresh_now()
        if self.state.volume is not None and getattr(self.view3d, "renderer", None) is not None:
            if self.view3d.renderer.volume is not self.state.volume:
                self._push_volume_3d()
            if hasattr(self.view3d, "wait_for_surfaces"):
                self.view3d.wait_for_surfaces()  # built in a worker; a screenshot shows them
            self.view3d.render_now()
        QtWidgets.QApplication.processEvents()

    def save_screenshot(self, path: str) -> Path:
        self.render_all()
        image = self.grab()
        if not image.save(str(path)):
            raise OSError(f"cannot write screenshot {path}")
        return Path(path)

    def dragEnterEvent(self, ev: QtGui.QDragEnterEvent) -> None:
        if ev.mimeData().hasUrls() and any(u.isLocalFile() for u in ev.mimeData().urls()):
            ev.acceptProposedAction()

    def dropEvent(self, ev: QtGui.QDropEvent) -> None:
        paths = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if paths:
            self.open_path(paths[0])
            ev.acceptProposedAction()

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:
        if not self.annotation.resolve_unsaved(then=self.close):
            ev.ignore()
            return
        self.keeper.flush()
        if self.comparison is not None:
            self.comparison.keeper.flush()
        self.join_workers()  # first: a result arriving meanwhile is dropped, not handed to the annotation
        if getattr(self, "_worklist", None) is not None:
            self._worklist.close()  # its running cases finish and are cached
        self.annotation.shutdown()
        if self.persist:
            try:
                self.settings.save()
            except OSError:
                pass
        if hasattr(self.view3d, "shutdown"):
            self.view3d.shutdown()
        super().closeEvent(ev)

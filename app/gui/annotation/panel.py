"""The Annotation dock: label table, tools and their settings, whole-label operations, AI import, statistics.

Widgets forward to the `AnnotationController`; they follow its `edited` / `labels_changed` signals and are
updated with their signals blocked, so nothing echoes back.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.annotation.controller import AI_PARTS, AnnotationController, table_rows
from viewer.labels.session import HU_CHOICES, MAX_BRUSH_MM, MIN_BRUSH_MM, hu_choice
from viewer.labels.stats import LabelStats

HU_LABELS = {"none": "none", "ggo": "GGO (-750..-300)", "consolidation": "consolidation (-300..+50)",
             "custom": "custom"}
STATS_DELAY_MS = 1000
_COLUMNS = ("", "name", "value", "show", "lock")
_SWATCH, _NAME, _VALUE, _SHOW, _LOCK = range(5)


class AnnotationPanel(QtWidgets.QScrollArea):
    """The dock's contents (scrollable: it is taller than a small screen)."""

    def __init__(self, controller: AnnotationController, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._rows: list = []
        body = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addWidget(self._build_labels())
        layout.addWidget(self._build_tools())
        layout.addWidget(self._build_operations())
        layout.addWidget(self._build_ai())
        layout.addWidget(self._build_stats(), 1)
        self.setWidget(body)
        self.setWidgetResizable(True)
        self._stats_timer = QtCore.QTimer(self, singleShot=True, interval=STATS_DELAY_MS)
        self._stats_timer.timeout.connect(self._auto_stats)
        controller.edited.connect(self.sync)
        controller.labels_changed.connect(self.sync)
        controller.labels_changed.connect(lambda: self.stats.setRowCount(0))
        controller.edited.connect(self._stats_timer.start)
        controller.stats_ready.connect(self.show_stats)
        controller.ai_available.connect(self.ai_button.setEnabled)
        self.sync()

    # -- construction ------------------------------------------------------------------------------

    def _build_labels(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Labels (click to paint with; keys 1-9)")
        self.table = QtWidgets.QTableWidget(0, len(_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_COLUMNS))
        _compact(self.table)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.DoubleClicked)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(_NAME, QtWidgets.QHeaderView.ResizeMode.Stretch)
        for col in (_SWATCH, _VALUE, _SHOW, _LOCK):
            header.setSectionResizeMode(col, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(150)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.cellDoubleClicked.connect(lambda row, col: self.recolor() if col == _SWATCH else None)
        self.table.setToolTip("double-click a name to rename, the colour to recolour")
        buttons = QtWidgets.QHBoxLayout()
        buttons.setSpacing(2)
        for text, slot in (("Add", self.add_label), ("Rename", self.rename), ("Colour", self.recolor),
                           ("Delete", self.delete)):
            b = QtWidgets.QToolButton()
            b.setText(text)
            b.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        col = QtWidgets.QVBoxLayout(box)
        col.addWidget(self.table)
        col.addLayout(buttons)
        return box

    def _build_tools(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Tools")
        self.tool_row = QtWidgets.QGridLayout()
        self.tool_row.setSpacing(2)
        s = self.controller.settings
        self.size = QtWidgets.QDoubleSpinBox()
        self.size.setRange(MIN_BRUSH_MM, MAX_BRUSH_MM)
        self.size.setSingleStep(0.5)
        self.size.setDecimals(1)
        self.size.setSuffix(" mm")
        self.size.setValue(s.diameter_mm)
        self.size.setToolTip("brush, sphere and eraser diameter ([ and ] change it)")
        self.size.valueChanged.connect(self.controller.set_brush_size)
        self.hu = QtWidgets.QComboBox()
        for name in (*HU_CHOICES, "custom"):
            self.hu.addItem(HU_LABELS[name], name)
        self.hu.setToolTip("paint only voxels in this HU range (brush, sphere, fill, lasso; not the eraser)")
        self.hu_lo, self.hu_hi = QtWidgets.QSpinBox(), QtWidgets.QSpinBox()
        for spin, value in ((self.hu_lo, -1000), (self.hu_hi, 100)):
            spin.setRange(-3000, 5000)
            spin.setSingleStep(10)
            spin.setValue(value)
            spin.valueChanged.connect(self._apply_hu)
        self.hu.currentIndexChanged.connect(self._apply_hu)
        custom_row = QtWidgets.QHBoxLayout()
        custom_row.addWidget(self.hu_lo, 1)
        custom_row.addWidget(QtWidgets.QLabel("to"))
        custom_row.addWidget(self.hu_hi, 1)
        self.over = QtWidgets.QComboBox()
        self.over.addItems(["all unlocked labels", "background only"])
        self.over.currentIndexChanged.connect(lambda i: setattr(self.controller.settings, "background_only", i == 1))
        self.fill_mode = QtWidgets.QComboBox()
        self.fill_mode.addItems(["2D (this slice)", "3D"])
        self.fill_mode.currentIndexChanged.connect(lambda i: setattr(self.controller.settings, "fill_3d", i == 1))
        self.extent = QtWidgets.QDoubleSpinBox()
        self.extent.setRange(5, 1000)
        self.extent.setDecimals(0)
        self.extent.setSuffix(" mm")
        self.extent.setValue(s.max_extent_mm)
        self.extent.setToolTip("the fill stays within a box this wide around the click")
        self.extent.valueChanged.connect(lambda v: setattr(self.controller.settings, "max_extent_mm", float(v)))
        self.fill_limit = QtWidgets.QDoubleSpinBox()
        self.fill_limit.setRange(1, 10000)
        self.fill_limit.setDecimals(0)
        self.fill_limit.setSuffix(" mL")
        self.fill_limit.setValue(s.max_fill_ml)
        self.fill_limit.setToolTip("a fill larger than this is refused with its size: it probably leaked (into the "
                                   "mediastinum, the aorta...)")
        self.fill_limit.valueChanged.connect(lambda v: setattr(self.controller.settings, "max_fill_ml", float(v)))
        form = QtWidgets.QFormLayout()
        form.addRow("size", self.size)
        form.addRow("HU range", self.hu)
        form.addRow("", custom_row)
        form.addRow("paint over", self.over)
        form.addRow("fill", self.fill_mode)
        form.addRow("fill at most", self.extent)
        form.addRow("fill volume limit", self.fill_limit)
        for combo in (self.hu, self.over, self.fill_mode):
            combo.setSizeAdjustPolicy(QtWidgets.QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(10)
        col = QtWidgets.QVBoxLayout(box)
        col.addLayout(self.tool_row)
        col.addLayout(form)
        self._apply_hu()
        return box

    def _build_operations(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Edit the active label")
        c = self.controller
        self.undo_button = QtWidgets.QPushButton("Undo")
        self.undo_button.clicked.connect(c.undo)
        self.redo_button = QtWidgets.QPushButton("Redo")
        self.redo_button.clicked.connect(c.redo)
        interp = QtWidgets.QPushButton("Interpolate slices")
        interp.setToolTip("fill the slices between drawn slices (along the plane last drawn on)")
        interp.clicked.connect(c.interpolate)
        self.island_ml = QtWidgets.QDoubleSpinBox()
        self.island_ml.setRange(0.001, 1000)
        self.island_ml.setDecimals(3)
        self.island_ml.setValue(0.1)
        self.island_ml.setSuffix(" mL")
        islands = QtWidgets.QPushButton("Remove islands <")
        islands.clicked.connect(lambda: c.remove_islands(self.island_ml.value()))
        largest = QtWidgets.QPushButton("Keep largest")
        largest.clicked.connect(c.keep_largest)
        self.smooth_mm = QtWidgets.QDoubleSpinBox()
        self.smooth_mm.setRange(0.5, 20)
        self.smooth_mm.setValue(2.0)
        self.smooth_mm.setSuffix(" mm")
        smooth = QtWidgets.QPushButton("Smooth")
        smooth.clicked.connect(lambda: c.smooth(self.smooth_mm.value()))
        grid = QtWidgets.QGridLayout(box)
        grid.addWidget(self.undo_button, 0, 0)
        grid.addWidget(self.redo_button, 0, 1)
        grid.addWidget(interp, 1, 0)
        grid.addWidget(largest, 1, 1)
        grid.addWidget(islands, 2, 0)
        grid.addWidget(self.island_ml, 2, 1)
        grid.addWidget(smooth, 3, 0)
        grid.addWidget(self.smooth_mm, 3, 1)
        return box

    def _build_ai(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Start from the AI result")
        self.ai_part = QtWidgets.QComboBox()
        self.ai_part.addItems(AI_PARTS)
        self.ai_mode = QtWidgets.QComboBox()
        self.ai_mode.addItem("merge", "merge")
        self.ai_mode.addItem("replace", "replace")
        self.ai_mode.setToolTip("merge: only the AI's voxels change; replace: every unlocked voxel becomes the AI's")
        self.ai_button = QtWidgets.QPushButton("Start from AI result")
        self.ai_button.setEnabled(False)
        self.ai_button.setToolTip("copy the AI's lung and/or lesion masks into the label map (AI > Analyze first)")
        self.ai_button.clicked.connect(
            lambda: self.controller.start_from_ai(self.ai_part.currentText(), self.ai_mode.currentData()))
        grid = QtWidgets.QGridLayout(box)
        grid.addWidget(self.ai_part, 0, 0)
        grid.addWidget(self.ai_mode, 0, 1)
        grid.addWidget(self.ai_button, 1, 0, 1, 2)
        return box

    def _build_stats(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Statistics")
        self.stats = QtWidgets.QTableWidget(0, 5)
        self.stats.setHorizontalHeaderLabels(["", "voxels", "mL", "HU", "% lung"])
        _compact(self.stats)
        self.stats.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.stats.horizontalHeader()
        header.setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QtWidgets.QHeaderView.ResizeMode.Stretch)  # fits the dock: no side scrolling
        header.setMinimumSectionSize(20)
        self.stats.setToolTip("per label: voxels, volume, mean and sd of HU, share of the lungs (lung labels and "
                              "the lesions painted over them; without lung labels the AI's lung mask, else -)")
        self.stats.setMinimumHeight(140)
        refresh = QtWidgets.QPushButton("Refresh")
        refresh.clicked.connect(self.controller.request_stats)
        col = QtWidgets.QVBoxLayout(box)
        col.addWidget(self.stats, 1)
        col.addWidget(refresh, 0, QtCore.Qt.AlignmentFlag.AlignRight)
        return box

    def set_tool_actions(self, actions: list[QtGui.QAction]) -> None:
        """Buttons for the window's tool actions (checked state shared with the menu and the toolbar)."""
        for n, act in enumerate(actions):
            b = QtWidgets.QToolButton()
            b.setDefaultAction(act)
            b.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
            b.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
            self.tool_row.addWidget(b, n // 3, n % 3)

    # -- model -> widgets ------------------------------------------------------------------------

    def sync(self) -> None:
        """Show the controller's state: table rows, active label, brush size, undo/redo, saved state."""
        c = self.controller
        labels = c.labels
        if labels is None:
            self.status.setText("No label map: pick a tool and paint, or File > New / Open label map.")
        else:
            where = c.path.name if c.path is not None else "not saved yet"
            dirty = "  <b>unsaved edits</b>" if labels.dirty else ""
            self.status.setText(f"Label map: {where}{dirty}")
        rows = table_rows(labels.table) if labels is not None else []
        if rows != self._rows:
            self._fill_table(rows)
        self._select(c.settings.value)
        with QtCore.QSignalBlocker(self.size):
            self.size.setValue(c.settings.diameter_mm)
        self.undo_button.setEnabled(labels is not None and labels.can_undo)
        self.redo_button.setEnabled(labels is not None and labels.can_redo)
        self.ai_button.setEnabled(c.ai_masks is not None)

    def _fill_table(self, rows: list) -> None:
        self._rows = rows
        flags = QtCore.Qt.ItemFlag
        with QtCore.QSignalBlocker(self.table):
            self.table.setRowCount(len(rows))
            for r, (value, name, color, visible, locked) in enumerate(rows):
                swatch = QtWidgets.QTableWidgetItem()
                swatch.setBackground(QtGui.QColor(*color))
                swatch.setFlags(flags.ItemIsEnabled | flags.ItemIsSelectable)
                name_item = QtWidgets.QTableWidgetItem(name)
                name_item.setFlags(flags.ItemIsEnabled | flags.ItemIsSelectable | flags.ItemIsEditable)
                value_item = QtWidgets.QTableWidgetItem(str(value))
                value_item.setFlags(flags.ItemIsEnabled | flags.ItemIsSelectable)
                value_item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
                items = [swatch, name_item, value_item]
                for on in (visible, locked):
                    check = QtWidgets.QTableWidgetItem()
                    check.setFlags(flags.ItemIsEnabled | flags.ItemIsSelectable | flags.ItemIsUserCheckable)
                    check.setCheckState(QtCore.Qt.CheckState.Checked if on else QtCore.Qt.CheckState.Unchecked)
                    items.append(check)
                for col, item in enumerate(items):
                    item.setData(QtCore.Qt.ItemDataRole.UserRole, value)
                    self.table.setItem(r, col, item)

    def _select(self, value: int) -> None:
        values = [r[0] for r in self._rows]
        with QtCore.QSignalBlocker(self.table):
            if value in values:
                self.table.selectRow(values.index(value))
            else:
                self.table.clearSelection()

    def show_stats(self, stats: list[LabelStats]) -> None:
        """One row per label: value (its colour; the name as tooltip), voxels, mL, HU mean ± sd, % of the lungs."""
        labels = self.controller.labels
        self.stats.setRowCount(len(stats))
        for r, s in enumerate(stats):
            hu = "" if s.mean_hu is None else f"{s.mean_hu:.0f} \u00b1 {s.std_hu:.0f}"
            share = "-" if s.percent_of_lung is None else f"{s.percent_of_lung:.1f}"
            cells = (str(s.value), str(s.voxels), f"{s.volume_ml:.1f}", hu, share)
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(s.name)
                if col:
                    item.setTextAlignment(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter)
                elif labels is not None and s.value in labels.table:
                    item.setBackground(QtGui.QColor(*labels.table[s.value].color))
                self.stats.setItem(r, col, item)

    def _auto_stats(self) -> None:
        if self.isVisible() and self.controller.labels is not None:
            self.controller.request_stats()

    # -- widgets -> model --------------------------------------------------------------------------

    def _value_of_row(self, row: int) -> int | None:
        item = self.table.item(row, _VALUE)
        return int(item.data(QtCore.Qt.ItemDataRole.UserRole)) if item is not None else None

    def current_value(self) -> int | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self._value_of_row(rows[0].row()) if rows else None

    def _on_selection(self) -> None:
        value = self.current_value()
        if value is not None:
            self.controller.set_active_label(value)

    def _on_item_changed(self, item: QtWidgets.QTableWidgetItem) -> None:
        labels = self.controller.labels
        value = item.data(QtCore.Qt.ItemDataRole.UserRole)
        if labels is None or value is None:
            return
        checked = item.checkState() == QtCore.Qt.CheckState.Checked
        try:
            if item.column() == _SHOW:
                labels.set_label_display(int(value), visible=checked)
            elif item.column() == _LOCK:
                labels.set_label_display(int(value), locked=checked)
            elif item.column() == _NAME and item.text().strip() != labels.table[int(value)].name:
                labels.rename_label(int(value), item.text())
        except ValueError as exc:
            self._rows = []  # show the table as it is
            self.controller.show_status(str(exc), 6000)
        self.sync()

    def add_label(self) -> None:
        labels = self.controller.ensure_labels()
        if labels is None:
            return
        name, ok = self._ask_text("Add label", "Name of the new label:", f"label {labels.table.next_value()}")
        if ok:
            try:
                info = labels.add_label(name)
            except ValueError as exc:
                self.controller.show_status(str(exc), 6000)
                return
            self.controller.set_active_label(info.value)

    def rename(self) -> None:
        labels, value = self.controller.labels, self.current_value()
        if labels is None or value is None:
            return
        name, ok = self._ask_text("Rename label", "New name:", labels.table[value].name)
        if ok:
            try:
                labels.rename_label(value, name)
            except ValueError as exc:
                self.controller.show_status(str(exc), 6000)

    def recolor(self) -> None:
        labels, value = self.controller.labels, self.current_value()
        if labels is None or value is None:
            return
        color = QtWidgets.QColorDialog.getColor(QtGui.QColor(*labels.table[value].color), self, "Label colour")
        if color.isValid():
            labels.recolor_label(value, (color.red(), color.green(), color.blue()))

    def delete(self) -> None:
        labels, value = self.controller.labels, self.current_value()
        if labels is None or value is None:
            return
        if self.controller.interactive:
            sure = QtWidgets.QMessageBox.question(
                self, "Delete label", f"Delete label {value} ({labels.table[value].name}) and clear its voxels?")
            if sure != QtWidgets.QMessageBox.StandardButton.Yes:
                return
        try:
            labels.delete_label(value)
        except ValueError as exc:
            self.controller.show_status(str(exc), 6000)

    def _ask_text(self, title: str, prompt: str, default: str) -> tuple[str, bool]:
        if not self.controller.interactive:
            return default, True
        text, ok = QtWidgets.QInputDialog.getText(self, title, prompt, text=default)
        return text.strip(), ok and bool(text.strip())

    def _apply_hu(self) -> None:
        name = self.hu.currentData()
        custom = name == "custom"
        self.hu_lo.setEnabled(custom)
        self.hu_hi.setEnabled(custom)
        if custom:
            lo, hi = sorted((float(self.hu_lo.value()), float(self.hu_hi.value())))
            rng: tuple[float, float] | None = (lo, hi)
        else:
            rng = HU_CHOICES[name]
            if rng is not None:
                with QtCore.QSignalBlocker(self.hu_lo), QtCore.QSignalBlocker(self.hu_hi):
                    self.hu_lo.setValue(int(rng[0]))
                    self.hu_hi.setValue(int(rng[1]))
        self.controller.settings.hu_range = rng

    def set_hu_range(self, hu_range: tuple[float, float] | None) -> None:
        """Select a range (a preset's entry when it is one, else custom)."""
        name = hu_choice(hu_range)
        if name == "custom" and hu_range is not None:
            with QtCore.QSignalBlocker(self.hu_lo), QtCore.QSignalBlocker(self.hu_hi):
                self.hu_lo.setValue(int(hu_range[0]))
                self.hu_hi.setValue(int(hu_range[1]))
        self.hu.setCurrentIndex(self.hu.findData(name))
        self._apply_hu()


def _compact(table: QtWidgets.QTableWidget) -> None:
    """Rows one text line high, no row numbers, no wrapping."""
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)
    table.setWordWrap(False)

"""The layer list: toggle, opacity, colour map and threshold of each overlay."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from viewer.state.layers import COLORMAPS, HeatmapLayer, LabelLayer, LayerList


class LayerPanel(QtWidgets.QWidget):
    """Lists the overlay layers; edits go to the layer model, the views follow its events."""

    def __init__(self, layers: LayerList, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers = layers
        self.list = QtWidgets.QListWidget()
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.threshold = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.colormap = QtWidgets.QComboBox()
        self.colormap.addItems(COLORMAPS)
        self.outline = QtWidgets.QCheckBox("outline only")
        self.outline.setToolTip("draw each label's outline instead of filling it (the tissue under it stays visible)")
        self.outline.toggled.connect(lambda on: self._edit(outline=on, labels_only=True))
        self.labels = QtWidgets.QTableWidget(0, 3)
        self.labels.setHorizontalHeaderLabels(["", "label", "opacity"])
        self.labels.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.Stretch)
        self.labels.verticalHeader().hide()
        self.labels.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.labels.setToolTip("tick to show a label; double-click the colour to change it")
        self.labels.itemChanged.connect(self._on_label_toggled)
        self.labels.cellDoubleClicked.connect(self._pick_color)
        form = QtWidgets.QFormLayout()
        form.addRow("opacity", self.opacity)
        form.addRow("threshold", self.threshold)
        form.addRow("colour map", self.colormap)
        form.addRow("", self.outline)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 2)
        layout.addWidget(self.labels, 1)
        layout.addLayout(form)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentRowChanged.connect(lambda _r: self._sync_controls())
        self.opacity.valueChanged.connect(lambda v: self._edit(opacity=v / 100))
        self.threshold.valueChanged.connect(lambda v: self._edit(threshold=v / 100, heat_only=True))
        self.colormap.currentTextChanged.connect(lambda name: self._edit(colormap=name, heat_only=True))
        layers.changed.connect(lambda _l: self.rebuild())
        layers.layer_changed.connect(lambda _l: self._sync_controls())
        layers.layer_changed.connect(self._sync_visibility)
        self.rebuild()

    def rebuild(self) -> None:
        current = self.list.currentRow()
        with QtCore.QSignalBlocker(self.list):
            self.list.clear()
            for layer in self.layers:
                kind = "heat map" if isinstance(layer, HeatmapLayer) else "labels"
                item = QtWidgets.QListWidgetItem(f"{layer.name}  ({kind})")
                item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(QtCore.Qt.CheckState.Checked if layer.visible else QtCore.Qt.CheckState.Unchecked)
                self.list.addItem(item)
        if len(self.layers):
            self.list.setCurrentRow(min(max(current, 0), len(self.layers) - 1))
        self._sync_controls()

    def _sync_visibility(self, layer) -> None:
        """A layer shown or hidden elsewhere (a shortcut, the annotation tools): its tick follows."""
        for row, other in enumerate(self.layers):
            item = self.list.item(row)
            if other is layer and item is not None:
                state = QtCore.Qt.CheckState.Checked if layer.visible else QtCore.Qt.CheckState.Unchecked
                if item.checkState() != state:
                    with QtCore.QSignalBlocker(self.list):
                        item.setCheckState(state)

    def current_layer(self):
        row = self.list.currentRow()
        return self.layers[row] if 0 <= row < len(self.layers) else None

    def _on_item_changed(self, item: QtWidgets.QListWidgetItem) -> None:
        row = self.list.row(item)
        if 0 <= row < len(self.layers):
            self.layers[row].update(visible=item.checkState() == QtCore.Qt.CheckState.Checked)

    def _edit(self, heat_only: bool = False, labels_only: bool = False, **changes) -> None:
        layer = self.current_layer()
        if layer is None or (heat_only and not isinstance(layer, HeatmapLayer)):
            return
        if labels_only and not isinstance(layer, LabelLayer):
            return
        if any(getattr(layer, k) != v for k, v in changes.items()):
            layer.update(**changes)

    def _sync_controls(self) -> None:
        """Show the selected layer's values without echoing them back (signals blocked)."""
        layer = self.current_layer()
        heat = isinstance(layer, HeatmapLayer)
        for w in (self.opacity, self.threshold, self.colormap):
            w.setEnabled(layer is not None and (w is self.opacity or heat))
        self.outline.setEnabled(isinstance(layer, LabelLayer))
        self._fill_labels(layer if isinstance(layer, LabelLayer) else None)
        if layer is None:
            return
        if isinstance(layer, LabelLayer):
            with QtCore.QSignalBlocker(self.outline):
                self.outline.setChecked(layer.outline)
        with QtCore.QSignalBlocker(self.opacity):
            self.opacity.setValue(int(round(layer.opacity * 100)))
        if heat:
            with QtCore.QSignalBlocker(self.threshold), QtCore.QSignalBlocker(self.colormap):
                self.threshold.setValue(int(round(layer.threshold * 100)))
                self.colormap.setCurrentText(layer.colormap)

    # -- per-label colour and visibility ---------------------------------------------------------

    def _fill_labels(self, layer: LabelLayer | None) -> None:
        with QtCore.QSignalBlocker(self.labels):
            values = sorted(layer.colors) if layer is not None else []
            self.labels.setRowCount(len(values))
            for row, value in enumerate(values):
                swatch = QtWidgets.QTableWidgetItem()
                swatch.setBackground(QtGui.QColor(*layer.colors[value]))
                swatch.setData(QtCore.Qt.ItemDataRole.UserRole, value)
                name = QtWidgets.QTableWidgetItem(f"{value}  {layer.names.get(value, '')}")
                name.setFlags(name.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
                hidden = value in layer.hidden_labels
                name.setCheckState(QtCore.Qt.CheckState.Unchecked if hidden else QtCore.Qt.CheckState.Checked)
                self.labels.setItem(row, 0, swatch)
                self.labels.setItem(row, 1, name)
                spin = self.labels.cellWidget(row, 2)
                if not isinstance(spin, QtWidgets.QSpinBox) or spin.property("label") != value:
                    # a new row: its spin box (an existing one is kept: it may be the one sending the change)
                    spin = QtWidgets.QSpinBox()
                    spin.setRange(0, 100)
                    spin.setSuffix(" %")
                    spin.setProperty("label", value)
                    spin.setToolTip("this label's opacity, times the layer's")
                    spin.valueChanged.connect(lambda pct, v=value: self.set_label_opacity(v, pct / 100))
                    self.labels.setCellWidget(row, 2, spin)
                with QtCore.QSignalBlocker(spin):
                    spin.setValue(int(round(100 * layer.label_opacity.get(value, 1.0))))
            self.labels.setColumnWidth(0, 22)
            self.labels.setVisible(layer is not None)

    def _label_value(self, row: int) -> int:
        return int(self.labels.item(row, 0).data(QtCore.Qt.ItemDataRole.UserRole))

    def _on_label_toggled(self, item: QtWidgets.QTableWidgetItem) -> None:
        layer = self.current_layer()
        if not isinstance(layer, LabelLayer) or item.column() != 1:
            return
        value = self._label_value(item.row())
        hidden = set(layer.hidden_labels)
        if item.checkState() == QtCore.Qt.CheckState.Checked:
            hidden.discard(value)
        else:
            hidden.add(value)
        layer.update(hidden_labels=hidden)

    def _pick_color(self, row: int, column: int) -> None:
        layer = self.current_layer()
        if not isinstance(layer, LabelLayer) or column != 0:
            return
        value = self._label_value(row)
        color = QtWidgets.QColorDialog.getColor(QtGui.QColor(*layer.colors[value]), self, "Label colour")
        if color.isValid():
            self.set_label_color(value, (color.red(), color.green(), color.blue()))

    def set_label_opacity(self, value: int, opacity: float) -> None:
        """One label's opacity (0-1, times the layer's): lungs faint, lesions strong."""
        layer = self.current_layer()
        if isinstance(layer, LabelLayer) and layer.label_opacity.get(value, 1.0) != opacity:
            layer.update(label_opacity={**layer.label_opacity, value: opacity})

    def set_label_color(self, value: int, rgb: tuple[int, int, int]) -> None:
        layer = self.current_layer()
        if isinstance(layer, LabelLayer):
            layer.update(colors={**layer.colors, value: rgb})

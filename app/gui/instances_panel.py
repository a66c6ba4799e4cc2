"""The AI dock's lesion-instance list (COVID-CT-Mask-Net): a minimum-score slider that hides the instances below
it in the AI overlay, a list with jump-to, and export as DICOM SEG / NIfTI plus JSON."""

from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtWidgets

from app.services.instance_export import kept
from inference.core.choices import MIN_INSTANCE_SCORE
from inference.core.prediction import Prediction
from inference.screening.pipelines.instances import INSTANCE_LESION_LABEL
from viewer.state.layers import LabelLayer
from viewer.state.view_state import ViewerState

SETTLE_MS = 120


class InstancesPanel(QtWidgets.QWidget):
    """Shown only for a result with lesion instances.

    Signals: export_requested(bool per_instance, float min_score): the window asks for a file and saves.
    """

    export_requested = QtCore.Signal(bool, float)

    def __init__(self, state: ViewerState, mask_layer: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.state, self.mask_layer = state, mask_layer
        self.prediction: Prediction | None = None
        self.title = QtWidgets.QLabel("Lesion instances")
        self.title.setStyleSheet("font-weight: bold;")
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(int(MIN_INSTANCE_SCORE * 100))
        self.slider.setToolTip("instances scoring below this are hidden in the overlay and the list, and not saved")
        self.score_label = QtWidgets.QLabel()
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["#", "slice", "score", "area mm²"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setToolTip("click an instance to move the crosshair to it")
        self.table.cellClicked.connect(lambda row, _col: self.go_to(row))
        self.table.setMinimumHeight(80)
        self.table.setMaximumHeight(170)  # the case's headline, plot and zones above keep their room
        self.per_instance = QtWidgets.QComboBox()
        self.per_instance.addItem("one segment per instance", True)
        self.per_instance.addItem("all merged in one segment", False)
        self.export_button = QtWidgets.QPushButton("Export instances...")
        self.export_button.setToolTip("save the shown instances as DICOM SEG or NIfTI, with a JSON list beside it")
        self.export_button.clicked.connect(
            lambda: self.export_requested.emit(bool(self.per_instance.currentData()), self.min_score))
        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("min score"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.score_label)
        export = QtWidgets.QHBoxLayout()
        export.addWidget(self.per_instance, 1)
        export.addWidget(self.export_button)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(row)
        layout.addWidget(self.table)
        layout.addLayout(export)
        # a drag sends many values: the list and overlay follow once it rests for a moment
        self._settle = QtCore.QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.refresh)
        self.slider.valueChanged.connect(self._slid)
        state.volume_changed.connect(lambda _v: self.show_prediction(None))
        self.hide()

    @property
    def min_score(self) -> float:
        return self.slider.value() / 100.0

    def show_prediction(self, pred: Prediction | None) -> None:
        """Show `pred`'s instances (hidden when it has none)."""
        has = pred is not None and pred.instances is not None and pred.instance_labels is not None
        self.prediction = pred if has else None
        self.setVisible(has)
        if has:
            self.refresh()

    def _slid(self, _value: int) -> None:
        self.score_label.setText(f"{self.min_score:.2f}")
        self._settle.start()

    def shown(self) -> list[dict]:
        """The instances at or above the slider, best first."""
        if self.prediction is None or self.prediction.instances is None:
            return []
        return kept(self.prediction.instances, self.min_score)

    def refresh(self) -> None:
        """The list and the overlay for the slider's score."""
        pred = self.prediction
        self.score_label.setText(f"{self.min_score:.2f}")
        if pred is None or pred.instance_labels is None:
            return
        rows = self.shown()
        total = len(pred.instances or [])
        self.title.setText(f"Lesion instances: {len(rows)} of {total} at score >= {self.min_score:.2f}")
        self.table.setRowCount(len(rows))
        for n, r in enumerate(rows):
            for col, value in enumerate((str(n + 1), str(r["slice"]), f"{r['score']:.2f}", f"{r['area_mm2']:.0f}")):
                self.table.setItem(n, col, QtWidgets.QTableWidgetItem(value))
        self.export_button.setEnabled(bool(rows))
        if self.mask_layer in self.state.layers:
            layer = self.state.layers[self.mask_layer]
            if isinstance(layer, LabelLayer) and layer.data.shape == pred.instance_labels.shape:
                ids = np.zeros(int(pred.instance_labels.max(initial=0)) + 1, bool)
                ids[[r["id"] for r in rows]] = True
                for k in sorted({r["slice"] for r in pred.instances or []}):  # only slices with instances change
                    layer.data[k] = np.where(ids[pred.instance_labels[k]], INSTANCE_LESION_LABEL, pred.lung_mask[k])
                layer.data_changed()

    def go_to(self, row: int) -> None:
        """Move the crosshair to the centre of the listed instance in `row`."""
        rows = self.shown()
        if 0 <= row < len(rows):
            x0, y0, x1, y1 = rows[row]["box"]
            self.state.set_cursor((int(rows[row]["slice"]), int((y0 + y1) // 2), int((x0 + x1) // 2)))

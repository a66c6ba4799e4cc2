"""The measurements dock: every ruler, ellipse, angle and long/short axis cross of the open series, with its
values; jump to one, rename, delete, and export them all as CSV or DICOM SR."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from viewer.core.errors import LoadError
from viewer.dicom.tags import read_dataset
from viewer.gui.slice_view import Measurement, SliceView
from viewer.io.atomic_files import write_text_atomic
from viewer.io.measurement_sr import MeasurementRecord, write_measurement_sr
from viewer.state.slicing import Orientation

COLUMNS = ("name", "view", "slice", "kind", "value")
VALUES = ("length_mm", "mean_hu", "sd_hu", "area_mm2", "angle_deg", "long_mm", "short_mm")
CSV_FIELDS = ("name", "view", "slice", "kind", *VALUES, "voxel_k", "voxel_j", "voxel_i", "x_mm", "y_mm", "z_mm")


class MeasurementsPanel(QtWidgets.QWidget):
    """Lists the measurements of the slice views; double-click a row to go there, edit its name in place."""

    renamed = QtCore.Signal()  # a measurement got a new name (the list itself is unchanged)

    def __init__(self, views: dict[Orientation, SliceView], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.views = views
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.EditKeyPressed
                                   | QtWidgets.QAbstractItemView.EditTrigger.SelectedClicked)
        self.table.setToolTip("double-click: go to the measurement; click a selected name to rename it")
        self.table.cellDoubleClicked.connect(lambda row, _col: self.go_to(row))
        self.table.itemChanged.connect(self._on_renamed)
        delete = QtWidgets.QPushButton("Delete")
        delete.clicked.connect(self.delete_selected)
        export = QtWidgets.QPushButton("Export CSV...")
        export.clicked.connect(self._export_dialog)
        export_sr = QtWidgets.QPushButton("Export DICOM SR...")
        export_sr.setToolTip("a TID 1500 measurement report referencing the CT series (3D Slicer and OHIF read it)")
        export_sr.clicked.connect(self._export_sr_dialog)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(delete)
        buttons.addWidget(export)
        buttons.addWidget(export_sr)
        buttons.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.rows: list[tuple[SliceView, Measurement]] = []
        for view in views.values():
            view.measurements_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the list from the views (axial, coronal, sagittal; in the order drawn)."""
        self.rows = [(view, m) for view in self.views.values() for m in view.measurements]
        with QtCore.QSignalBlocker(self.table):
            self.table.setRowCount(len(self.rows))
            for row, (view, m) in enumerate(self.rows):
                values = (m.name or f"{m.kind} {row + 1}", view.orientation.value, str(m.slice_index + 1), m.kind,
                          view.measurement_text(m).replace("\n", "  "))
                for col, text in enumerate(values):
                    item = QtWidgets.QTableWidgetItem(text)
                    if col != 0:
                        item.setFlags(item.flags() & ~QtCore.Qt.ItemFlag.ItemIsEditable)
                    self.table.setItem(row, col, item)

    def _on_renamed(self, item: QtWidgets.QTableWidgetItem) -> None:
        if item.column() == 0 and 0 <= item.row() < len(self.rows):
            self.rows[item.row()][1].name = item.text().strip()
            self.renamed.emit()

    def go_to(self, row: int) -> None:
        """Show the measurement of `row`: its slice in its view, the crosshair on its centre."""
        view, m = self.rows[row]
        v = view.measurement_values(m)
        view.state.set_cursor((round(v["k"]), round(v["j"]), round(v["i"])))
        view.state.set_slice(view.orientation, m.slice_index)

    def delete_selected(self) -> None:
        for row in sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True):
            view, m = self.rows[row]
            view.remove_measurement(m)

    def csv_text(self) -> str:
        """Every measurement as a CSV row (values in mm, HU and mm²; the centre as voxel and LPS mm)."""
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\r\n", restval="")
        writer.writeheader()
        for row, (view, m) in enumerate(self.rows):
            v = view.measurement_values(m)
            lps = view.state.volume.index_to_lps((v["k"], v["j"], v["i"])) if view.state.volume is not None else None
            record = {"name": m.name or f"{m.kind} {row + 1}", "view": view.orientation.value,
                      "slice": m.slice_index + 1, "kind": m.kind,
                      **{k: round(v[k], 3) for k in VALUES if k in v},
                      "voxel_k": round(v["k"], 2), "voxel_j": round(v["j"], 2), "voxel_i": round(v["i"], 2)}
            if lps is not None:
                record.update(x_mm=round(float(lps[0]), 2), y_mm=round(float(lps[1]), 2), z_mm=round(float(lps[2]), 2))
            writer.writerow(record)
        return out.getvalue()

    def export_csv(self, path: str | Path) -> Path:
        """Write `csv_text` to `path` (atomically)."""
        write_text_atomic(Path(path), self.csv_text())
        return Path(path)

    def export_sr(self, path: str | Path) -> Path:
        """Write every measurement as a DICOM SR measurement report over the open DICOM series.

        Raises:
            ValueError: no measurement, or the CT was not read from DICOM (a report references its images).
            LoadError: a CT file cannot be read again.
        """
        if not self.rows:
            raise ValueError("no measurements to export")
        vol = self.rows[0][0].state.volume
        if vol is None or not vol.files:
            raise ValueError("a DICOM SR references the DICOM images it measures; this CT was not read from DICOM "
                             "(export CSV instead)")
        records = []
        for row, (view, m) in enumerate(self.rows):
            values = {k: v for k, v in view.measurement_values(m).items() if k not in ("k", "j", "i")}
            records.append(MeasurementRecord(m.name or f"{m.kind} {row + 1}", m.kind,
                                             vol.index_to_lps(view.measurement_points(m)), values))
        return write_measurement_sr(path, records, [read_dataset(f, pixels=False) for f in vol.files])

    def _export_sr_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export measurements as DICOM SR",
                                                        "measurements-sr.dcm", "DICOM (*.dcm)")
        if path:
            try:
                self.export_sr(path)
            except (ValueError, LoadError, OSError) as exc:
                QtWidgets.QMessageBox.warning(self, "Export DICOM SR", f"{path}: {exc}")

    def _export_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Export measurements", "measurements.csv",
                                                        "CSV (*.csv)")
        if path:
            try:
                self.export_csv(path)
            except OSError as exc:
                QtWidgets.QMessageBox.warning(self, "Export measurements", f"{path}: {exc}")

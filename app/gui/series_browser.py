"""A dialog to pick one series when a folder holds several: thumbnail, description, size, warnings."""

from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from viewer.core.corner_text import dicom_date
from viewer.core.errors import LoadError
from viewer.core.windowing import PRESETS, GreyLUT
from viewer.dicom.pixels import read_stored_frames
from viewer.dicom.scan import ScanResult, SeriesEntry

THUMB = 72


def thumbnail(entry: SeriesEntry) -> QtGui.QPixmap | None:
    """The middle image of a series in the lung window, or None if it cannot be decoded."""
    h = entry.headers[len(entry.headers) // 2]
    try:
        frames = read_stored_frames(h)
    except LoadError:
        return None
    img = frames[len(frames) // 2].astype(np.float32) * h.slope + h.intercept
    grey = np.ascontiguousarray(GreyLUT(PRESETS["lung"])(img))
    qimg = QtGui.QImage(grey.data, grey.shape[1], grey.shape[0], grey.strides[0], QtGui.QImage.Format.Format_Grayscale8)
    return QtGui.QPixmap.fromImage(qimg.copy()).scaled(THUMB, THUMB, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                                       QtCore.Qt.TransformationMode.SmoothTransformation)


class SeriesBrowser(QtWidgets.QDialog):
    """Lists every series of a scan; `chosen_id()` is the selection after `exec()`."""

    COLUMNS = ("", "patient", "study date", "series", "description", "modality", "orientation", "slices", "size",
               "spacing (mm)", "warnings")

    def __init__(self, result: ScanResult, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Choose a series - {result.root}")
        self.result = result
        self.table = QtWidgets.QTableWidget(len(result.series), len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setDefaultSectionSize(THUMB + 4)
        self.table.setIconSize(QtCore.QSize(THUMB, THUMB))
        for row, s in enumerate(result.series):
            self._fill_row(row, s)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self.accept)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Open
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        info = QtWidgets.QLabel(f"{len(result.series)} series in {result.n_files} files"
                                + (f"; {len(result.skipped)} files skipped" if result.skipped else ""))
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(info)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(900, 420)
        candidates = [i for i, s in enumerate(result.series) if s.is_ct_stack]
        self.table.selectRow(max(candidates, key=lambda i: result.series[i].n_slices) if candidates else 0)

    def _fill_row(self, row: int, s: SeriesEntry) -> None:
        thumb = QtWidgets.QTableWidgetItem()
        pix = thumbnail(s)
        if pix is not None:
            thumb.setIcon(QtGui.QIcon(pix))
        ps, sp = s.pixel_spacing, s.slice_spacing
        spacing = (f"{sp:.3g} / {ps[0]:.3g} x {ps[1]:.3g}" if sp else f"? / {ps[0]:.3g} x {ps[1]:.3g}") if ps else "?"
        md = s.metadata
        patient = " ".join(p for p in (md.patient_name, f"({md.patient_id})" if md.patient_id else "") if p)
        values = ("", patient, dicom_date(md.study_date), md.series_number, s.description or "(no description)",
                  s.modality or "?", s.orientation, str(s.n_slices), f"{s.size[1]} x {s.size[0]}", spacing,
                  "; ".join(s.warnings))
        self.table.setItem(row, 0, thumb)
        for col, text in enumerate(values[1:], start=1):
            item = QtWidgets.QTableWidgetItem(text)
            item.setToolTip(text)
            self.table.setItem(row, col, item)

    def chosen_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        return self.result.series[rows[0].row()].id if rows else None

"""The thumbnail strip of the open study: one thumbnail per series found in the folder; a click opens it."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.series_browser import THUMB, thumbnail
from viewer.dicom.scan import ScanResult


class SeriesStrip(QtWidgets.QListWidget):
    """Thumbnails (middle image, lung window) of every series of the folder opened last, by series number, each
    captioned with its series number, description and slice count; `series_chosen(folder, id)` on a click."""

    series_chosen = QtCore.Signal(str, str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QtWidgets.QListView.Movement.Static)
        self.setIconSize(QtCore.QSize(THUMB, THUMB))
        self.setFixedHeight(THUMB + 52)
        self.setSpacing(4)
        self.folder = ""
        self.ids: list[str] = []
        self.itemClicked.connect(lambda item: self.series_chosen.emit(self.folder, self.ids[self.row(item)]))

    def show_study(self, folder: str, result: ScanResult) -> None:
        """List the series `result` found in `folder` (thumbnails decoded here: one image per series)."""
        self.clear()

        def order(s) -> tuple[int, str]:
            number = s.metadata.series_number.strip()
            return (int(number) if number.isdigit() else 1 << 30, s.description)

        series = sorted(result.series, key=order)  # by series number, as the study was acquired
        self.folder, self.ids = folder, [s.id for s in series]
        for s in series:
            caption = f"{s.metadata.series_number or '?'}: {s.description or '(no description)'}"[:28]
            item = QtWidgets.QListWidgetItem(f"{caption}\n{s.n_slices} slices {s.modality}")
            pix = thumbnail(s)
            item.setIcon(QtGui.QIcon(pix) if pix is not None else QtGui.QIcon())
            item.setToolTip(f"{s.description}\n{s.n_slices} slices, {s.modality}, {s.orientation}")
            self.addItem(item)

    def mark(self, series_id: str | None) -> None:
        """Select the thumbnail of the series on show (none when it is not from this study)."""
        with QtCore.QSignalBlocker(self):
            self.clearSelection()
            if series_id in self.ids:
                self.setCurrentRow(self.ids.index(series_id))

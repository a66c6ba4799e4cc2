"""The triage worklist window: series queued, screened in the background and ranked by probability, with
colour bands, thumbnails, filtering, review marks, pause/resume/cancel, export and reports."""

from __future__ import annotations

import threading
import traceback
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.gui.workers import Worker, start_worker
from app.reports.content import Bands
from app.services.cases import ScreenOptions
from app.services.worklist import DONE, QUEUED, RUNNING, WorkItem, Worklist

BAND_COLOURS = {"high": "#f5b7b1", "intermediate": "#fad7a0", "low": "#d5f5e3"}
THUMB_PX = 72
SCANNING, SCREENING = "Scanning...", "Screening..."
CANCELLING = "Cancelling: the running case(s) finish, the rest stay queued"
STATUS_INTERVAL_MS = 100  # the counts and progress bar follow results at most this often


class WorklistWorker(Worker):
    """Adds paths to the worklist and screens what is queued, off the GUI thread (the screening itself runs in
    worker processes, beginning with the first series found while the rest is scanned). Signals: `added()` after
    each path is scanned and once at the end, `updated(WorkItem, QImage | None)` per change, with the thumbnail
    of a screened case read and scaled here, not on the GUI thread."""

    added = QtCore.Signal()
    updated = QtCore.Signal(object, object)

    def __init__(self, worklist: Worklist, paths: list[str], workers: int, paused: threading.Event) -> None:
        super().__init__()
        self.worklist, self.paths, self.workers, self.paused = worklist, paths, workers, paused

    @QtCore.Slot()
    def run(self) -> None:
        try:
            # the scan runs beside the screening: rows appear (`added`) as each path is scanned
            self.worklist.run(self.workers, on_update=lambda item: self.updated.emit(item, thumbnail_image(item)),
                              paused=self.paused, cancelled=self._cancel, paths=self.paths,
                              on_added=lambda items: self.added.emit())
            self._deliver(self.added)
            if self._cancel.is_set():
                self._deliver(self.cancelled)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the worklist stays usable
            self._deliver(self.failed, f"{exc}\n{traceback.format_exc(limit=2)}")
        finally:
            self._finish()


def thumbnail_image(item: WorkItem) -> QtGui.QImage | None:
    """A screened case's key image scaled to the thumbnail size (a QImage: safe to make off the GUI thread)."""
    if item.status != DONE:
        return None
    try:
        path = item.thumbnail()
    except (KeyError, TypeError, IndexError, OSError):  # a damaged prediction.json: no thumbnail, the run goes on
        return None
    if path is None:
        return None
    image = QtGui.QImage(str(path))
    if image.isNull():
        return None
    return image.scaled(THUMB_PX, THUMB_PX, QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                        QtCore.Qt.TransformationMode.SmoothTransformation)


class WorklistModel(QtCore.QAbstractTableModel):
    """The worklist's items as table rows; sorting and filtering happen in a proxy."""

    COLUMNS = ("Rank", "Key image", "P(COVID-19)", "Status", "Patient", "Patient ID", "Study date", "Series",
               "Involvement", "Severity", "Time (s)", "Reviewed")
    SORT_ROLE = QtCore.Qt.ItemDataRole.UserRole + 1
    ranks_moved = QtCore.Signal()  # the rank column's text changed: the views repaint it

    def __init__(self, worklist: Worklist, bands: Bands) -> None:
        super().__init__()
        self.worklist, self.bands = worklist, bands
        self.items: list[WorkItem] = []
        self.ranks: dict[int, int] = {}
        self._thumbs: dict[str, QtGui.QPixmap | None] = {}  # by the case's cache key

    def append_new(self) -> bool:
        """Rows for the items added to the worklist since the last look (it only grows); whether there were any."""
        new = self.worklist.items[len(self.items):]
        if not new:
            return False
        self.beginInsertRows(QtCore.QModelIndex(), len(self.items), len(self.items) + len(new) - 1)
        self.items.extend(new)
        self.endInsertRows()
        return True

    def refresh(self) -> None:
        self.beginResetModel()
        self.items = list(self.worklist.items)
        self.ranks = {id(item): n for n, item in enumerate(self.worklist.ranked(), start=1)
                      if item.probability is not None}
        self.endResetModel()

    def item_changed(self, item: WorkItem, thumbnail: QtGui.QImage | None = None) -> None:
        """`item`'s row anew (the proxy re-sorts and re-filters it), and `ranks_moved` when ranks moved: not the
        whole table (with a sort and filter proxy over it, that cost about 20 ms of the GUI thread per update)."""
        if thumbnail is not None:
            self._thumbs[item.key.digest] = QtGui.QPixmap.fromImage(thumbnail)
        row = next((n for n, i in enumerate(self.items) if i is item), None)
        if row is None:  # its case started before the scan's `added` arrived
            self.append_new()
            row = next((n for n, i in enumerate(self.items) if i is item), None)
        ranks = {id(i): n for n, i in enumerate(self.worklist.ranked(), start=1) if i.probability is not None}
        if ranks != self.ranks:
            # only shown text moved: sorting ("Rank" sorts by probability) and filtering do not read ranks, so a
            # repaint will do; a dataChanged over every row made the proxy re-check them all (15-40 ms)
            self.ranks = ranks
            self.ranks_moved.emit()
        if row is not None:
            self.dataChanged.emit(self.index(row, 0), self.index(row, len(self.COLUMNS) - 1))

    def repaint_all(self) -> None:
        """Every cell anew (the bands changed)."""
        if self.items:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.items) - 1, len(self.COLUMNS) - 1))

    def rowCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.items)

    def columnCount(self, parent=QtCore.QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return len(self.COLUMNS)

    def headerData(self, section: int, orientation, role=QtCore.Qt.ItemDataRole.DisplayRole):
        if role == QtCore.Qt.ItemDataRole.DisplayRole and orientation == QtCore.Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None

    def flags(self, index: QtCore.QModelIndex):
        base = QtCore.Qt.ItemFlag.ItemIsEnabled | QtCore.Qt.ItemFlag.ItemIsSelectable
        if self.COLUMNS[index.column()] == "Reviewed" and self.items[index.row()].status == DONE:
            base |= QtCore.Qt.ItemFlag.ItemIsUserCheckable
        return base

    def data(self, index: QtCore.QModelIndex, role=QtCore.Qt.ItemDataRole.DisplayRole):
        item, column = self.items[index.row()], self.COLUMNS[index.column()]
        row, p = item.row, item.probability
        if role == QtCore.Qt.ItemDataRole.DisplayRole:
            return self._text(item, column)
        if role == self.SORT_ROLE:
            if column in ("Rank", "P(COVID-19)"):
                return p if p is not None else -1.0
            if column in ("Involvement", "Severity", "Time (s)"):
                v = row.get({"Involvement": "involvement_percent", "Severity": "severity",
                             "Time (s)": "seconds"}[column])
                return float(v) if v is not None else -1.0
            return self._text(item, column) or ""
        if role == QtCore.Qt.ItemDataRole.BackgroundRole and column == "P(COVID-19)" and p is not None:
            return QtGui.QColor(BAND_COLOURS[self.bands.band(p)])
        if role == QtCore.Qt.ItemDataRole.DecorationRole and column == "Key image":
            return self._thumb(item)
        if role == QtCore.Qt.ItemDataRole.CheckStateRole and column == "Reviewed" and item.status == DONE:
            return QtCore.Qt.CheckState.Checked if item.reviewed else QtCore.Qt.CheckState.Unchecked
        if role == QtCore.Qt.ItemDataRole.ToolTipRole and column == "Status":
            return item.status
        return None

    def setData(self, index: QtCore.QModelIndex, value, role=QtCore.Qt.ItemDataRole.EditRole) -> bool:
        if role == QtCore.Qt.ItemDataRole.CheckStateRole and self.COLUMNS[index.column()] == "Reviewed":
            item = self.items[index.row()]
            self.worklist.set_reviewed(item, QtCore.Qt.CheckState(value) == QtCore.Qt.CheckState.Checked)
            self.dataChanged.emit(index, index)
            return True
        return False

    def _text(self, item: WorkItem, column: str) -> str:
        row, p = item.row, item.probability
        if column == "Rank":
            return str(self.ranks.get(id(item), ""))
        if column == "P(COVID-19)":
            return f"{p:.3f}  {self.bands.band(p)}" if p is not None else ""
        if column == "Status":
            return item.status
        if column == "Patient":
            return str(row.get("patient_name", "")).replace("^", " ")
        if column == "Patient ID":
            return str(row.get("patient_id", ""))
        if column == "Study date":
            d = str(row.get("study_date", ""))
            return f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else d
        if column == "Series":
            return str(row.get("series_description") or item.case.name)
        if item.status != DONE:
            return ""
        if column == "Involvement":
            return f"{row.get('involvement_percent', 0):.1f} %"
        if column == "Severity":
            return f"{row.get('severity', 0)}/30"
        if column == "Time (s)":
            return f"{row.get('seconds', 0):.1f}"
        return ""

    def _thumb(self, item: WorkItem) -> QtGui.QPixmap | None:
        """The key image, read and scaled once per screened case (paints ask for it on every repaint)."""
        if item.status != DONE:
            return None
        key = item.key.digest
        if key not in self._thumbs:  # a result from the cache: read on its first paint
            image = thumbnail_image(item)
            self._thumbs[key] = None if image is None else QtGui.QPixmap.fromImage(image)
        return self._thumbs[key]


class _Filter(QtCore.QSortFilterProxyModel):
    """Text filter over patient, ID and series; optionally hides reviewed cases."""

    def __init__(self) -> None:
        super().__init__()
        self.text, self.hide_reviewed = "", False
        self.setSortRole(WorklistModel.SORT_ROLE)

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        model: WorklistModel = self.sourceModel()  # type: ignore[assignment]
        item = model.items[source_row]
        if self.hide_reviewed and item.reviewed:
            return False
        if not self.text:
            return True
        hay = " ".join(str(item.row.get(k, "")) for k in ("patient_name", "patient_id", "series_description",
                                                          "case", "study_date")) + " " + item.status
        return self.text.lower() in hay.lower()


class WorklistWindow(QtWidgets.QMainWindow):
    """The worklist. `open_case(source, series, overlays)` asks the viewer to open a screened case."""

    open_case = QtCore.Signal(str, str, list)

    def __init__(self, options: ScreenOptions | None = None, workers: int = 1, parent=None,
                 worklist: Worklist | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("LungLens worklist - research use only, not for clinical diagnosis")
        self.worklist = worklist or Worklist(options)
        self.workers = workers
        self.bands = Bands()
        self.model = WorklistModel(self.worklist, self.bands)
        self.proxy = _Filter()
        self.proxy.setSourceModel(self.model)
        self.paused = threading.Event()
        self._worker: WorklistWorker | None = None
        self._thread: QtCore.QThread | None = None
        self._queue: list[str] = []
        self._columns_sized = False
        self._build()
        self.resize(1250, 700)

    # -- construction --------------------------------------------------------------------------------------
    def _build(self) -> None:
        bar = self.addToolBar("Worklist")
        bar.setMovable(False)
        bar.addAction("Add Folder...", self.add_folder_dialog)
        bar.addAction("Query PACS...", self.pacs_dialog)
        self.start_action = bar.addAction("Start", self.start)
        self.pause_action = bar.addAction("Pause", self.toggle_pause)
        self.cancel_action = bar.addAction("Cancel", self.cancel)
        bar.addSeparator()
        bar.addAction("Export CSV...", self.export_csv_dialog)
        bar.addAction("Report...", self.report_dialog)
        bar.addSeparator()
        bar.addWidget(QtWidgets.QLabel(" Bands: low below "))
        self.low_spin = self._spin(self.bands.low)
        bar.addWidget(self.low_spin)
        bar.addWidget(QtWidgets.QLabel(" high from "))
        self.high_spin = self._spin(self.bands.high)
        bar.addWidget(self.high_spin)
        bar.addSeparator()
        self.filter_edit = QtWidgets.QLineEdit()
        self.filter_edit.setPlaceholderText("Filter: patient, ID, series, status")
        self.filter_edit.setClearButtonEnabled(True)
        self.filter_edit.textChanged.connect(self._filter_changed)
        bar.addWidget(self.filter_edit)
        self.hide_reviewed = QtWidgets.QCheckBox("Hide reviewed")
        self.hide_reviewed.toggled.connect(self._filter_changed)
        bar.addWidget(self.hide_reviewed)

        self.table = QtWidgets.QTableView()
        self.table.setModel(self.proxy)
        self.model.ranks_moved.connect(self.table.viewport().update)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(WorklistModel.COLUMNS.index("P(COVID-19)"), QtCore.Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setDefaultSectionSize(THUMB_PX + 4)
        self.table.verticalHeader().hide()
        self.table.setIconSize(QtCore.QSize(THUMB_PX, THUMB_PX))
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.doubleClicked.connect(self._double_clicked)
        self.setCentralWidget(self.table)
        # the counts in a label of their own: QStatusBar.showMessage and QProgressBar.setValue repaint at once,
        # which painted every pending change of the table synchronously, once per result (30-80 ms stalls when
        # several results came in one pass of the event loop); results now refresh them at most every 100 ms
        self.counts = QtWidgets.QLabel()
        self.progress = QtWidgets.QProgressBar()
        self.progress.setMaximumWidth(220)
        self.statusBar().addPermanentWidget(self.counts)
        self.statusBar().addPermanentWidget(self.progress)
        self._status_timer = QtCore.QTimer(self)
        self._status_timer.setSingleShot(True)
        self._status_timer.setInterval(STATUS_INTERVAL_MS)
        self._status_timer.timeout.connect(self._update_status)
        self._update_status()

    def _spin(self, value: float) -> QtWidgets.QDoubleSpinBox:
        spin = QtWidgets.QDoubleSpinBox()
        spin.setRange(0.0, 1.0)
        spin.setSingleStep(0.05)
        spin.setDecimals(2)
        spin.setValue(value)
        spin.valueChanged.connect(self._bands_changed)
        return spin

    # -- actions -------------------------------------------------------------------------------------------
    def add_paths(self, paths: list[str]) -> None:
        """Queue the series under `paths` and screen them (after the running batch, if any)."""
        self._queue += [str(p) for p in paths]
        if self._thread is None:
            self._start()

    def _start(self) -> None:
        paths, self._queue = self._queue, []
        worker = WorklistWorker(self.worklist, paths, self.workers, self.paused)
        worker.added.connect(self._on_added)
        worker.updated.connect(self._on_updated)
        worker.failed.connect(self._on_failed)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._thread = start_worker(worker, self)
        self.statusBar().showMessage(SCANNING if paths else SCREENING)

    def add_folder_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Add folder to the worklist")
        if folder:
            self.add_paths([folder])

    def pacs_dialog(self):
        """Query a configured PACS node; the studies retrieved join the worklist."""
        from app.gui.pacs_dialog import PacsDialog

        dialog = PacsDialog(self)
        dialog.retrieved.connect(self.add_paths)
        dialog.show()
        return dialog

    def start(self) -> None:
        """Screen what is queued (after a Cancel, or in a window reopened)."""
        self.paused.clear()
        self.pause_action.setText("Pause")
        if self._thread is None and any(i.status == QUEUED for i in self.worklist.items):
            self._start()
        self._update_status()

    def toggle_pause(self) -> None:
        if self.paused.is_set():
            self.paused.clear()
            self.pause_action.setText("Pause")
        else:
            self.paused.set()
            self.pause_action.setText("Resume")
        self._update_status()

    def cancel(self) -> None:
        """Start no more cases; the running ones finish and are kept."""
        if self._worker is not None:
            self._worker.cancel()
        self._queue.clear()
        self.statusBar().showMessage(CANCELLING)

    def is_running(self) -> bool:
        return self._thread is not None

    def join(self, timeout_s: float = 300.0) -> bool:
        """Wait (processing events) until the background work is over; for tests and closing."""
        deadline = QtCore.QDeadlineTimer(int(timeout_s * 1000))
        while self._thread is not None and not deadline.hasExpired():
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            QtCore.QThread.msleep(10)
        return self._thread is None

    def export_csv_dialog(self) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Export the worklist to a folder")
        if folder:
            self.export(folder)

    def export(self, folder: str) -> Path | None:
        try:
            out = self.worklist.export(folder)
        except OSError as exc:
            QtWidgets.QMessageBox.warning(self, "Export", f"{folder}: cannot export ({exc})")
            return None
        self.statusBar().showMessage(f"Exported {out / 'results.csv'}", 8000)
        return out

    def report_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Write report", "worklist-report.pdf",
                                                        "PDF (*.pdf);;HTML (*.html)")
        if path:
            self.write_report(path)

    def write_report(self, path: str) -> Path | None:
        """Export every case to a folder beside the report (`<name>-results`) and write the report of them."""
        from app.reports.content import ReportError, load_report

        out = Path(path) if Path(path).suffix else Path(path).with_suffix(".pdf")
        try:
            folder = self.worklist.export(out.with_suffix("").with_name(out.stem + "-results"))
            report = load_report(folder, bands=self.bands)
            if out.suffix.lower() == ".html":
                from app.reports.html import write_html

                write_html(report, out)
            else:
                from app.reports.pdf import write_pdf

                write_pdf(report, out)
        except (ReportError, OSError) as exc:
            QtWidgets.QMessageBox.warning(self, "Report", f"{out}: cannot write the report ({exc})")
            return None
        self.statusBar().showMessage(f"Wrote {out}", 8000)
        return out

    # -- slots (declared: a signal from the worker's thread must run them on the GUI thread) -------------------
    @QtCore.Slot()
    def _on_added(self) -> None:
        self.model.append_new()
        if self.model.items and not self._columns_sized:  # once, to the first rows: not at every path scanned
            self._columns_sized = True
            self.table.resizeColumnsToContents()
            header = self.table.horizontalHeader()
            for name, width in (("P(COVID-19)", 150), ("Status", 110), ("Involvement", 95), ("Severity", 75)):
                column = WorklistModel.COLUMNS.index(name)
                header.resizeSection(column, max(width, header.sectionSize(column)))
        self._status_soon()

    @QtCore.Slot(object, object)
    def _on_updated(self, item: WorkItem, thumbnail: QtGui.QImage | None = None) -> None:
        self.model.item_changed(item, thumbnail)  # the proxy re-sorts and re-filters the changed rows itself
        self._status_soon()

    @QtCore.Slot(str)
    def _on_failed(self, message: str) -> None:
        QtWidgets.QMessageBox.warning(self, "Worklist", message)

    @QtCore.Slot()
    def _on_finished(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(10_000)  # over before it is dropped: a running QThread must not be destroyed
        self._thread, self._worker = None, None
        self.model.refresh()
        self._update_status()
        if self.statusBar().currentMessage() in (SCANNING, SCREENING, CANCELLING):  # over: the counts say the rest
            self.statusBar().clearMessage()
        if self._queue:
            self._start()

    def _filter_changed(self) -> None:
        self.proxy.text = self.filter_edit.text().strip()
        self.proxy.hide_reviewed = self.hide_reviewed.isChecked()
        self.proxy.invalidate()

    def _bands_changed(self) -> None:
        low, high = self.low_spin.value(), self.high_spin.value()
        if low > high:
            return
        self.bands = Bands(low=low, high=high, threshold=min(max(self.bands.threshold, low), high))
        self.model.bands = self.bands
        self.model.repaint_all()

    def _double_clicked(self, index: QtCore.QModelIndex) -> None:
        item = self.model.items[self.proxy.mapToSource(index).row()]
        overlays = []
        if item.status == DONE and item.case_dir is not None:
            overlays = [str(item.case_dir / f"{n}.nii.gz") for n in ("lesions", "heatmap")
                        if (item.case_dir / f"{n}.nii.gz").is_file()]
        self.open_case.emit(item.case.source, item.case.series or "", overlays)

    def _status_soon(self) -> None:
        """The counts and progress refreshed within `STATUS_INTERVAL_MS`: one refresh for a burst of results."""
        if not self._status_timer.isActive():
            self._status_timer.start()

    @QtCore.Slot()
    def _update_status(self) -> None:
        items = self.worklist.items
        done = sum(i.status not in (QUEUED, RUNNING) for i in items)
        running = sum(i.status == RUNNING for i in items)
        self.progress.setUpdatesEnabled(False)  # its setValue repaints at once; with the rest, in the next paint
        self.progress.setRange(0, max(1, len(items)))
        self.progress.setValue(done)
        self.progress.setUpdatesEnabled(True)
        state = "paused" if self.paused.is_set() else ("screening" if running else "idle")
        self.counts.setText(f"{done} of {len(items)} done, {running} running ({state})")

    def closeEvent(self, ev: QtGui.QCloseEvent) -> None:
        """Running cases finish and are kept; the rest stay queued (Start screens them when the window opens
        again)."""
        self.cancel()
        self.paused.clear()
        self.pause_action.setText("Pause")
        self.join(600.0)
        super().closeEvent(ev)

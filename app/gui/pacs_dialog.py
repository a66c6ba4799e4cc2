"""Query a configured PACS node and retrieve studies, from the worklist or the viewer. Every network call runs
in a worker thread; the dialog stays responsive and can cancel a retrieval."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtWidgets

from app.gui.workers import Worker, start_worker
from app.pacs.nodes import DEFAULT_CALLING_AET, PacsError, PacsNode, load_nodes, remove_node, save_node
from app.pacs.query import StudyQuery, echo, find_studies
from app.services.pacs_source import retrieve_studies

STUDY_COLUMNS = ("PatientID", "PatientName", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                 "NumberOfStudyRelatedInstances", "StudyDescription", "AccessionNumber", "StudyInstanceUID")


class CallWorker(Worker):
    """Runs `fn(cancelled)` off the GUI thread; `done(result)` or `failed(message)`."""

    done = QtCore.Signal(object)

    def __init__(self, fn: Callable[[Callable[[], bool]], object]) -> None:
        super().__init__()
        self.fn = fn

    @QtCore.Slot()
    def run(self) -> None:
        try:
            self._deliver(self.done, self.fn(self._cancel.is_set))
        except PacsError as exc:
            self._deliver(self.failed, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug reaches the user as a message, not a dead thread
            self._deliver(self.failed, f"unexpected error: {exc}\n{traceback.format_exc(limit=3)}")
        finally:
            self._finish()


class NodeEditor(QtWidgets.QDialog):
    """Add or change a node: name, host, port, AE titles."""

    def __init__(self, parent=None, node: PacsNode | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS node")
        form = QtWidgets.QFormLayout(self)
        self.name = QtWidgets.QLineEdit(node.name if node else "")
        self.host = QtWidgets.QLineEdit(node.host if node else "")
        self.port = QtWidgets.QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(node.port if node else 104)
        self.aet = QtWidgets.QLineEdit(node.aet if node else "")
        self.calling = QtWidgets.QLineEdit(node.calling_aet if node else DEFAULT_CALLING_AET)
        for label, widget in (("Name", self.name), ("Host", self.host), ("Port", self.port),
                              ("Called AE title", self.aet), ("LungLens AE title", self.calling)):
            form.addRow(label, widget)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Save
                                             | QtWidgets.QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def node(self) -> PacsNode:
        """The node as entered; PacsError when a field is invalid."""
        return PacsNode(self.host.text().strip(), self.port.value(), self.aet.text().strip(),
                        self.calling.text().strip() or DEFAULT_CALLING_AET, self.name.text().strip())


class PacsDialog(QtWidgets.QDialog):
    """Nodes, a study query and retrieval; `retrieved(list of local study folders)` when studies are here."""

    retrieved = QtCore.Signal(list)
    message = QtCore.Signal(str)  # what the status line says (tests read it)

    def __init__(self, parent=None, dest: str | Path | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("PACS: query and retrieve")
        self.dest = dest
        self.studies: list[dict] = []
        self._worker: CallWorker | None = None
        self._on_done: Callable[[Any], None] = lambda _result: None
        self._thread: QtCore.QThread | None = None
        layout = QtWidgets.QVBoxLayout(self)

        nodes_row = QtWidgets.QHBoxLayout()
        self.node_box = QtWidgets.QComboBox()
        nodes_row.addWidget(QtWidgets.QLabel("Node"))
        nodes_row.addWidget(self.node_box, 1)
        for text, slot in (("Add...", self.add_node_dialog), ("Edit...", self.edit_node_dialog),
                           ("Remove", self.remove_selected_node), ("Echo", self.echo)):
            button = QtWidgets.QPushButton(text)
            button.clicked.connect(slot)
            nodes_row.addWidget(button)
        layout.addLayout(nodes_row)

        query = QtWidgets.QHBoxLayout()
        self.patient_id = QtWidgets.QLineEdit()
        self.patient_name = QtWidgets.QLineEdit()
        self.date = QtWidgets.QLineEdit()
        self.date.setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        self.modality = QtWidgets.QLineEdit("CT")
        self.accession = QtWidgets.QLineEdit()
        for label, widget in (("Patient ID", self.patient_id), ("Name", self.patient_name), ("Date", self.date),
                              ("Modality", self.modality), ("Accession", self.accession)):
            query.addWidget(QtWidgets.QLabel(label))
            query.addWidget(widget)
        self.search_button = QtWidgets.QPushButton("Search")
        self.search_button.clicked.connect(self.search)
        query.addWidget(self.search_button)
        layout.addLayout(query)

        self.table = QtWidgets.QTableWidget(0, len(STUDY_COLUMNS))
        self.table.setHorizontalHeaderLabels(["Patient ID", "Name", "Date", "Modalities", "Series", "Instances",
                                              "Description", "Accession", "Study UID"])
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table, 1)

        bottom = QtWidgets.QHBoxLayout()
        self.status = QtWidgets.QLabel("")
        bottom.addWidget(self.status, 1)
        self.retrieve_button = QtWidgets.QPushButton("Retrieve selected")
        self.retrieve_button.clicked.connect(self.retrieve_selected)
        self.cancel_button = QtWidgets.QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        bottom.addWidget(self.retrieve_button)
        bottom.addWidget(self.cancel_button)
        layout.addLayout(bottom)
        self.resize(1100, 520)
        self.reload_nodes()

    # -- nodes -----------------------------------------------------------------------------------------------
    def reload_nodes(self, select: str | None = None) -> None:
        self.node_box.clear()
        try:
            nodes = load_nodes()
        except PacsError as exc:
            self._say(str(exc))
            return
        for name, node in sorted(nodes.items()):
            self.node_box.addItem(f"{name}  ({node.aet}@{node.host}:{node.port})", name)
        if select is not None:
            self.node_box.setCurrentIndex(max(0, self.node_box.findData(select)))
        if not nodes:
            self._say("No PACS node configured: Add... one (LungLens talks to no other)")

    def selected_node(self) -> PacsNode | None:
        name = self.node_box.currentData()
        if name is None:
            self._say("Choose or add a PACS node first")
            return None
        try:
            return load_nodes().get(name)
        except PacsError as exc:
            self._say(str(exc))
            return None

    def add_node_dialog(self, node: PacsNode | None = None) -> None:
        editor = NodeEditor(self, node)
        while editor.exec() == QtWidgets.QDialog.DialogCode.Accepted:
            try:
                self.save(editor.node())
                return
            except (PacsError, OSError) as exc:
                QtWidgets.QMessageBox.warning(self, "PACS node", str(exc))

    def edit_node_dialog(self) -> None:
        node = self.selected_node()
        if node is not None:
            self.add_node_dialog(node)

    def save(self, node: PacsNode) -> None:
        save_node(node)
        self.reload_nodes(select=node.name)
        self._say(f"Saved {node.describe()}")

    def remove_selected_node(self) -> None:
        name = self.node_box.currentData()
        if name is not None:
            try:
                remove_node(name)
            except (PacsError, OSError) as exc:
                self._say(str(exc))
            self.reload_nodes()

    # -- network ---------------------------------------------------------------------------------------------
    def _run(self, fn, on_done, busy: str) -> None:
        if self._thread is not None:
            self._say("Busy: wait for the running request or cancel it")
            return
        worker = CallWorker(fn)
        self._on_done = on_done
        # a bound method of this dialog runs on the GUI thread; a lambda would run on the worker's
        worker.done.connect(self._done)
        worker.failed.connect(self._failed)
        worker.finished.connect(self._finished)
        self._worker = worker
        self._thread = start_worker(worker, self)
        self.cancel_button.setEnabled(True)
        self._say(busy)

    def echo(self) -> None:
        node = self.selected_node()
        if node is not None:
            self._run(lambda cancelled: echo(node),
                      lambda seconds: self._say(f"{node.describe()}: C-ECHO succeeded ({seconds * 1000:.0f} ms)"),
                      f"Echo {node.describe()}...")

    def search(self) -> None:
        node = self.selected_node()
        if node is None:
            return
        try:
            query = StudyQuery(self.patient_id.text().strip(), self.patient_name.text().strip(),
                               self.date.text().strip(), self.modality.text().strip(), self.accession.text().strip())
        except PacsError as exc:
            self._say(str(exc))
            return
        self._run(lambda cancelled: find_studies(node, query), self._show_studies, f"Searching {node.describe()}...")

    def _show_studies(self, studies: list[dict]) -> None:
        self.studies = studies
        self.table.setRowCount(len(studies))
        for r, study in enumerate(studies):
            for c, key in enumerate(STUDY_COLUMNS):
                value = study.get(key)
                self.table.setItem(r, c, QtWidgets.QTableWidgetItem("" if value is None else str(value)))
        self.table.resizeColumnsToContents()
        self._say(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} found")

    def retrieve_selected(self) -> None:
        node = self.selected_node()
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        if node is None:
            return
        if not rows:
            self._say("Select the studies to retrieve")
            return
        uids = [self.studies[r]["StudyInstanceUID"] for r in rows]
        dest = self.dest

        problems: list[dict] = []

        def fetch(cancelled) -> list[str]:
            folders: list[str] = []
            for uid in uids:
                if cancelled():
                    break
                folders += [str(f) for f in retrieve_studies(node, StudyQuery(), dest, study_uid=uid,
                                                             log=lambda m: None, problems=problems,
                                                             cancelled=cancelled)]
            return folders

        self._problems = problems

        self._run(fetch, self._retrieved, f"Retrieving {len(uids)} stud{'y' if len(uids) == 1 else 'ies'}...")

    def _retrieved(self, folders: list[str]) -> None:
        problems = getattr(self, "_problems", [])
        self._say(f"Retrieved {len(folders)} stud{'y' if len(folders) == 1 else 'ies'}"
                  + (f"; {len(problems)} problem(s): {problems[0]['error']}" if problems else ""))
        if folders:
            self.retrieved.emit(folders)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self._say("Cancelling...")

    def _done(self, result: object) -> None:
        self._on_done(result)

    def _failed(self, message: str) -> None:
        self._say(message)

    def _finished(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait(10_000)  # the QThread must be over before it can be dropped
        self._thread, self._worker = None, None
        self.cancel_button.setEnabled(False)

    def is_busy(self) -> bool:
        return self._thread is not None

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.message.emit(text)

    def done(self, result: int) -> None:
        """Closing waits for a running request (its thread must not outlive the dialog): a retrieval stops at the
        next instance, a query or echo within the PACS time-outs."""
        self.cancel()
        timer = QtCore.QDeadlineTimer(120_000)
        while self._thread is not None and not timer.hasExpired():
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
            QtCore.QThread.msleep(10)
        super().done(result)

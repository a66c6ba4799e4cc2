"""Background work for the GUI: loading runs in a QThread, results come back by signal."""

from __future__ import annotations

import threading
import traceback

from PySide6 import QtCore

from viewer.core.errors import LoadCancelled, LoadError
from viewer.dicom.scan import scan
from viewer.io.volumes import open_volume


class Worker(QtCore.QObject):
    """Base of the GUI's background jobs: progress, cancel, one result or error signal, then `finished`.

    Workers never touch widgets; the window connects to their signals (queued into the GUI thread).
    """

    progress = QtCore.Signal(float, str)
    failed = QtCore.Signal(str)
    cancelled = QtCore.Signal()
    finished = QtCore.Signal()

    def __init__(self) -> None:
        super().__init__()
        self._cancel = threading.Event()
        self.result_delivered = False  # set once its result or error signal went out

    def cancel(self) -> None:
        self._cancel.set()

    def _deliver(self, signal, *args) -> None:
        self.result_delivered = True  # before the signal: the GUI may act on the result before `finished`
        signal.emit(*args)

    def _finish(self) -> None:
        """Hand the worker back to the GUI thread, then emit `finished`.

        Its `deleteLater` (once its thread has ended) then runs in the GUI thread: deleting it in the worker
        thread while the GUI thread still read it crashed about one test run in five.
        """
        app = QtCore.QCoreApplication.instance()
        if app is not None:
            self.moveToThread(app.thread())
        self.finished.emit()


class LoadWorker(Worker):
    """Loads a path (optionally a given series), or only scans it, off the GUI thread.

    Signals: loaded(object Volume) or scanned(object ScanResult), besides the base ones.
    """

    loaded = QtCore.Signal(object)
    scanned = QtCore.Signal(object)

    def __init__(self, path: str, series: str | None = None, scan_only: bool = False) -> None:
        super().__init__()
        self.path = path
        self.series = series
        self.scan_only = scan_only

    @QtCore.Slot()
    def run(self) -> None:
        try:
            if self.scan_only:
                result = scan(self.path, progress=self.progress.emit, cancel=self._cancel.is_set)
                self._deliver(self.scanned, result)
            else:
                vol = open_volume(self.path, series=self.series, progress=self.progress.emit,
                                  cancel=self._cancel.is_set)
                self._deliver(self.loaded, vol)
        except LoadCancelled:
            self._deliver(self.cancelled)
        except (LoadError, FileNotFoundError) as exc:
            self._deliver(self.failed, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug must reach the user as a message, not kill the thread
            self._deliver(self.failed,
                          f"unexpected error while loading {self.path}: {exc}\n{traceback.format_exc(limit=3)}")
        finally:
            self._finish()


_RUNNING: set[QtCore.QObject] = set()  # workers whose thread has not ended yet


def start_worker(worker: QtCore.QObject, parent: QtCore.QObject) -> QtCore.QThread:
    """Run `worker.run` in a new QThread that cleans itself up.

    Python holds the worker until its thread has ended, and the GUI thread lets it go. Otherwise a caller
    that drops its reference once the result is in leaves the last one to `run`'s frame, and the worker
    thread freed the worker while the GUI thread still had queued calls for it (a rare hang of the viewer).
    """
    thread = QtCore.QThread(parent)
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    worker.finished.connect(thread.quit)
    _RUNNING.add(worker)
    # QThread.finished is delivered on the thread the QThread object lives in: the caller's, the GUI thread
    thread.finished.connect(worker.deleteLater)
    thread.finished.connect(lambda: _RUNNING.discard(worker))
    thread.finished.connect(thread.deleteLater)
    thread.start()
    return thread

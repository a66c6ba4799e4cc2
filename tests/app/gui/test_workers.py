"""GUI workers: Python holds a worker until its thread has ended, and lets it go on the GUI thread."""

from __future__ import annotations

import threading
import time
import weakref

from PySide6 import QtCore

from app.gui.workers import Worker, start_worker


class SlowToReturn(Worker):
    """Delivers its result at once, then is slow to return from `run` (as any worker is on a busy machine)."""

    done = QtCore.Signal(object)

    @QtCore.Slot()
    def run(self) -> None:
        try:
            self._deliver(self.done, 1)
        finally:
            self._finish()
        time.sleep(1.0)


def test_a_worker_whose_owner_lets_go_early_is_freed_on_the_gui_thread_after_its_thread(qtbot):
    parent = QtCore.QObject()
    freed_on_gui_thread: list[bool] = []
    worker = SlowToReturn()
    weakref.finalize(worker, lambda: freed_on_gui_thread.append(threading.current_thread() is threading.main_thread()))
    thread = start_worker(worker, parent)
    held = weakref.ref(worker)
    qtbot.waitUntil(lambda: held().result_delivered, timeout=10000)
    del worker  # the window lets go of a worker once its result is in, while its thread may still run
    qtbot.waitUntil(lambda: bool(freed_on_gui_thread), timeout=10000)
    # freed by the worker thread, the wrapper took the C++ worker with it while the GUI thread still had
    # queued calls for it (a rare hang of the viewer)
    assert freed_on_gui_thread == [True]
    qtbot.waitUntil(lambda: not thread_running(thread), timeout=10000)


def thread_running(thread: QtCore.QThread) -> bool:
    import shiboken6

    return shiboken6.isValid(thread) and thread.isRunning()

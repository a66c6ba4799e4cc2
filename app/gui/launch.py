"""Start the Qt application: the viewer window, or a one-shot screenshot of it."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6 import QtCore, QtWidgets

Echo = Callable[[str], None]  # takes one line of output (no newline)


def _stdout(line: str) -> None:
    sys.stdout.write(line + "\n")


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")


def _headless_defaults(screenshot: bool) -> None:
    """Without a display, render offscreen (screenshots) and let VTK use EGL instead of X."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        if screenshot:
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or platform in (
        "offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def qt_binding_problem() -> str:
    """Why the installed Qt binding cannot run the viewer, or "".

    PySide6 6.12 drops a reference to None on every call of a Qt method that returns nothing. Python 3.12 and
    later never free None, but under 3.11 the viewer died ("none_dealloc") after a few hundred crosshair moves.
    The probe counts instead of trusting version numbers, so a fixed release passes.
    """
    if sys.version_info >= (3, 12):
        return ""
    import PySide6

    probe = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(200):
        probe.setObjectName("probe")
    if before - sys.getrefcount(None) < 100:
        return ""
    return (f"PySide6 {PySide6.__version__} loses a reference to None on every Qt call under Python "
            f"{sys.version_info.major}.{sys.version_info.minor}, which would crash the viewer within minutes; "
            "install a release without the fault: pip install 'PySide6-Essentials<6.12'")


def _can_show(screenshot: str | None, no_display: str, echo_error: Echo) -> bool:
    """Set up for a window (offscreen when only a screenshot is wanted); False, with the reason said, when there
    is no display for it or the Qt binding is one that crashes."""
    _headless_defaults(screenshot is not None)
    if screenshot is None and not _has_display():
        echo_error(f"lunglens: error: {no_display}")
        return False
    problem = qt_binding_problem()
    if problem:
        echo_error(f"lunglens: error: {problem}")
        return False
    return True


def freeze_heap() -> None:
    """Take every object alive now (the modules of torch, Qt, VTK, pyqtgraph: over 500,000) out of the cyclic
    garbage collector's view. Each full collection walked them all on the GUI thread: a 300-450 ms freeze of
    the window during a worklist run or a scroll (`tests/benchmarks/bench_worklist.py`). Reference counting
    still frees them; call it once the window is built, before the event loop."""
    gc.freeze()


def application() -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("LungLens")
    app.setOrganizationName("LungLens")
    return app  # type: ignore[return-value]


def run_viewer(
    path: str | None = None,
    *,
    series: str | None = None,
    overlays: list[str] | None = None,
    screenshot: str | None = None,
    layout: str | None = None,
    preset: str | None = None,
    size: tuple[int, int] = (1400, 950),
    timeout_s: float = 300.0,
    analyze: bool = False,
    model: str | None = None,
    slab: float = 0.0,
    projection: str = "mip",
    compare: str | None = None,
    compare_series: str | None = None,
    oblique: float = 0.0,
    echo: Echo = _stdout,
    echo_error: Echo = _stderr,
) -> int:
    """Open the main window (on `path` if given). With `screenshot`, save it once everything is drawn and exit.
    `model` picks the AI model (one with installed weights) that Analyze, and `analyze`, use; `slab` (mm) and
    `projection` show thick slabs (MIP, MinIP or mean). `compare` (with `compare_series` when it holds several)
    opens a second series beside the main view, linked to it (prior comparison). `oblique` turns the crosshair
    axes that many degrees clockwise in the axial view once the series is loaded (oblique MPR).

    Returns the process exit code: 0, or 1 when loading failed, an overlay was refused (the screenshot shows
    the CT without it) or the screenshot could not be written. Worker threads are joined on every path.
    The lines for the terminal go to `echo` (the screenshot written) and `echo_error` (errors); by default
    stdout and stderr.
    """
    if not _can_show(screenshot, "no display to open the viewer on (DISPLAY is not set); run it on a desktop, "
                                 "under xvfb-run, or save a picture with --screenshot FILE.png", echo_error):
        return 1
    from app.gui.main_window import MainWindow

    app = application()
    window = MainWindow(interactive=screenshot is None, persist=screenshot is None)
    if layout:
        window.set_layout(layout)
        window.layout_box.setCurrentText(layout)
    if preset:
        window.apply_preset(preset)
    if slab:
        window.set_slab(slab, projection)
    if model:
        if window.model_box.findText(model) < 0:
            echo_error(f"lunglens: error: --model {model!r}: choose one with installed weights: "
                       + ", ".join(window.model_box.itemText(i) for i in range(window.model_box.count())))
            window.close()
            return 2
        window.model_box.setCurrentText(model)
    window.resize(*size)
    window.show()
    status = {"code": 0}
    if oblique:
        def turn(_volume) -> None:
            import math

            from viewer.state.slicing import Orientation

            window.volume_loaded.disconnect(turn)  # the series asked for, not those the user opens later
            window.state.rotate_planes(Orientation.AXIAL, math.radians(oblique))

        window.volume_loaded.connect(turn)
    ready = window.volume_loaded  # everything asked for is on show (the comparison too, when one is asked)
    if compare:
        def open_comparison(_volume) -> None:
            window.volume_loaded.disconnect(open_comparison)  # once: not again for each series opened later
            QtCore.QTimer.singleShot(0, lambda: window.open_comparison(compare, series=compare_series))

        window.volume_loaded.connect(open_comparison)
        ready = window.comparison_loaded

    if screenshot:
        def shoot(_volume=None) -> None:
            QtCore.QTimer.singleShot(300, finish)

        def finish() -> None:
            try:
                out = window.save_screenshot(screenshot)
                echo(f"wrote {out}")
            except OSError as exc:
                echo_error(f"lunglens: error: {exc}")
                status["code"] = 1
            window.close()
            app.quit()

        def failed(message: str) -> None:
            echo_error(f"lunglens: error: {message}")
            status["code"] = 1
            window.close()
            app.quit()

        if analyze:
            window.analysis_done.connect(shoot)
            window.analysis_failed.connect(failed)
        else:
            ready.connect(shoot)
        window.load_failed.connect(failed)

        def overlay_refused(message: str) -> None:
            echo_error(f"lunglens: error: overlay refused: {message}")
            status["code"] = 1

        window.overlay_failed.connect(overlay_refused)
        QtCore.QTimer.singleShot(int(timeout_s * 1000), lambda: failed(f"timed out after {timeout_s:.0f} s"))
        if path is None:
            QtCore.QTimer.singleShot(0, shoot)
    if analyze:
        # analyse once the load has delivered its volume (queued after the load's own handlers)
        def analyze_once(_volume) -> None:
            ready.disconnect(analyze_once)  # the series asked for, not those the user opens later
            QtCore.QTimer.singleShot(0, window.analyze)

        ready.connect(analyze_once)
    if path is not None:
        for given in (path, compare):
            if given is not None and not Path(given).exists():
                echo_error(f"lunglens: error: {given}: no such file or folder")
                window.close()
                return 1
        window.open_path(path, series=series, overlays=overlays)
    freeze_heap()
    try:
        app.exec()
    finally:
        # a worker still running when the window goes would abort the process ("QThread: Destroyed while
        # thread is still running")
        window.annotation.shutdown()
        window.join_workers()
    return status["code"]


def run_worklist(paths: list[str], *, options=None, workers: int = 1, screenshot: str | None = None,
                 echo: Echo = _stdout, echo_error: Echo = _stderr) -> int:
    """The worklist window on `paths`; double-clicking a case opens it in the viewer with its lesion mask and
    heat map. With `screenshot`, save the window once every case is done and exit."""
    if not _can_show(screenshot, "no display for the worklist window (DISPLAY is not set); use --headless",
                     echo_error):
        return 1
    from app.gui.worklist_window import WorklistWindow
    from app.services.cases import ScreenOptions

    app = application()
    window = WorklistWindow(options or ScreenOptions(), workers=workers)
    viewers: list = []

    def open_case(source: str, series: str, overlays: list) -> None:
        from app.gui.main_window import MainWindow

        if not viewers:
            viewers.append(MainWindow(interactive=True, persist=True))
        viewer = viewers[0]
        viewer.show()
        viewer.raise_()
        viewer.open_path(source, series=series or None, overlays=overlays)

    window.open_case.connect(open_case)
    window.resize(1400, 720)
    window.show()
    status = {"code": 0}
    if screenshot:
        def finished() -> None:
            if window.is_running():
                return
            QtCore.QTimer.singleShot(300, shoot)

        def shoot() -> None:
            try:
                window.grab().save(str(screenshot))
                echo(f"wrote {screenshot}")
            except OSError as exc:
                echo_error(f"lunglens: error: {exc}")
                status["code"] = 1
            window.close()
            app.quit()

        poll = QtCore.QTimer(window)
        poll.timeout.connect(finished)
        poll.start(500)
    window.add_paths(paths)
    freeze_heap()
    try:
        app.exec()
    finally:
        window.cancel()
        window.join(600.0)
        for viewer in viewers:
            viewer.join_workers()
    return status["code"]

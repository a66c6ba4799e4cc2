"""Benchmark: painting in a slice view, from the mouse event to the repainted view, on a 512x512 CT.

    python -m tests.benchmarks.bench_annotation_gui [--slices 60] [--size 512] [--repeat 200] [--view 560]

Runs offscreen (QT_QPA_PLATFORM=offscreen unless set) in the main window (1x1 layout, axial view about
`--view` pixels square), with the annotation layer and an AI-like heat-map layer on show. Each figure is
the time from sending the mouse event(s) to the view's viewport until a synchronous repaint of that view
ended: what a person sees after a click or a mouse move.

* dab: a click (press + release) of a 5 mm brush: begin_stroke, one dab, end_stroke (one undo step);
* drag step: one mouse move during a drag: a line from the previous position;
* sphere dab: a click of a 10 mm 3D sphere;
* undo: Ctrl+Z of a 30-move stroke.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

LEFT = QtCore.Qt.MouseButton.LeftButton


def _mouse(widget: QtWidgets.QWidget, kind: QtCore.QEvent.Type, pos: QtCore.QPoint, buttons) -> None:
    ev = QtGui.QMouseEvent(kind, QtCore.QPointF(pos), QtCore.QPointF(widget.mapToGlobal(pos)),
                           LEFT if kind != QtCore.QEvent.Type.MouseMove else QtCore.Qt.MouseButton.NoButton,
                           buttons, QtCore.Qt.KeyboardModifier.NoModifier)
    QtWidgets.QApplication.sendEvent(widget, ev)


def run(slices: int, size: int, repeat: int, view_px: int) -> dict[str, float]:
    from app.gui.main_window import MainWindow
    from viewer.core.volume import Volume
    from viewer.state.layers import HeatmapLayer
    from viewer.state.slicing import Orientation

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    rng = np.random.default_rng(0)
    ct = rng.normal(-700, 200, (slices, size, size)).astype(np.int16)
    volume = Volume(ct, (1.0, 0.7, 0.7))
    win = MainWindow(interactive=False)
    win.set_layout("1x1")
    for dock in (win.layers_dock, win.ai_dock, win.annotation_dock):
        dock.hide()
    win.resize(view_px + 4, view_px + 120)
    win.show()
    win._loading_path = "benchmark"
    win._on_loaded(volume)
    heat = np.zeros(win.state.shape, np.float32)
    heat[:, 100:400, 100:400] = 0.6
    win.state.layers.add(HeatmapLayer("cam", heat), win.state.shape)
    win.set_tool("brush")
    win.annotation.set_brush_size(5.0)
    view = win.views[Orientation.AXIAL]
    for _ in range(5):
        app.processEvents()
    # the docks are hidden: fit the window so the view gets about view_px square
    extra_w = win.width() - view.width()
    extra_h = win.height() - view.height()
    win.resize(view_px + extra_w, view_px + extra_h)
    for _ in range(5):
        app.processEvents()
    vp = view.graphics.viewport()
    k = win.state.cursor[0]

    def settle() -> None:
        view.refresh_now()
        vp.repaint()

    settle()
    print(f"view {vp.width()}x{vp.height()} px, volume {ct.shape}", file=sys.stderr)
    results: dict[str, list[float]] = {"dab": [], "drag step": [], "sphere dab": [], "undo (30-move stroke)": []}
    for n in range(repeat):
        p = view.view_pixel_of_voxel((k, 60 + (n * 7) % 380, 60 + (n * 13) % 380))
        t0 = time.perf_counter()
        _mouse(vp, QtCore.QEvent.Type.MouseButtonPress, p, LEFT)
        _mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, p, QtCore.Qt.MouseButton.NoButton)
        settle()
        results["dab"].append(time.perf_counter() - t0)
    for stroke in range(max(1, repeat // 30)):
        _mouse(vp, QtCore.QEvent.Type.MouseButtonPress, view.view_pixel_of_voxel((k, 100 + stroke * 9, 80)), LEFT)
        for m in range(30):
            p = view.view_pixel_of_voxel((k, 100 + stroke * 9, 80 + m * 10))
            t0 = time.perf_counter()
            _mouse(vp, QtCore.QEvent.Type.MouseMove, p, LEFT)
            settle()
            results["drag step"].append(time.perf_counter() - t0)
        _mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, p, QtCore.Qt.MouseButton.NoButton)
        t0 = time.perf_counter()
        win.annotation.undo()
        settle()
        results["undo (30-move stroke)"].append(time.perf_counter() - t0)
    win.set_tool("sphere")
    win.annotation.set_brush_size(10.0)
    for n in range(repeat // 2):
        p = view.view_pixel_of_voxel((k, 60 + (n * 11) % 380, 60 + (n * 5) % 380))
        t0 = time.perf_counter()
        _mouse(vp, QtCore.QEvent.Type.MouseButtonPress, p, LEFT)
        _mouse(vp, QtCore.QEvent.Type.MouseButtonRelease, p, QtCore.Qt.MouseButton.NoButton)
        settle()
        results["sphere dab"].append(time.perf_counter() - t0)
    win.annotation.prompt_answer = lambda _kind, _text: "discard"
    win.close()
    return {name: statistics.median(t) * 1000 for name, t in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--view", type=int, default=560)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LUNGLENS_CONFIG_DIR"] = os.path.join(tmp, "cfg")
        os.environ["LUNGLENS_RECOVERY_DIR"] = os.path.join(tmp, "recovery")
        medians = run(args.slices, args.size, args.repeat, args.view)
    for name, ms in medians.items():
        print(f"{name:24s} {ms:7.2f} ms (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: slice-change latency with overlays (single slices, a 10 mm MIP slab, and oblique planes turned
30 degrees in the axial view), and time to first image when opening a series.

    python -m tests.benchmarks.bench_viewer [--slices 300] [--size 512] [--repeat 100]

Runs offscreen (QT_QPA_PLATFORM=offscreen unless set). Slice change is timed from the
state change (what a wheel event or key press triggers) to the end of a synchronous
repaint of the view. Opening is timed from `open_path` to the first painted axial image,
against SimpleITK's ImageSeriesReader on the same files in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import SimpleITK as sitk
from PySide6 import QtWidgets

from tests.benchmarks.bench_loading import phantom_series
from viewer.io.volumes import open_volume
from viewer.state.layers import HeatmapLayer, LabelLayer
from viewer.state.slicing import Orientation
from viewer.state.view_state import ViewerState


def slice_change_ms(app, volume, orientation: Orientation, repeat: int, slab_mm: float = 0.0,
                    oblique_deg: float = 0.0) -> float:
    from viewer.gui.slice_view import SliceView

    state = ViewerState(volume)
    state.set_slab(slab_mm, "mip")
    state.rotate_planes(Orientation.AXIAL, math.radians(oblique_deg))
    labels = np.zeros(state.shape, np.uint8)
    labels[:, 100:400, 100:250] = 1
    labels[:, 200:300, 300:420] = 3
    heat = np.zeros(state.shape, np.float32)
    heat[:, 150:350, 150:350] = np.linspace(0, 1, 200, dtype=np.float32)[None, None, :]
    state.layers.add(LabelLayer("lungs", labels), state.shape)
    state.layers.add(HeatmapLayer("cam", heat), state.shape)
    view = SliceView(state, orientation)
    view.resize(560, 560)
    view.show()
    app.processEvents()
    view.refresh_now()
    times = []
    n = state.shape[orientation.axis]
    for step in range(repeat):
        t0 = time.perf_counter()
        state.set_slice(orientation, (step * 7) % n)
        view.refresh_now()
        view.graphics.viewport().repaint()
        times.append(time.perf_counter() - t0)
    view.close()
    return statistics.median(times) * 1000


def first_image_s(app, folder: Path) -> float:
    from app.gui.main_window import MainWindow

    win = MainWindow(interactive=False)
    win.resize(1200, 900)
    win.show()
    app.processEvents()
    shown: dict[str, float] = {}
    axial = win.views[Orientation.AXIAL]

    def on_loaded(_vol) -> None:
        axial.refresh_now()
        axial.graphics.viewport().repaint()
        shown["t"] = time.perf_counter()

    win.volume_loaded.connect(on_loaded)
    t0 = time.perf_counter()
    win.open_path(str(folder))
    while "t" not in shown and time.perf_counter() - t0 < 60:
        app.processEvents()
        time.sleep(0.001)
    win.close()
    return shown["t"] - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    args = ap.parse_args()
    os.environ.setdefault("LUNGLENS_CONFIG_DIR", os.path.join(args.cache, "config"))
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    folder = phantom_series(Path(args.cache), args.slices, args.size) / "dicom"
    for f in folder.iterdir():
        f.read_bytes()
    volume = open_volume(folder)

    rows = []
    for o in Orientation:
        rows.append((f"slice change, {o.value}, 2 overlays", f"{slice_change_ms(app, volume, o, args.repeat):.1f} ms"))
    for o in Orientation:
        ms = slice_change_ms(app, volume, o, args.repeat, slab_mm=10.0)
        rows.append((f"slice change, {o.value}, 2 overlays, 10 mm MIP slab", f"{ms:.1f} ms"))
    for o in (Orientation.CORONAL, Orientation.SAGITTAL):
        ms = slice_change_ms(app, volume, o, args.repeat, oblique_deg=30.0)
        rows.append((f"slice change, {o.value} oblique (30 deg), 2 overlays", f"{ms:.1f} ms"))
    opens = [first_image_s(app, folder) for _ in range(3)]
    sitk_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
        r.SetOutputPixelType(sitk.sitkInt16)
        r.Execute()
        sitk_times.append(time.perf_counter() - t0)
    t_open, t_sitk = statistics.median(opens), statistics.median(sitk_times)
    rows.append(("open series -> first axial image painted", f"{t_open:.2f} s"))
    rows.append(("SimpleITK load alone (no display), same files", f"{t_sitk:.2f} s"))
    print(f"\n{args.slices} slices of {args.size}x{args.size}; medians ({args.repeat} slice changes, 3 opens)")
    for name, value in rows:
        print(f"  {name:50} {value:>10}")
    print(f"  first image vs SimpleITK load alone: {t_sitk / t_open:.2f}x")
    sys.stdout.flush()
    # PySide6 can crash while the interpreter garbage-collects Qt objects at exit; the figures are out
    os._exit(0)


if __name__ == "__main__":
    main()

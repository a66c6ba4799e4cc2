"""Benchmark: a folder of phantom studies screened from the worklist window (worker processes) and on a local
Dask cluster, against `screen` in one process, with the GUI's event-loop latency while the worklist runs.

    python -m tests.benchmarks.bench_worklist [--studies 100] [--slices 300] [--size 512] [--workers 2]
        [--lesions hu-rule|dcn] [--cache /tmp/lunglens-bench-worklist] [--latency-baseline 60]
        [--baseline-load sort|screen|both] [--skip-baseline] [--skip-worklist] [--skip-cluster]
        [--trace] [--dump-stalls FILE]

Each study is its own phantom (seed = its number) written once as DICOM into the cache folder. Measured in one
run: (1) `screen` over the folder in this process (the baseline), (2) the worklist window with `--workers`
processes, its wall time per study and the event loop's latency (a 10 ms timer's lateness: median, 99th
percentile and maximum) while it screens, (3) the same timer on a bare event loop beside `--workers` busy
processes at the workers' priority that sort numbers, or screen the studies as the workers do (what this machine
alone does to the lateness under that load), (4) `screen --cluster` on a `LocalCluster` of `--workers` processes.
`--trace` prints every tick over 30 ms with what the GUI thread did meanwhile (its CPU time, page faults,
context switches, and the time in each of the window's Python methods); `--dump-stalls` writes every thread's
stack (faulthandler) when a tick is 60 ms late.
Each pass starts from an empty result cache. Not part of the suite.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from viewer.dicom.write import write_ct_series
from viewer.synthetic.phantom import PhantomConfig, make_phantom


def studies(root: Path, n: int, slices: int, size: int) -> Path:
    folder = root / f"studies-{slices}x{size}"
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        case = folder / f"study{k:03d}"
        if (case / "done").exists():
            continue
        shutil.rmtree(case, ignore_errors=True)
        ph = make_phantom(PhantomConfig(shape=(slices, size, size), spacing=(1.0, 350 / size, 350 / size),
                                        n_ggo=k % 4, n_consolidation=k % 2, seed=100 + k))
        write_ct_series(ph.volume, case / "dicom")
        (case / "done").touch()
    return folder


SPENT: dict[str, list[float]] = {}  # traced runs: GUI-thread time in the window's Python methods since the last tick


def time_methods(targets: list[tuple[type, str]]) -> None:
    """Wrap methods so that traced runs can say which of them a stall's time went to."""
    import functools

    for cls, name in targets:
        def wrap(fn, key=f"{cls.__name__}.{name}"):
            @functools.wraps(fn)
            def timed(*args, **kwargs):
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    entry = SPENT.setdefault(key, [0.0, 0])
                    entry[0] += time.perf_counter() - t0
                    entry[1] += 1
            return timed
        setattr(cls, name, wrap(getattr(cls, name)))


class Ticks:
    """The lateness of a 10 ms timer on this thread's event loop (ms per tick)."""

    def __init__(self, trace: bool = False, dump: Path | None = None) -> None:
        from PySide6 import QtCore

        self.trace, self.lateness = trace, []
        self._dump_file = open(dump, "w") if dump else None
        self.timer = QtCore.QTimer()
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        if self.trace:
            gc.callbacks.append(self._gc)
        self.t0 = self.last = time.perf_counter()
        self.cpu, self.usage = time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD)
        self._arm()
        self.timer.start(10)

    def stop(self) -> None:
        self.timer.stop()
        if self._dump_file is not None:
            faulthandler.cancel_dump_traceback_later()
            self._dump_file.close()

    def _gc(self, phase: str, info: dict) -> None:
        """Collections of the cyclic garbage collector over 5 ms, on any thread (traced runs only)."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        elif (took := (time.perf_counter() - self._gc_t0) * 1000) > 5:
            print(f"  gc generation {info['generation']} took {took:.0f} ms at {time.perf_counter() - self.t0:.1f} s "
                  f"({info['collected']} collected, {threading.current_thread().name})", flush=True)

    def _arm(self) -> None:
        """Every thread's stack written by faulthandler's own C thread (no GIL needed) when the next tick is
        over 50 ms late: where the GUI thread is, or which thread holds the GIL, during a stall."""
        if self._dump_file is not None:
            faulthandler.cancel_dump_traceback_later()
            self._dump_file.write(f"--- armed at {time.perf_counter() - self.t0:.3f} s\n")
            self._dump_file.flush()
            faulthandler.dump_traceback_later(0.060, file=self._dump_file)

    def _tick(self) -> None:
        now, cpu, usage = time.perf_counter(), time.thread_time(), resource.getrusage(resource.RUSAGE_THREAD)
        self.lateness.append(max(0.0, (now - self.last) * 1000 - 10.0))
        if self.trace and self.lateness[-1] > 30:
            # what the GUI thread did meanwhile: its own CPU time, the page faults that read the disk, and the
            # times the kernel took the CPU from it (involuntary) or it waited (voluntary: a lock, the GIL, I/O)
            print(f"  stall {self.lateness[-1]:.0f} ms at {now - self.t0:.1f} s: GUI thread CPU "
                  f"{(cpu - self.cpu) * 1000:.0f} ms, major faults {usage.ru_majflt - self.usage.ru_majflt}, "
                  f"switches {usage.ru_nvcsw - self.usage.ru_nvcsw} voluntary, "
                  f"{usage.ru_nivcsw - self.usage.ru_nivcsw} involuntary (CLOCK_MONOTONIC {now:.3f}); "
                  + ", ".join(f"{k} {v[0] * 1000:.0f} ms/{v[1]}" for k, v in SPENT.items() if v[1]), flush=True)
        SPENT.clear()
        self.last, self.cpu, self.usage = now, cpu, usage
        self._arm()

    def summary(self) -> str:
        late = self.lateness or [0.0]
        p99 = statistics.quantiles(late, n=100)[98] if len(late) > 100 else max(late)
        over = sum(x > 50 for x in late)
        return (f"median {statistics.median(late):.1f} ms, p99 {p99:.1f} ms, max {max(late):.1f} ms over "
                f"{len(late)} ticks ({over} over 50 ms)")


def bare_loop(busy: int, seconds: float, trace: bool, screening: list[str] | None = None,
              out: Path | None = None) -> str:
    """The same timer on an event loop that does nothing else, beside `busy` CPU-bound processes at the workers'
    priority: what the machine alone does to the lateness. The processes sort numbers, or, with `screening`
    (paths), run `lunglens screen` over their share of them with one torch thread each, as the workers do: the
    same load (torch's vector units, the disk) without the worklist window."""
    from PySide6 import QtCore

    if screening:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        cmds = [[sys.executable, "-m", "app.cli", "screen", *screening[k::busy], "--out", str(out / f"load{k}"),
                 "--lesions", "hu-rule"] for k in range(busy)]
    else:
        env = None
        cmds = [[sys.executable, "-c", "import numpy as np\nwhile True: np.sort(np.random.rand(2_000_000))"]] * busy
    procs = [subprocess.Popen(["nice", "-n", "10", *cmd], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for cmd in cmds]
    try:
        if screening:
            time.sleep(15)  # past their start-up (imports, model), into the screening
        ticks = Ticks(trace)
        loop = QtCore.QEventLoop()
        QtCore.QTimer.singleShot(int(seconds * 1000), loop.quit)
        ticks.start()
        loop.exec()
        ticks.stop()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return ticks.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lesions", default="hu-rule", choices=("hu-rule", "dcn"))
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench-worklist"))
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-cluster", action="store_true")
    ap.add_argument("--skip-worklist", action="store_true", help="no worklist pass (the baselines alone)")
    ap.add_argument("--trace", action="store_true", help="print each event-loop stall over 30 ms with its time")
    ap.add_argument("--dump-stalls", type=Path, metavar="FILE",
                    help="write every thread's stack to FILE whenever a tick is over 50 ms late (faulthandler)")
    ap.add_argument("--latency-baseline", type=float, default=60.0, metavar="S",
                    help="seconds of a bare event loop beside as many busy processes as workers (0: skip)")
    ap.add_argument("--baseline-load", choices=("sort", "screen", "both"), default="both",
                    help="what the busy processes of the baseline do: sort numbers, or screen the studies")
    args = ap.parse_args()
    root = Path(args.cache)
    t0 = time.perf_counter()
    folder = studies(root, args.studies, args.slices, args.size)
    print(f"{args.studies} studies of {args.slices} x {args.size}^2 ready ({time.perf_counter() - t0:.0f} s)")
    paths = [str(p) for p in sorted(folder.iterdir())[: args.studies]]

    from app.services.batch_screening import screen
    from app.services.cases import ScreenOptions
    from inference.screening.config import ScreeningConfig

    config = ScreeningConfig(lesion_model=None if args.lesions == "hu-rule" else "dcn")
    options = ScreenOptions(config=config)
    n = len(paths)
    if not args.skip_baseline:
        t0 = time.perf_counter()
        screen(paths, root / "out-serial", config=config)
        serial = time.perf_counter() - t0
        print(f"screen, one process: {serial:.0f} s, {serial / n:.2f} s per study")

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from app.gui.launch import freeze_heap
    from app.gui.worklist_window import WorklistWindow
    from app.services.worklist import Worklist

    _app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])  # kept alive for the run
    if not args.skip_worklist:
        if args.trace:
            from app.gui import worklist_window as ww

            time_methods([(ww.WorklistModel, "data"), (ww.WorklistModel, "item_changed"),
                          (ww._Filter, "filterAcceptsRow"),
                          (ww.WorklistWindow, "_update_status"), (ww.WorklistWindow, "_on_added"),
                          (ww.WorklistWindow, "_on_updated")])
        shutil.rmtree(root / "wl", ignore_errors=True)
        wl = Worklist(options, cache_path=root / "wl" / "cache.sqlite3", results_root=root / "wl" / "cases")
        window = WorklistWindow(worklist=wl, workers=args.workers)
        window.show()
        freeze_heap()  # as `lunglens worklist` does before its event loop
        ticks = Ticks(args.trace, args.dump_stalls)
        t0 = time.perf_counter()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        ticks.start()
        window.add_paths(paths)
        loop = QtCore.QEventLoop()  # the window's own event loop, idle between events (no polling of our own)
        poll = QtCore.QTimer()
        poll.timeout.connect(lambda: None if window.is_running() else loop.quit())
        poll.start(100)
        loop.exec()
        poll.stop()
        wall = time.perf_counter() - t0
        ticks.stop()
        done = sum(i.status == "done" for i in wl.items)
        print(f"worklist window, {args.workers} worker processes: {wall:.0f} s, {wall / n:.2f} s per study "
              f"({done} done); event-loop lateness {ticks.summary()}")
        window.close()
        gui = resource.getrusage(resource.RUSAGE_SELF)
        workers = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, once joined
        print(f"  CPU time: the GUI process {gui.ru_utime + gui.ru_stime - cpu0.ru_utime - cpu0.ru_stime:.1f} s, "
              f"worker processes {workers.ru_utime + workers.ru_stime:.1f} s "
              f"({(workers.ru_utime + workers.ru_stime) / n:.2f} s per study); the GUI process's page faults that "
              f"read the disk: {gui.ru_majflt - cpu0.ru_majflt}")
    for load in ("sort", "screen") if args.latency_baseline > 0 else ():
        if args.baseline_load in (load, "both"):
            shutil.rmtree(root / "out-load", ignore_errors=True)
            summary = bare_loop(args.workers, args.latency_baseline, args.trace,
                                paths if load == "screen" else None, root / "out-load")
            print(f"baseline: a bare event loop beside {args.workers} processes (nice 10, as the workers) that "
                  f"{'screen the studies' if load == 'screen' else 'sort numbers'} for {args.latency_baseline:.0f} s: "
                  f"lateness {summary}", flush=True)
    if args.skip_cluster:
        return

    from distributed import LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        t0 = time.perf_counter()
        screen(paths, root / "out-dask", config=config, cluster=c.scheduler_address)
        dask = time.perf_counter() - t0
    print(f"screen --cluster (LocalCluster, {args.workers} worker processes): {dask:.0f} s, {dask / n:.2f} s per "
          "study")


if __name__ == "__main__":
    main()

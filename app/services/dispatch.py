"""Screening cases away from the calling thread's process: in local worker processes, or as tasks on a Dask
cluster. Each case is an independent task; a failure (even a crashed worker) is reported with its case."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from viewer.core.progress import ProgressFn

if TYPE_CHECKING:  # imported where used: a spawned worker unpickles `_init_worker` from this module, and lowers
    # its priority there before it imports torch (seconds of CPU a GUI beside it would feel)
    from app.services.cases import Case, ScreenOptions

_log = logging.getLogger(__name__)
WORKER_DIED = "the worker process died while screening it, twice (out of memory, or a crash in a library?)"

# one classifier per worker process, loaded by its first case; the lock keeps a multi-threaded Dask worker from
# running two cases through one model at once (Grad-CAM hooks the model's layers)
_worker_model: tuple[ScreenOptions, object] | None = None
_worker_lock = threading.Lock()


def _init_worker(threads: int) -> None:
    """A screening process: `threads` torch threads, and a lower CPU priority, so that the viewer's and the
    worklist's event loop (and the user's other programs) get a core at once when they need one."""
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass
    from inference.core.device import limit_threads

    limit_threads(threads)


def screen_task(case: Case, out: str, options: ScreenOptions) -> dict:
    """One case in a worker: the row `screen_case` gives (the classifier is loaded once per process)."""
    from app.services.cases import screen_case

    global _worker_model
    with _worker_lock:
        if _worker_model is None or _worker_model[0] != options:
            _worker_model = (options, options.load())
        return screen_case(case, Path(out), _worker_model[1], options)  # type: ignore[arg-type]


def _failed(case: Case, why: object) -> dict:
    from app.services.cases import FAILED

    return {"case": case.name, "series": case.series, "source": case.source, "status": f"{FAILED}: {why}"}


def run_in_processes(cases: Sequence[Case], out_of: Callable[[int], Path], options: ScreenOptions, workers: int, *,
                     on_start: Callable[[int], None] | None = None, on_done: Callable[[int, dict], None],
                     paused: threading.Event | None = None, cancelled: threading.Event | None = None,
                     complete: threading.Event | None = None) -> list[int]:
    """Screen `cases` in at most `workers` spawned processes (one per core at most), `workers` cases in flight.

    `on_start(i)` when case i is handed to a process, `on_done(i, row)` when it is over. A pause starts no new case
    until it is cleared; a cancel starts no new case (the running ones finish). A process that dies fails every
    case in flight with it: each is tried once more, from then on one case at a time, so a case that kills a
    process twice fails alone (`WORKER_DIED`). With `complete`, `cases` is a list that another thread may still
    append to (a folder being scanned) until it sets `complete`: each case is screened as soon as it is there
    and a process is free. Returns the indices never started (cancelled).
    """
    if complete is None:
        complete = threading.Event()
        complete.set()
        workers = min(workers, len(cases) or 1)
    workers = max(1, min(workers, os.cpu_count() or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    paused = paused or threading.Event()
    cancelled = cancelled or threading.Event()
    pending: list[int] = []
    crashes: list[int] = []
    running: dict[Future, int] = {}

    def arriving() -> bool:
        """Queue the cases appended since the last look; whether more may come."""
        more = not complete.is_set()  # read first: once it is set, every case is already in `cases`
        new = range(len(crashes), len(cases))
        pending.extend(new)
        crashes.extend(0 for _ in new)
        return more

    def new_pool(n: int) -> ProcessPoolExecutor:
        # spawn: a forked copy of a process that already runs torch's (or Qt's) threads can deadlock
        return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                   initargs=(threads,))

    pool = new_pool(workers)
    try:
        while True:
            more = arriving()
            if not (running or (not cancelled.is_set() and (pending or more))):
                break
            broken = False
            while pending and len(running) < workers and not paused.is_set() and not cancelled.is_set():
                i = pending[0]
                try:
                    future = pool.submit(screen_task, cases[i], str(out_of(i)), options)
                except BrokenProcessPool:
                    broken = True
                    break
                pending.pop(0)
                running[future] = i
                if on_start is not None:
                    on_start(i)
            if not broken:
                if not running:  # paused, or waiting for the scan's next case
                    if more and not pending:
                        complete.wait(0.05)
                    else:
                        cancelled.wait(0.1)
                    continue
                # a free process takes the scan's next case soon after it is found
                timeout = 0.05 if more and len(running) < workers else 0.2
                finished, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = running.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = True
                        crashes[i] += 1
                        if crashes[i] < 2:
                            pending.insert(0, i)
                        else:
                            on_done(i, _failed(cases[i], WORKER_DIED))
                        continue
                    try:
                        row = future.result()
                    except Exception as exc:  # noqa: BLE001 - a bug in one case must not lose the others
                        row = _failed(cases[i], f"{type(exc).__name__}: {exc}")
                    on_done(i, row)
            if broken:
                for future, i in list(running.items()):  # they died with the pool: each gets another try
                    running.pop(future)
                    crashes[i] += 1
                    pending.insert(0, i)
                pool.shutdown(wait=True, cancel_futures=True)
                workers = 1
                pool = new_pool(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return pending


def screen_elsewhere(cases: list[Case], out: Path, options: ScreenOptions, *, workers: int = 1,
                     cluster: str | None = None, progress: ProgressFn | None = None,
                     log: Callable[[str], None] = _log.info,
                     on_row: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Rows in the order of `cases`; `on_row(index, row)` as each finishes."""
    from app.services.cases import FAILED

    rows: list[dict | None] = [None] * len(cases)

    def done(i: int, row: dict) -> None:
        rows[i] = row
        if row["status"].startswith(FAILED):
            log(f"{cases[i].name}: {row['status']}")
        if on_row is not None:
            on_row(i, row)
        if progress is not None:
            progress(sum(r is not None for r in rows) / max(1, len(cases)), f"{cases[i].name}: done")

    if cluster:
        _on_dask(cases, out, options, cluster, done)
    else:
        run_in_processes(cases, lambda i: out, options, workers, on_done=done)
    return [r for r in rows if r is not None]


def _on_dask(cases: list[Case], out: Path, options: ScreenOptions, address: str,
             done: Callable[[int, dict], None]) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ValueError("--cluster needs Dask distributed: pip install 'lunglens[cluster]'") from None
    try:
        client = Client(address, timeout="20s")
    except OSError as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {address} ({exc})") from None
    run = uuid.uuid4().hex[:8]  # task keys unique across runs sharing a scheduler
    with client:
        futures = [client.submit(screen_task, case, str(out), options, pure=False,
                                 key=f"lunglens-{run}-{i}-{case.name}") for i, case in enumerate(cases)]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            try:
                done(i, future.result())
            except Exception as exc:  # noqa: BLE001 - a failed task is that case's failure
                done(i, _failed(cases[i], f"{type(exc).__name__}: {exc}"))

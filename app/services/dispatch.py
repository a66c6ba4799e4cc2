"""Screening cases away from the calling thread's process: in local worker processes, or as tasks on a Dask
cluster. Each case is an independent task; a failure (even a crashed worker) is reported with its case."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from app.services.cases import Case, ScreenOptions, screen_case
from viewer.core.progress import ProgressFn

_log = logging.getLogger(__name__)
FAILED = "failed"

# one classifier per worker process, loaded by its first case
_worker_model: tuple[ScreenOptions, object] | None = None


def _init_worker(threads: int) -> None:
    """A screening process: `threads` torch threads, and a lower CPU priority, so that the viewer's and the
    worklist's event loop (and the user's other programs) get a core at once when they need one."""
    import torch

    torch.set_num_threads(max(1, threads))
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass


def screen_task(case: Case, out: str, options: ScreenOptions) -> dict:
    """One case in a worker: the row `screen_case` gives (the classifier is loaded once per process)."""
    global _worker_model
    if _worker_model is None or _worker_model[0] != options:
        _worker_model = (options, options.load())
    return screen_case(case, Path(out), _worker_model[1], options)  # type: ignore[arg-type]


def _failed(case: Case, why: object) -> dict:
    return {"case": case.name, "series": case.series, "source": case.source, "status": f"{FAILED}: {why}"}


def screen_elsewhere(cases: list[Case], out: Path, options: ScreenOptions, *, workers: int = 1,
                     cluster: str | None = None, progress: ProgressFn | None = None,
                     log: Callable[[str], None] = _log.info,
                     on_row: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Rows in the order of `cases`; `on_row(index, row)` as each finishes."""
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
        _on_processes(cases, out, options, workers, done)
    return [r for r in rows if r is not None]


def _on_processes(cases: list[Case], out: Path, options: ScreenOptions, workers: int,
                  done: Callable[[int, dict], None]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    workers = max(1, min(workers, os.cpu_count() or 1, len(cases) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked copy of a process that already runs torch's threads can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(screen_task, case, str(out), options): i for i, case in enumerate(cases)}
        for future in as_completed(futures):
            i = futures[future]
            try:
                done(i, future.result())
            except BrokenProcessPool:
                done(i, _failed(cases[i], "the worker process died (out of memory?)"))
            except Exception as exc:  # noqa: BLE001 - a bug in one case must not lose the others
                done(i, _failed(cases[i], f"{type(exc).__name__}: {exc}"))


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
    with client:
        futures = [client.submit(screen_task, case, str(out), options, pure=False, key=f"lunglens-{i}-{case.name}")
                   for i, case in enumerate(cases)]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            try:
                done(i, future.result())
            except Exception as exc:  # noqa: BLE001 - a failed task is that case's failure
                done(i, _failed(cases[i], f"{type(exc).__name__}: {exc}"))

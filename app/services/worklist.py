"""The triage worklist: every series found under folders (or retrieved from a PACS) is queued, screened in
worker processes and ranked by probability; results come from and go to the `ResultCache`.

Qt-free: the GUI runs `Worklist.run` in a worker thread and listens to `on_update`; the command line calls it
directly. Screening itself runs in separate processes (at most one per core), so the calling process, and a
GUI's event loop, stay free.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.services.cases import Case, ScreenOptions, find_cases, rank_rows, write_results
from app.services.dispatch import _init_worker, screen_task
from app.services.worklist_db import CacheKey, ResultCache, data_dir, fileset_digest
from inference.screening.assess import STATUS_OK

QUEUED, RUNNING, DONE = "queued", "running", "done"
NOT_ASSESSABLE, FAILED = "not assessable", "failed"


@dataclass
class WorkItem:
    """One series on the worklist."""

    case: Case
    key: CacheKey
    status: str = QUEUED  # queued | running | done | not assessable: why | failed: why
    row: dict = field(default_factory=dict)
    case_dir: Path | None = None
    reviewed: bool = False
    crashes: int = 0  # worker processes that died while it ran (it or a case beside it)
    _prediction: dict | None = field(default=None, repr=False, compare=False)

    @property
    def probability(self) -> float | None:
        p = self.row.get("probability")
        return float(p) if p is not None and self.status == DONE else None

    def prediction(self) -> dict:
        """prediction.json of a done case ({} otherwise)."""
        if self.case_dir is None or self.status != DONE:
            return {}
        if self._prediction is None:
            try:
                self._prediction = json.loads((self.case_dir / "prediction.json").read_text())
            except (OSError, ValueError):
                return {}
        return self._prediction

    def thumbnail(self) -> Path | None:
        """The key image of the most involved level, when screened."""
        keys = self.prediction().get("key_images") or []
        path = self.case_dir / keys[0]["file"] if keys and self.case_dir else None
        return path if path is not None and path.is_file() else None


def _status_of(row: dict) -> str:
    return DONE if row.get("status") == STATUS_OK else str(row.get("status", FAILED))


def model_digest(options: ScreenOptions) -> str:
    """A digest of the model's weights (and its lesion model's) and every setting that changes a result."""
    from inference.models import get_model

    parts = [options.model, options.lungs, json.dumps(asdict(options.config) if options.config else {},
                                                      sort_keys=True, default=str)]
    lesion = options.config.lesion_model if options.config else "dcn"
    for name in (options.model, lesion):
        if name:
            spec = get_model(name)
            parts.append(spec.weights.sha256 if spec.weights else "no-weights")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _files_of(case: Case) -> list[str]:
    if case.entry is not None:
        return [h.path for h in case.entry.headers]
    return [case.source]


class Worklist:
    """The worklist of one model; `results_root` holds each screened case's folder (masks, key images)."""

    def __init__(self, options: ScreenOptions | None = None, cache_path: str | os.PathLike | None = None,
                 results_root: str | os.PathLike | None = None) -> None:
        self.options = options or ScreenOptions()
        self.cache_path = Path(cache_path) if cache_path else data_dir() / "worklist.sqlite3"
        self.results_root = Path(results_root) if results_root else data_dir() / "worklist" / "cases"
        self.weights = model_digest(self.options)
        self.items: list[WorkItem] = []
        self.problems: list[dict] = []  # paths that held no series
        self._lock = threading.Lock()
        with ResultCache(self.cache_path):  # created or migrated now: a bad file is reported before any work
            pass

    def add(self, paths: list[str]) -> list[WorkItem]:
        """Find every series under `paths`; each new one is queued, or done at once from the cache."""
        found = find_cases([str(p) for p in paths], self.problems)
        added = []
        known = {item.key for item in self.items}
        with ResultCache(self.cache_path) as cache:
            for case in found:
                uid = case.series or os.path.realpath(case.source)
                key = CacheKey(uid, fileset_digest(_files_of(case)), self.options.model, self.weights)
                if key in known:
                    continue
                item = WorkItem(case, key, row=self._identity(case))
                cached = cache.get(key)
                if cached is not None:
                    item.row, item.reviewed = cached, cached["reviewed"]
                    item.case_dir = Path(cached["case_dir"]) if cached.get("case_dir") else None
                    item.status = _status_of(cached)
                elif case.refusal:
                    item.status = f"{NOT_ASSESSABLE}: {case.refusal}"
                added.append(item)
                known.add(key)
        with self._lock:
            self.items.extend(added)
        return added

    @staticmethod
    def _identity(case: Case) -> dict:
        md = case.entry.metadata if case.entry is not None else None
        return {"case": case.name, "series": case.series, "source": case.source,
                "patient_id": md.patient_id if md else "", "patient_name": md.patient_name if md else "",
                "study_date": md.study_date if md else "",
                "series_description": md.series_description if md else Path(case.source).name}

    def queued(self) -> list[WorkItem]:
        return [i for i in self.items if i.status in (QUEUED, RUNNING)]

    def run(self, workers: int = 1, *, on_update: Callable[[WorkItem], None] | None = None,
            paused: threading.Event | None = None, cancelled: threading.Event | None = None) -> None:
        """Screen every queued item in `workers` processes (at most one per core), keeping at most `workers` cases
        in flight: a pause lets the running ones finish and starts no more until it is cleared; a cancel also
        stops starting new ones (running cases finish and are kept). Returns when nothing is left to start."""
        workers = max(1, min(workers, os.cpu_count() or 1))
        threads = max(1, (os.cpu_count() or 1) // workers)
        paused = paused or threading.Event()
        cancelled = cancelled or threading.Event()
        notify = on_update or (lambda item: None)
        pending = [i for i in self.items if i.status == QUEUED]
        if not pending:
            return
        running: dict[Future, WorkItem] = {}
        cache = ResultCache(self.cache_path)

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_init_worker, initargs=(threads,))

        pool = new_pool()
        try:
            while (pending and not cancelled.is_set()) or running:
                while pending and len(running) < workers and not paused.is_set() and not cancelled.is_set():
                    item = pending.pop(0)
                    out = self.results_root / item.key.digest
                    item.status = RUNNING
                    running[pool.submit(screen_task, item.case, str(out), self.options)] = item
                    notify(item)
                if not running:
                    cancelled.wait(0.1)  # paused with nothing in flight
                    continue
                finished, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
                broken = False
                for future in finished:
                    item = running.pop(future)
                    if isinstance(future.exception(), BrokenProcessPool):
                        # a worker died: every case in flight fails with it; each is tried again once, alone
                        broken = True
                        item.crashes += 1
                        if item.crashes < 2:
                            item.status = QUEUED
                            pending.insert(0, item)
                            notify(item)
                            continue
                    self._finish(item, future, cache)
                    notify(item)
                if broken:
                    for future, item in list(running.items()):  # they died with the pool: try them again too
                        running.pop(future)
                        item.crashes += 1
                        item.status = QUEUED
                        pending.insert(0, item)
                    pool.shutdown(wait=True, cancel_futures=True)
                    workers = 1  # from now on one case at a time, so the culprit fails alone
                    pool = new_pool()
        finally:
            for item in running.values():  # interrupted: their results were never stored, so they stay queued
                item.status = QUEUED
            pool.shutdown(wait=True, cancel_futures=True)
            cache.close()

    def _finish(self, item: WorkItem, future: Future, cache: ResultCache) -> None:
        try:
            row = future.result()
        except BrokenProcessPool:
            row = {"status": f"{FAILED}: the worker process died while screening it, twice (out of memory, or a "
                             "crash in a library?)"}
        except Exception as exc:  # noqa: BLE001 - one case's failure is reported with it; the rest go on
            row = {"status": f"{FAILED}: {type(exc).__name__}: {exc}"}
        row = {**item.row, **row}
        item.row = row
        item.status = _status_of(row)
        folder = self.results_root / item.key.digest / item.case.name
        item.case_dir = folder if item.status == DONE else None
        if not item.status.startswith(FAILED):  # a failure is retried next time; a result is kept
            cache.put(item.key, row, str(item.case_dir) if item.case_dir else None)

    def set_reviewed(self, item: WorkItem, reviewed: bool = True) -> None:
        item.reviewed = reviewed
        with ResultCache(self.cache_path) as cache:
            cache.set_reviewed(item.key, reviewed)

    def ranked(self) -> list[WorkItem]:
        """Screened items by falling probability, then the rest in the order found."""
        done = sorted((i for i in self.items if i.probability is not None), key=lambda i: -(i.probability or 0))
        return done + [i for i in self.items if i.probability is None]

    def export(self, out_dir: str | os.PathLike) -> Path:
        """A `lunglens screen`-style results folder (results.csv/json and each screened case's folder), which
        `lunglens report` reads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for item in self.items:
            row = {**item.row, "status": STATUS_OK if item.status == DONE else item.status,
                   "reviewed": item.reviewed}
            if item.status == DONE and item.case_dir is not None and item.case_dir.is_dir():
                shutil.copytree(item.case_dir, out / item.case.name, dirs_exist_ok=True)
            rows.append(row)
        write_results(out, rank_rows(rows), self.problems, {"model": self.options.model, "lungs": self.options.lungs,
                                                            "source": "worklist"})
        return out

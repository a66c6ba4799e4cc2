"""The triage worklist: every series found under folders (or retrieved from a PACS) is queued, screened in
worker processes and ranked by probability; results come from and go to the `ResultCache`.

Qt-free: the GUI runs `Worklist.run` in a worker thread and listens to `on_update`; the command line calls it
directly. Screening itself runs in separate processes (at most one per core), so the calling process, and a
GUI's event loop, stay free.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from app.services.cases import (
    Case,
    ScreenOptions,
    iter_cases,
    rank_rows,
    row_identity,
    study_identity,
    write_results,
)
from app.services.dispatch import run_in_processes
from app.services.worklist_db import CacheKey, ResultCache, fileset_digest
from inference.screening.assess import STATUS_OK
from viewer.io.user_dirs import data_dir

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

    config = json.dumps(asdict(options.config) if options.config else {}, sort_keys=True, default=str)
    parts = [options.model, options.lungs, options.device, options.backend, options.precision, config]
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
        self._known_keys: set[CacheKey] = set()  # of `items`, for `_enter` (one scan calls it per path)
        self._known_names: set[str] = set()
        self.problems: list[dict] = []  # paths that held no series
        self._lock = threading.Lock()
        with ResultCache(self.cache_path):  # created or migrated now: a bad file is reported before any work
            pass

    def add(self, paths: list[str], on_added: Callable[[list[WorkItem]], None] | None = None) -> list[WorkItem]:
        """Find every series under `paths`; each new one is queued, or done at once from the cache.
        `on_added(items)` as each path is scanned, with the items it added (maybe none)."""
        added: list[WorkItem] = []
        with ResultCache(self.cache_path) as cache:
            for found in iter_cases([str(p) for p in paths], self.problems):
                new = self._enter(found, cache)
                added += new
                if on_added is not None:
                    on_added(new)
        return added

    def _enter(self, found: list[Case], cache: ResultCache) -> list[WorkItem]:
        """Items for the cases of `found` not on the list yet, appended to it (under the lock: `add` may run in
        another thread than a running scan)."""
        with self._lock:
            added = self._new_items(found, cache)
            self.items.extend(added)
        return added

    def _new_items(self, found: list[Case], cache: ResultCache) -> list[WorkItem]:
        added = []
        known, names = self._known_keys, self._known_names  # items are only ever appended: kept as they grow
        for case in found:
            uid = case.series or os.path.realpath(case.source)
            key = CacheKey(uid, fileset_digest(_files_of(case)), self.options.model, self.weights)
            if key in known:
                continue
            base, n = case.name, 2
            while case.name in names:  # unique over the whole worklist: export folders must not merge
                case.name, n = f"{base}_{n}", n + 1
            names.add(case.name)
            item = WorkItem(case, key, row=self._identity(case))
            cached = cache.get(key)
            if cached is not None and cached.get("status") == STATUS_OK and not (
                    cached.get("case_dir") and (Path(cached["case_dir"]) / "prediction.json").is_file()):
                cached = None  # its results folder was removed: screen it again
            if cached is not None:
                item.row, item.reviewed = cached, cached["reviewed"]
                item.case_dir = Path(cached["case_dir"]) if cached.get("case_dir") else None
                item.status = _status_of(cached)
            elif case.refusal:
                item.status = f"{NOT_ASSESSABLE}: {case.refusal}"
            added.append(item)
            known.add(key)
        return added

    @staticmethod
    def _identity(case: Case) -> dict:
        study = study_identity(case.entry.metadata) if case.entry is not None else {}
        return {"case": case.name, "series": case.series, "source": case.source, **row_identity(study),
                "series_description": study.get("series_description") or Path(case.source).name}

    def queued(self) -> list[WorkItem]:
        return [i for i in self.items if i.status in (QUEUED, RUNNING)]

    def run(self, workers: int = 1, *, on_update: Callable[[WorkItem], None] | None = None,
            paused: threading.Event | None = None, cancelled: threading.Event | None = None,
            paths: list[str] | None = None, on_added: Callable[[list[WorkItem]], None] | None = None) -> None:
        """Screen every queued item in `workers` processes (`dispatch.run_in_processes`: pause, cancel and crashed
        processes handled there); each result is stored in the cache, then shown. With `paths`, those are scanned
        (`add`, in a thread of its own, `on_added` after each path) while the series found so far are screened;
        the scan always finishes, even when cancelled. Returns when nothing is left to start; items not started
        stay queued."""
        notify = on_update or (lambda item: None)
        todo = [i for i in self.items if i.status == QUEUED]
        cases = [i.case for i in todo]
        scanned = threading.Event()
        failure: list[Exception] = []

        def scan() -> None:
            def found(items: list[WorkItem]) -> None:
                for item in items:
                    if item.status == QUEUED:
                        todo.append(item)  # before its case: case k is screened into todo[k]
                        cases.append(item.case)
                if on_added is not None:
                    on_added(items)

            try:
                self.add(paths or [], on_added=found)
            except Exception as exc:  # noqa: BLE001 - raised in the calling thread once the screening is over
                failure.append(exc)
            finally:
                scanned.set()

        scanner = threading.Thread(target=scan, name="worklist-scan", daemon=True)
        if paths:
            scanner.start()
        else:
            scanned.set()
            if not todo:
                return
        cache = ResultCache(self.cache_path)

        def started(k: int) -> None:
            todo[k].status = RUNNING
            notify(todo[k])

        def done(k: int, row: dict) -> None:
            self._finish(todo[k], row, cache)
            notify(todo[k])

        try:
            run_in_processes(cases, lambda k: self.results_root / todo[k].key.digest, self.options, workers,
                             on_start=started, on_done=done, paused=paused, cancelled=cancelled, complete=scanned)
        finally:
            if paths:
                scanner.join()
            for item in todo:
                if item.status == RUNNING:  # interrupted: no result was stored, so it stays queued
                    item.status = QUEUED
            cache.close()
        if failure:
            raise failure[0]

    def _finish(self, item: WorkItem, row: dict, cache: ResultCache) -> None:
        row = {**item.row, **row}
        status = _status_of(row)
        folder = self.results_root / item.key.digest / item.case.name
        case_dir = folder if status == DONE else None
        if not status.startswith(FAILED):  # a failure is retried next time; a result or a refusal is kept
            cache.put(item.key, row, str(case_dir) if case_dir else None)
        item.row, item.case_dir, item.status = row, case_dir, status  # shown only once stored

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
            status = STATUS_OK if item.status == DONE else item.status
            if item.status == DONE and (item.case_dir is None or not (item.case_dir / "prediction.json").is_file()):
                status = f"{FAILED}: its results folder is gone ({item.case_dir}); screen it again"
            row = {**item.row, "case": item.case.name, "status": status, "reviewed": item.reviewed}
            if status == STATUS_OK:
                shutil.copytree(item.case_dir, out / item.case.name, dirs_exist_ok=True)  # type: ignore[arg-type]
            rows.append(row)
        write_results(out, rank_rows(rows), self.problems, {"model": self.options.model, "lungs": self.options.lungs,
                                                            "source": "worklist"})
        return out

"""The worklist's result cache: SQLite in the user's data folder, so a restart does not redo work.

A result is keyed by the series (its UID and its file set: paths, sizes and modification times), the model and
a digest of its weights and settings; a changed series or model misses the cache. The schema is versioned
(`PRAGMA user_version`) and migrated forward on open; WAL journaling lets several processes read while one
writes, and a row is written in one transaction once its case is complete, so a crash mid-case leaves no row
(the case is queued again) and never a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from viewer.io.user_dirs import data_dir

#: schema version -> the statements that bring the previous version to it
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("""CREATE TABLE results (
            series_uid TEXT NOT NULL, fileset TEXT NOT NULL, model TEXT NOT NULL, weights TEXT NOT NULL,
            status TEXT NOT NULL, probability REAL, involvement REAL, severity INTEGER, lesion_ml REAL,
            seconds REAL, patient_id TEXT, patient_name TEXT, study_date TEXT, series_description TEXT,
            source TEXT, case_dir TEXT, row_json TEXT NOT NULL, finished_at REAL NOT NULL,
            reviewed INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (series_uid, fileset, model, weights))""",),
    2: ("ALTER TABLE results ADD COLUMN reviewed_at REAL",
        "CREATE INDEX results_by_probability ON results (model, probability DESC)"),
}
SCHEMA_VERSION = max(MIGRATIONS)


class CacheError(Exception):
    """The cache file cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class CacheKey:
    series_uid: str
    fileset: str
    model: str
    weights: str

    @property
    def digest(self) -> str:
        return hashlib.sha256("\0".join((self.series_uid, self.fileset, self.model, self.weights)).encode()
                              ).hexdigest()[:20]


def fileset_digest(paths: Iterable[str | os.PathLike]) -> str:
    """A digest of the files' real paths, sizes and modification times: any change to the series changes it."""
    h = hashlib.sha256()
    for p in sorted(os.path.realpath(p) for p in paths):
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


class ResultCache:
    """Open (creating or migrating) the cache at `path` (default: data_dir()/worklist.sqlite3).

    One connection per thread: make a `ResultCache` in the thread that uses it.
    """

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path else data_dir() / "worklist.sqlite3"
        db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            self._db = db
            self._migrate()
        except (sqlite3.DatabaseError, OSError, CacheError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, CacheError):
                raise
            if isinstance(exc, sqlite3.DatabaseError):
                raise CacheError(f"{self.path}: not a usable result cache ({exc}); move it aside and LungLens "
                                 "starts a new one") from None
            raise CacheError(f"{self.path}: cannot open ({exc.strerror or exc})") from None

    def _migrate(self) -> None:
        """Bring the schema to `SCHEMA_VERSION`, one version per transaction; the version is read inside the
        transaction, so two processes opening an old cache at once migrate it once."""
        while True:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise CacheError(f"{self.path}: written by a newer LungLens (schema {version}, this one knows "
                                     f"{SCHEMA_VERSION}); use that version or move the file aside")
                if version == SCHEMA_VERSION:
                    self._db.execute("COMMIT")
                    return
                for statement in MIGRATIONS[version + 1]:
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version={version + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @property
    def version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: CacheKey) -> dict | None:
        """The cached row of the key (with `reviewed` and `case_dir`), or None."""
        r = self._db.execute("SELECT row_json, reviewed, case_dir FROM results WHERE series_uid=? AND fileset=? "
                             "AND model=? AND weights=?", (key.series_uid, key.fileset, key.model, key.weights)
                             ).fetchone()
        if r is None:
            return None
        return {**json.loads(r["row_json"]), "reviewed": bool(r["reviewed"]), "case_dir": r["case_dir"]}

    def put(self, key: CacheKey, row: dict, case_dir: str | None) -> None:
        """Store a finished case's row (replacing an older one of the same key; `reviewed` is kept)."""
        values = (key.series_uid, key.fileset, key.model, key.weights, row["status"], row.get("probability"),
                  row.get("involvement_percent"), row.get("severity"), row.get("lesion_ml"), row.get("seconds"),
                  row.get("patient_id"), row.get("patient_name"), row.get("study_date"),
                  row.get("series_description"), row.get("source"), case_dir,
                  json.dumps({k: v for k, v in row.items() if k not in ("reviewed", "case_dir")}), time.time())
        with self._transaction():
            self._db.execute(
                "INSERT INTO results (series_uid, fileset, model, weights, status, probability, involvement, "
                "severity, lesion_ml, seconds, patient_id, patient_name, study_date, series_description, source, "
                "case_dir, row_json, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (series_uid, fileset, model, weights) DO UPDATE SET status=excluded.status, "
                "probability=excluded.probability, involvement=excluded.involvement, severity=excluded.severity, "
                "lesion_ml=excluded.lesion_ml, seconds=excluded.seconds, patient_id=excluded.patient_id, "
                "patient_name=excluded.patient_name, study_date=excluded.study_date, "
                "series_description=excluded.series_description, source=excluded.source, "
                "case_dir=excluded.case_dir, row_json=excluded.row_json, finished_at=excluded.finished_at", values)

    def set_reviewed(self, key: CacheKey, reviewed: bool = True) -> None:
        with self._transaction():
            self._db.execute("UPDATE results SET reviewed=?, reviewed_at=? WHERE series_uid=? AND fileset=? AND "
                             "model=? AND weights=?", (int(reviewed), time.time() if reviewed else None,
                                                       key.series_uid, key.fileset, key.model, key.weights))

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def _transaction(self):
        db = self._db

        class _Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type, *rest) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _Tx()

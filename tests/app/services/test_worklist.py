"""The worklist service and its SQLite result cache: ranking, caching across restarts, invalidation, reviews,
migrations, concurrent writers, crashes, export."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading

import pytest

from app.services.cases import ScreenOptions
from app.services.worklist import DONE, QUEUED, Worklist
from app.services.worklist_db import SCHEMA_VERSION, CacheError, CacheKey, ResultCache
from inference.screening.config import ScreeningConfig

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

FAST = ScreenOptions(config=ScreeningConfig(lesion_model=None), device="cpu")  # the HU-rule lesions: quick


@pytest.fixture
def studies(tmp_path):
    """Two small phantom DICOM series (seeds 1 and 2: their own UIDs), in one folder."""
    from viewer.dicom.write import write_ct_series
    from viewer.synthetic.phantom import make_phantom

    root = tmp_path / "studies"
    for seed, name in ((1, "wl-a"), (2, "wl-b")):
        write_ct_series(make_phantom(shape=(24, 64, 64), spacing=(5.0, 5.0, 5.0), seed=seed).volume, root / name)
    return root


def _worklist(tmp_path, options=FAST) -> Worklist:
    return Worklist(options, cache_path=tmp_path / "cache.sqlite3", results_root=tmp_path / "cases")


def test_series_are_screened_ranked_cached_and_not_redone(tmp_path, studies):
    wl = _worklist(tmp_path)
    added = wl.add([str(studies)])
    assert len(added) == 2 and all(i.status == QUEUED for i in added)
    assert added[0].row["patient_id"].startswith("PHANTOM-000")  # identity shown before screening
    seen = []
    wl.run(workers=1, on_update=lambda item: seen.append(item.status))
    assert seen.count("running") == 2 and seen.count(DONE) == 2
    ranked = wl.ranked()
    assert [i.probability for i in ranked] == sorted((i.probability for i in ranked), reverse=True)
    assert all((i.case_dir / "prediction.json").is_file() and i.thumbnail() is not None for i in ranked)
    # a restart: everything comes from the cache, nothing is queued
    again = _worklist(tmp_path)
    items = again.add([str(studies)])
    assert [i.status for i in items] == [DONE, DONE]
    assert {i.case.name: i.probability for i in items} == {i.case.name: i.probability for i in ranked}
    # adding the same folder twice adds nothing
    assert again.add([str(studies)]) == []


def test_screening_begins_while_later_paths_are_still_scanned(tmp_path, studies, monkeypatch):
    import app.services.cases as cases

    first, second = sorted(str(p) for p in studies.iterdir())
    started, scanned_second_after_start = threading.Event(), []
    real_scan = cases.scan

    def slow_scan(path):
        if path == second:  # the second path's scan waits until the first case is in a worker process
            scanned_second_after_start.append(started.wait(120))
        return real_scan(path)

    monkeypatch.setattr(cases, "scan", slow_scan)
    wl = _worklist(tmp_path)
    rows_seen = []

    def update(item) -> None:
        if item.status == "running":
            started.set()

    wl.run(workers=1, paths=[first, second], on_update=update, on_added=lambda items: rows_seen.append(len(items)))
    assert scanned_second_after_start == [True]
    assert rows_seen == [1, 1]  # each path's rows as soon as it is scanned
    assert [i.status for i in wl.items] == [DONE, DONE]
    # nothing new under the paths: the scan runs, nothing is screened again
    assert wl.run(workers=1, paths=[first, second]) is None and [i.status for i in wl.items] == [DONE, DONE]


def test_a_changed_series_or_model_setting_is_screened_again(tmp_path, studies):
    wl = _worklist(tmp_path)
    wl.add([str(studies)])
    wl.run()
    first = sorted(studies.glob("wl-a/*"))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    statuses = {i.case.series: i.status for i in _worklist(tmp_path).add([str(studies)])}
    assert sorted(statuses.values()) == [DONE, QUEUED]  # only the touched series
    other = ScreenOptions(config=ScreeningConfig(lesion_model=None, aggregation="max"), device="cpu")
    assert all(i.status == QUEUED for i in _worklist(tmp_path, other).add([str(studies)]))


def test_reviewed_marks_survive_a_restart_and_export_feeds_the_report(tmp_path, studies, capsys):
    wl = _worklist(tmp_path)
    wl.add([str(studies)])
    wl.run()
    wl.set_reviewed(wl.items[0])
    again = _worklist(tmp_path)
    again.add([str(studies)])
    assert [i.reviewed for i in again.items] == [True, False]
    out = again.export(tmp_path / "export")
    rows = json.loads((out / "results.json").read_text())["cases"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert sorted(r["reviewed"] for r in rows) == [False, True]
    # a case whose results folder was removed is exported as failed, and screened again on the next add
    import shutil

    shutil.rmtree(again.items[1].case_dir)
    rows = {r["case"]: r for r in json.loads((again.export(tmp_path / "export2") / "results.json").read_text())[
        "cases"]}
    assert rows[again.items[1].case.name]["status"].startswith("failed: its results folder is gone")
    assert [i.status for i in _worklist(tmp_path).add([str(studies)])] == [DONE, QUEUED]
    from app.cli import main

    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "PHANTOM-0001" in (tmp_path / "r.html").read_text()


def test_pause_starts_nothing_and_cancel_keeps_the_rest_queued(tmp_path, studies):
    wl = _worklist(tmp_path)
    wl.add([str(studies)])
    paused, cancelled = threading.Event(), threading.Event()
    paused.set()
    timer = threading.Timer(1.0, cancelled.set)
    timer.start()
    wl.run(workers=1, paused=paused, cancelled=cancelled)
    assert [i.status for i in wl.items] == [QUEUED, QUEUED]
    cancelled.clear()
    paused.clear()

    def stop_after_first(item) -> None:
        if item.status == DONE:
            cancelled.set()

    wl.run(workers=1, on_update=stop_after_first, cancelled=cancelled)
    assert sorted(i.status for i in wl.items) == [DONE, QUEUED]


def test_a_case_whose_worker_dies_fails_alone_and_is_not_cached(tmp_path, studies, monkeypatch):
    import app.services.dispatch as dispatch

    wl = _worklist(tmp_path)
    wl.add([str(studies)])
    monkeypatch.setattr(dispatch, "screen_task", _die_on_wl_b)
    wl.run(workers=2)  # both in flight when one dies: the other is retried and done
    by_series = {i.case.entry.metadata.series_description + i.case.name: i for i in wl.items}
    statuses = sorted(i.status for i in by_series.values())
    assert statuses[0] == DONE and statuses[1].startswith("failed: the worker process died")
    with ResultCache(tmp_path / "cache.sqlite3") as cache:
        assert cache.count() == 1  # the failure is retried next time, never a half-written row


def _die_on_wl_b(case, out, options):
    from app.services.dispatch import screen_task

    if case.source.endswith("wl-b"):
        os._exit(3)  # as a crash (out of memory, a segfault) would
    return screen_task(case, out, options)


KEY = CacheKey("1.2.3", "files", "m", "w")


def test_the_cache_migrates_an_old_schema_and_refuses_a_newer_one(tmp_path):
    path = tmp_path / "c.sqlite3"
    db = sqlite3.connect(path)
    from app.services.worklist_db import MIGRATIONS

    for statement in MIGRATIONS[1]:
        db.execute(statement)
    db.execute("INSERT INTO results (series_uid, fileset, model, weights, status, row_json, finished_at) VALUES "
               "('1.2.3', 'files', 'm', 'w', 'ok', '{\"status\": \"ok\", \"probability\": 0.7}', 0)")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with ResultCache(path) as cache:
        assert cache.version == SCHEMA_VERSION
        assert cache.get(KEY)["probability"] == 0.7  # the old row survives
        cache.set_reviewed(KEY)  # a column of version 2
        assert cache.get(KEY)["reviewed"] is True
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(CacheError, match="newer LungLens"):
        ResultCache(path)
    (tmp_path / "junk.sqlite3").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CacheError, match="junk.sqlite3: not a usable result cache"):
        ResultCache(tmp_path / "junk.sqlite3")


def _writer(path: str, start: int) -> None:
    with ResultCache(path) as cache:
        for k in range(start, start + 40):
            cache.put(CacheKey(f"1.{k}", "f", "m", "w"), {"status": "ok", "probability": k / 100}, None)


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite3"
    ResultCache(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), s)) for s in (0, 40, 80)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    with ResultCache(path) as cache:
        assert cache.count() == 120
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"

"""`screen --workers N` and `--cluster ADDRESS`: the same rows as one process; a failure stays with its case."""

from __future__ import annotations

import json

import pytest

from app.cli import EXIT_OK, main
from viewer.io.volumes import write_volume
from viewer.synthetic.phantom import make_phantom

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    for seed in (1, 2, 3):
        ph = make_phantom(shape=(20, 64, 64), spacing=(6.0, 5.0, 5.0), seed=seed, n_ggo=seed - 1)
        write_volume(ph.volume, folder / f"case{seed}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"not a volume")
    return [str(p) for p in sorted(folder.iterdir())]


def _rows(out) -> dict[str, dict]:
    return {r["case"]: r for r in json.loads((out / "results.json").read_text())["cases"]}


@pytest.fixture(scope="module")
def one_process(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    assert main(["screen", *inputs, "--out", str(out), "--lesions", "hu-rule", "--device", "cpu"]) == EXIT_OK
    return _rows(out)


def test_workers_give_the_same_rows_as_one_process(inputs, one_process, tmp_path):
    out = tmp_path / "parallel"
    assert main(["screen", *inputs, "--out", str(out), "--lesions", "hu-rule", "--device", "cpu",
                 "--workers", "2"]) == EXIT_OK
    rows = _rows(out)
    assert set(rows) == set(one_process)
    for name, row in rows.items():
        assert row["status"].split(":")[0] == one_process[name]["status"].split(":")[0]
        if row["status"] == "ok":
            assert row["probability"] == pytest.approx(one_process[name]["probability"], abs=1e-5)
            assert row["rank"] == one_process[name]["rank"]
            assert (out / name / "prediction.json").is_file()


def test_a_dask_cluster_screens_each_case_as_a_task(inputs, one_process, tmp_path):
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        assert main(["screen", *inputs, "--out", str(out), "--lesions", "hu-rule", "--device", "cpu",
                     "--cluster", c.scheduler_address]) == EXIT_OK
    rows = _rows(out)
    assert set(rows) == set(one_process)
    ok = {n: r for n, r in rows.items() if r["status"] == "ok"}
    assert len(ok) == 3
    for name, row in ok.items():
        assert row["probability"] == pytest.approx(one_process[name]["probability"], abs=1e-5)


def test_a_task_that_fails_fails_alone(inputs, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import app.services.cases as cases  # `screen_task` looks `screen_case` up there at each call

    real = cases.screen_case

    def flaky(case, *args, **kwargs):
        if case.name == "case2":
            raise KeyError("simulated bug")
        return real(case, *args, **kwargs)

    monkeypatch.setattr(cases, "screen_case", flaky)
    out = tmp_path / "flaky"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as c:
        assert main(["screen", *inputs, "--out", str(out), "--lesions", "hu-rule", "--device", "cpu",
                     "--cluster", c.scheduler_address]) == EXIT_OK
    rows = _rows(out)
    assert rows["case2"]["status"].startswith("failed: KeyError")
    assert rows["case1"]["status"] == "ok" and rows["case3"]["status"] == "ok"


def test_a_bad_worker_count_is_refused(inputs, tmp_path, capsys):
    assert main(["screen", *inputs, "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "--workers 0" in capsys.readouterr().err


def test_a_worker_that_dies_fails_only_its_case(inputs, one_process, tmp_path, monkeypatch):
    import app.services.dispatch as dispatch

    monkeypatch.setattr(dispatch, "screen_task", _die_on_case2)
    out = tmp_path / "crash"
    assert main(["screen", *inputs, "--out", str(out), "--lesions", "hu-rule", "--device", "cpu",
                 "--workers", "2"]) == EXIT_OK
    rows = _rows(out)
    assert rows["case2"]["status"].startswith("failed: the worker process died while screening it, twice")
    for name in ("case1", "case3"):
        assert rows[name]["probability"] == pytest.approx(one_process[name]["probability"], abs=1e-5)


def _die_on_case2(case, out, options):
    import os

    from app.services.dispatch import screen_task

    if case.name == "case2":
        os._exit(3)  # as a crash (out of memory, a segfault) would
    return screen_task(case, out, options)

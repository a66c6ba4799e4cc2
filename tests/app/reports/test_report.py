"""`lunglens report`: PDF and HTML from a real `screen` results folder, read back (pdftotext, HTML text)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from app.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def results(tmp_path_factory, small_phantom_series):
    """A screened phantom study and a two-file series that cannot be assessed."""
    import pydicom

    folder, _ = small_phantom_series("report")
    root = tmp_path_factory.mktemp("results")
    short = root / "in" / "short"
    short.mkdir(parents=True)
    for i, f in enumerate(sorted(folder.iterdir())[:2]):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = "2.25.9"
        ds.SOPInstanceUID = f"2.25.9.{i}"
        ds.save_as(short / f"{i}.dcm")
    out = root / "out"
    assert main(["screen", str(folder), str(short), "--out", str(out), "--lesions", "hu-rule",
                 "--device", "cpu"]) == EXIT_OK
    return out


def _pdf_text(path) -> str:
    if shutil.which("pdftotext") is None:
        if os.environ.get("LUNGLENS_CI_PACKAGES"):
            pytest.fail("pdftotext (poppler-utils) is required in CI")
        pytest.skip("pdftotext (poppler-utils) is not installed")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout


def test_screen_writes_the_study_identity_and_key_images(results):
    rows = json.loads((results / "results.json").read_text())["cases"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 1 and ok[0]["patient_id"] == "PHANTOM-0000" and ok[0]["study_date"] == "20200315"
    pred = json.loads((results / ok[0]["case"] / "prediction.json").read_text())
    assert pred["study"]["patient_id"] == "PHANTOM-0000" and pred["study"]["series_instance_uid"]
    keys = pred["key_images"]
    assert 1 <= len(keys) <= 3
    assert len({k["index"] for k in keys}) == len(keys)
    lesion_areas = [k["lesion_mm2"] for k in keys]
    assert lesion_areas == sorted(lesion_areas, reverse=True)
    image = Image.open(results / ok[0]["case"] / keys[0]["file"])
    assert image.mode == "RGB" and image.size == (64, 64)
    pixels = image.load()
    if keys[0]["lesion_mm2"] > 0:  # the lesion outline is drawn in yellow
        assert any(pixels[x, y] == (255, 255, 0) for x in range(64) for y in range(64))


def test_pdf_report_reads_back_with_the_patient_the_probability_and_the_disclaimer(results, tmp_path, capsys):
    out = tmp_path / "report.pdf"
    assert main(["report", str(results), "--out", str(out)]) == EXIT_OK
    assert "2 case(s), 1 assessed" in capsys.readouterr().out
    assert out.read_bytes().startswith(b"%PDF")
    text = _pdf_text(out)
    rows = json.loads((results / "results.json").read_text())["cases"]
    p = next(r["probability"] for r in rows if r["status"] == "ok")
    assert "PHANTOM-0000" in text and f"{p:.3f}" in text
    assert "Research use only: not for clinical diagnosis." in text
    assert "not assessable" in text  # the short series is listed with its reason
    assert "Key images" in text and "Model card" in text and "light-squeezenet" in text
    assert "severity" in text and "upper" in text  # burden per zone
    assert not list(tmp_path.glob(".*.part"))


def test_html_report_and_one_case(results, tmp_path):
    rows = json.loads((results / "results.json").read_text())["cases"]
    case = next(r["case"] for r in rows if r["status"] == "ok")
    out = tmp_path / "one.html"
    assert main(["report", str(results), "--out", str(out), "--case", case]) == EXIT_OK
    html = out.read_text()
    assert "PHANTOM-0000" in html and "Research use only: not for clinical diagnosis." in html
    assert html.count("data:image/png;base64,") >= 2  # key images and the per-slice plot
    assert "not assessable" not in html


def test_bad_requests_name_the_problem(results, tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.pdf")]) == EXIT_BAD_INPUT
    assert "results.json: not found" in capsys.readouterr().err
    assert main(["report", str(results), "--out", str(tmp_path / "r.docx")]) == EXIT_USAGE
    assert "name a .pdf or .html file" in capsys.readouterr().err
    assert main(["report", str(results), "--out", str(tmp_path / "r.pdf"), "--case", "nobody"]) == EXIT_BAD_INPUT
    assert "no case named 'nobody'" in capsys.readouterr().err
    assert main(["report", str(results), "--out", str(tmp_path / "r.pdf"), "--low", "0.8"]) == EXIT_BAD_INPUT
    assert "bands must satisfy" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{oops")
    assert main(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "r.pdf")]) == EXIT_BAD_INPUT
    assert "not readable JSON" in capsys.readouterr().err
    assert not (tmp_path / "r.pdf").exists()


def test_key_levels_fall_back_to_the_most_lung_when_there_is_no_lesion_and_no_heat():
    from app.services.key_images import key_levels

    lungs = np.zeros((40, 8, 8), np.uint8)
    for k in range(5, 35):
        lungs[k, : 1 + min(k - 5, 34 - k) // 2] = 1  # the lung is widest at slice 19-20
    nothing = np.zeros(lungs.shape, np.float32)
    levels = key_levels(nothing.astype(np.uint8), nothing, lungs, spacing_z=5.0, count=3)
    assert levels[0] in (19, 20) and len(levels) == 3
    assert all(lungs[k].any() for k in levels) and min(abs(a - b) for a in levels for b in levels if a != b) >= 3

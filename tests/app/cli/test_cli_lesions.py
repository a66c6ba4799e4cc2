"""`lunglens segment-lesions` and `lunglens screen --model dcn` with the shipped DCN weights."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from app.cli import EXIT_BAD_INPUT, EXIT_OK, main
from viewer.io.volumes import read_volume_file, write_volume
from viewer.synthetic.phantom import make_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_segment_lesions_writes_label_pngs_of_each_images_size(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(rng.integers(0, 255, (100, 140), dtype=np.uint8), mode="L").save(tmp_path / "a" / "s1.png")
    Image.fromarray(rng.integers(0, 255, (64, 48, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "b" / "s1.png")
    Image.fromarray(rng.integers(0, 255, (33, 70, 3), dtype=np.uint8), mode="RGB").save(tmp_path / "b" / "s2.jpg")
    (tmp_path / "b" / "broken.png").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["segment-lesions", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == EXIT_BAD_INPUT  # one image failed
    assert "broken.png" in captured.err and "Traceback" not in captured.err
    sizes = {"s1.png": (140, 100), "s1_2.png": (48, 64), "s2.png": (70, 33)}
    assert sorted(p.name for p in out.iterdir()) == sorted(sizes)
    for name, size in sizes.items():
        with Image.open(out / name) as im:
            assert im.size == size and im.mode == "L"
            assert set(np.unique(np.asarray(im))) <= {0, 1, 2}
    assert captured.out.count("lesion ") == 3 and "wrote 3 mask(s)" in captured.out


def test_segment_lesions_refuses_other_models_and_missing_inputs(tmp_path, capsys):
    assert main(["segment-lesions", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "light-squeezenet"]) \
        == EXIT_BAD_INPUT
    assert "not a lesion segmenter" in capsys.readouterr().err
    assert main(["segment-lesions", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")]) == EXIT_BAD_INPUT
    assert "no such file" in capsys.readouterr().err


def test_screen_with_dcn_writes_its_lesion_mask_heat_map_and_probability(tmp_path, capsys):
    ph = make_phantom(shape=(24, 96, 96), spacing=(8.0, 3.0, 3.0), seed=3, n_ggo=3, n_consolidation=2)
    path = write_volume(ph.volume, tmp_path / "in" / "case1.nii.gz")
    out = tmp_path / "out"
    assert main(["screen", str(path), "--out", str(out), "--model", "dcn", "--device", "cpu"]) == EXIT_OK
    printed = capsys.readouterr()
    assert "p=" in printed.out and "not reliable on real CT" in printed.err  # the card's warning
    with open(out / "results.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert 0 <= float(row["probability"]) <= 1 and int(row["slices"]) > 0
    data = json.loads((out / "results.json").read_text())
    assert data["model"] == "dcn" and data["input_kind"] == "segmentation" and data["heatmap"] == "lesion-attention"
    summary = json.loads((out / "case1" / "prediction.json").read_text())
    assert set(summary["lesion_ml_by_kind"]) == {"GGO", "consolidation"}
    assert summary["aggregation"] == "slice probability mapping"
    lungs = read_volume_file(out / "case1" / "lungs.nii.gz").array
    lesions = read_volume_file(out / "case1" / "lesions.nii.gz").array
    heat = read_volume_file(out / "case1" / "heatmap.nii.gz").array
    assert lesions.shape == heat.shape == ph.volume.array.shape
    assert set(np.unique(lesions)) <= {0, 3, 4} and not lesions[lungs == 0].any() and heat[lungs == 0].max() == 0

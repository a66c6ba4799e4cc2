"""The `lunglens` command line: info, convert, demo, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import EXIT_BAD_INPUT, EXIT_USAGE, main
from tests.dicom_factory import axial_positions, truth, write_planes
from viewer.io.volumes import read_volume_file


def test_info_table_and_json(tmp_path, capsys):
    write_planes(tmp_path / "s", axial_positions(6), uid_seed="a")
    (tmp_path / "s" / "readme.txt").write_text("x")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 series" in out and "axial" in out and "readme.txt" in out
    assert main(["info", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["series"][0]["slices"] == 6
    assert data["series"][0]["pixel_spacing_mm"] == [1.5, 1.25]
    assert data["skipped"][0]["path"].endswith("readme.txt")


def test_convert_writes_hu_with_geometry(tmp_path, capsys):
    write_planes(tmp_path / "s", axial_positions(6))
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(tmp_path / "s"), str(out), "--quiet"]) == 0
    vol = read_volume_file(out)
    assert vol.shape == (6, 40, 48)
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_convert_picks_a_series_by_id(tmp_path, capsys):
    write_planes(tmp_path / "a", axial_positions(5), uid_seed="one", series_number=1)
    write_planes(tmp_path / "b", axial_positions(7), uid_seed="two", series_number=2)
    assert main(["convert", str(tmp_path), str(tmp_path / "x.nrrd"), "--quiet"]) == EXIT_BAD_INPUT
    assert "2 series found" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), str(tmp_path / "x.nrrd"), "--series", "2", "--quiet"]) == 0
    assert read_volume_file(tmp_path / "x.nrrd").shape[0] == 7


@pytest.mark.parametrize("args, code, message", [
    (["info", "/no/such/place"], EXIT_BAD_INPUT, "no such file"),
    (["convert", "/no/such/place", "out.nii.gz"], EXIT_BAD_INPUT, "no such file"),
    (["convert", ".", "out.png"], EXIT_USAGE, "must end in"),
])
def test_bad_input_exit_codes(args, code, message, capsys):
    assert main(args) == code
    assert message in capsys.readouterr().err


def test_empty_folder(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == EXIT_BAD_INPUT
    assert main(["convert", str(tmp_path), str(tmp_path / "x.nii.gz")]) == EXIT_BAD_INPUT
    assert "empty" in capsys.readouterr().err


def test_help_everywhere(capsys):
    for cmd in ([], ["info"], ["convert"], ["demo"]):
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0
        assert "usage: lunglens" in capsys.readouterr().out
    assert main([]) == EXIT_USAGE


def test_demo_writes_a_loadable_study_with_masks(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    from viewer.io.volumes import open_volume

    vol = open_volume(out / "dicom")
    labels = read_volume_file(out / "masks" / "labels.nii.gz")
    assert vol.shape == labels.shape == (128, 256, 256)
    assert np.allclose(vol.affine, labels.affine, atol=1e-4)
    lungs = np.isin(labels.array, (1, 2))
    assert -900 < np.median(vol.array[lungs]) < -750
    assert (labels.array == 3).sum() > 0 and (labels.array == 4).sum() > 0  # GGO and consolidation
    assert vol.metadata.patient_name == "PHANTOM LUNGLENS"
    # writing it twice gives the same series (deterministic UIDs and voxels)
    assert main(["demo", "--out", str(tmp_path / "again")]) == 0
    again = open_volume(tmp_path / "again" / "dicom")
    assert np.array_equal(again.array, vol.array)
    assert again.metadata.series_instance_uid == vol.metadata.series_instance_uid


def test_models_lists_every_shipped_model_with_its_training_data_and_validation_figures(capsys):
    """Every model with shipped weights names what it was trained on and its validation figures (the cards of all
    recipes carry `training_data.dataset` and numeric `validation_metrics`); which models screen is marked."""
    from app.cli import main
    from inference.models import list_models

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    shipped = [m.name for m in list_models() if m.weights is not None]
    assert {"light-squeezenet", "dcn", "covid-ct-mask-net", "covid-ct-mask-net-seg", "lung-unet"} <= set(shipped)
    for name in shipped:
        assert rows[name]["training_data"] != "no shipped weights", name
        metrics = rows[name]["validation_metrics"]
        assert metrics and all(isinstance(v, (int, float)) for v in metrics.values()), name
    assert rows["covid-ct-mask-net"]["screens"] and not rows["covid-ct-mask-net-seg"]["screens"]
    assert rows["dcn"]["screens"] and not rows["lung-unet"]["screens"]

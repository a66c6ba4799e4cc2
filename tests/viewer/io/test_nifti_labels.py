"""Label maps as NIfTI with a sidecar: voxel-exact round trips, geometry checks, atomic writes, bad files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

from viewer.core.volume import SeriesMetadata, Volume
from viewer.io.nifti_labels import load_label_map_nifti, save_label_map_nifti, sidecar_path, touched_path
from viewer.io.volumes import write_volume
from viewer.labels.table import LabelInfo, LabelTable

# z runs inferior, x runs to the patient's right: a flipped, not oblique, grid
FLIPPED = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
OBLIQUE = FLIPPED @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


@pytest.fixture
def ct() -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.integers(-1000, 400, (12, 20, 24)).astype(np.int16), spacing=(2.5, 0.8, 0.7),
                  origin=(10.0, -20.0, 30.0), direction=FLIPPED,
                  metadata=SeriesMetadata(series_instance_uid="1.2.826.0.1.3680043.8.498.1"), source="")


def blobs(shape, values=(1, 2, 3, 9)) -> np.ndarray:
    rng = np.random.default_rng(2)
    lab = np.zeros(shape, np.uint8)
    for v in values:
        z, y, x = (rng.integers(0, n - 4) for n in shape)
        lab[z:z + 4, y:y + 6, x:x + 5] = v
    return lab


def test_round_trip_is_voxel_exact_with_table_and_touched(tmp_path, ct):
    labels = blobs(ct.shape)
    table = LabelTable.default()
    table.update(3, name="GGO reviewed", color=(1, 2, 3), opacity=0.4, locked=True, visible=False)
    touched = np.zeros(ct.shape, bool)
    touched[3:6, 4:9, 2:7] = True
    out = save_label_map_nifti(tmp_path / "case.nii.gz", labels, table, ct, touched)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["case.labels.json", "case.nii.gz"] and len(names) == 3
    assert re.fullmatch(r"case\.touched\.[0-9a-f]{8}\.nii\.gz", names[2])

    back, table2, touched2 = load_label_map_nifti(out, ct)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    assert np.array_equal(touched2, touched)
    assert table2[3] == table[3] and table2[1] == table[1]
    assert table2[9].name == "label 9"  # in the map, not in the table: added
    image = sitk.ReadImage(str(out))
    assert np.allclose(np.asarray(image.GetDirection()).reshape(3, 3)[:, ::-1], FLIPPED, atol=1e-6)
    doc = json.loads(sidecar_path(out).read_text())
    assert doc["format"].startswith("lunglens-label-table/")
    assert doc["provenance"]["series_instance_uid"] == ct.metadata.series_instance_uid
    assert doc["provenance"]["shape_zyx"] == [12, 20, 24]
    assert doc["provenance"]["spacing_zyx_mm"] == [2.5, 0.8, 0.7]
    assert doc["touched"] == names[2]


def test_saving_without_touched_removes_a_stale_touched_file(tmp_path, ct):
    labels = blobs(ct.shape)
    path = tmp_path / "m.nii"
    save_label_map_nifti(path, labels, LabelTable.default(), ct, np.ones(ct.shape, bool))
    save_label_map_nifti(path, labels, LabelTable.default(), ct)
    assert not touched_path(path).exists() and not list(tmp_path.glob("*touched*"))
    assert load_label_map_nifti(path, ct)[2] is None


def test_without_sidecar_default_names(tmp_path, ct):
    labels = blobs(ct.shape, values=(1, 4, 7))
    write_volume(ct.with_array(labels), tmp_path / "plain.nii.gz")
    back, table, touched = load_label_map_nifti(tmp_path / "plain.nii.gz", ct)
    assert np.array_equal(back, labels) and touched is None
    assert table.names() == {1: "lung left", 4: "consolidation", 7: "label 7"}


def test_flipped_grid_of_the_same_space_is_resampled_exactly(tmp_path, ct):
    labels = blobs(ct.shape)
    flipped = Volume(labels[::-1, :, ::-1].copy(), ct.spacing, tuple(ct.index_to_lps((11, 0, 23))),
                     ct.direction * [-1, 1, -1])
    write_volume(flipped, tmp_path / "f.nii.gz")
    back, _, _ = load_label_map_nifti(tmp_path / "f.nii.gz", ct)
    assert np.array_equal(back, labels)


@pytest.mark.parametrize("change, message", [
    ({"origin": (15.0, -20.0, 30.0)}, "not on the CT's grid"),
    ({"array": np.zeros((11, 20, 24), np.uint8)}, "not on the CT's grid"),
    ({"direction": OBLIQUE}, "not a flip or permutation"),
])
def test_geometry_mismatch_is_an_error(tmp_path, ct, change, message):
    fields = {"array": np.zeros(ct.shape, np.uint8), "spacing": ct.spacing, "origin": ct.origin,
              "direction": ct.direction, **change}
    write_volume(Volume(**fields), tmp_path / "x.nii.gz")
    with pytest.raises(ValueError, match=message):
        load_label_map_nifti(tmp_path / "x.nii.gz", ct)


def test_a_sidecar_of_another_series_is_refused(tmp_path, ct):
    labels = blobs(ct.shape)
    save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct)
    other = ct.with_array(ct.array, metadata=SeriesMetadata(series_instance_uid="1.2.3.4"))
    with pytest.raises(ValueError, match="drawn on series"):
        load_label_map_nifti(tmp_path / "m.nii.gz", other)
    assert np.array_equal(load_label_map_nifti(tmp_path / "m.nii.gz", other, allow_other_series=True)[0], labels)


def test_atomic_write_leaves_no_temporary_files(tmp_path, ct, monkeypatch):
    labels = blobs(ct.shape)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct)
    before = path.read_bytes()

    def broken(image, name, *args, **kwargs):
        with open(name, "wb") as fh:
            fh.write(b"half a file")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(OSError, match="m.nii.gz: not saved: .*disk full"):
        save_label_map_nifti(path, np.zeros_like(labels), LabelTable.default(), ct)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.labels.json", "m.nii.gz"]


def _write(path, array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("array, message", [
    (np.zeros((20, 24), np.uint8), "2D"),
    (np.zeros((2, 12, 20, 24), np.uint8), "4D"),
    (np.full((12, 20, 24), 0.5, np.float32), "non-integer"),
    (np.full((12, 20, 24), 300, np.uint16), r"0\.\.255"),
    (np.full((12, 20, 24), -1, np.int16), r"0\.\.255"),
])
def test_bad_label_files(tmp_path, ct, array, message):
    path = _write(tmp_path / "bad.nii.gz", array)
    with pytest.raises(ValueError, match=message):
        load_label_map_nifti(path, ct)


def test_unreadable_files(tmp_path, ct):
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="cannot read"):
        load_label_map_nifti(tmp_path / "junk.nii.gz", ct)
    with pytest.raises(ValueError, match="no such file"):
        load_label_map_nifti(tmp_path / "missing.nii.gz", ct)
    save_label_map_nifti(tmp_path / "m.nii.gz", blobs(ct.shape), LabelTable.default(), ct)
    (tmp_path / "m.labels.json").write_text("{broken")
    with pytest.raises(ValueError, match="m.labels.json"):
        load_label_map_nifti(tmp_path / "m.nii.gz", ct)
    (tmp_path / "m.labels.json").write_text(json.dumps({"labels": [{"value": 300, "name": "x", "color": [1, 2, 3]}]}))
    with pytest.raises(ValueError, match="m.labels.json: .*entry 0.*integer 1..255"):
        load_label_map_nifti(tmp_path / "m.nii.gz", ct)


def test_save_checks_its_input(tmp_path, ct):
    table = LabelTable([LabelInfo(1, "a", (1, 1, 1))])
    with pytest.raises(ValueError, match="does not match the CT"):
        save_label_map_nifti(tmp_path / "m.nii.gz", np.zeros((3, 3, 3), np.uint8), table, ct)
    with pytest.raises(ValueError, match="integers"):
        save_label_map_nifti(tmp_path / "m.nii.gz", np.zeros(ct.shape, np.float32), table, ct)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        save_label_map_nifti(tmp_path / "m.nii.gz", np.full(ct.shape, 256, np.int32), table, ct)
    with pytest.raises(ValueError, match=".nii.gz or .nii"):
        save_label_map_nifti(tmp_path / "m.nrrd", np.zeros(ct.shape, np.uint8), table, ct)
    assert list(tmp_path.iterdir()) == []

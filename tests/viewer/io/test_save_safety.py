"""Saves never destroy data: short writes and full disks are errors, a label-map save is one step for a
reader (even when killed), files follow the umask, stale temporaries go."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from app.cli import EXIT_BAD_INPUT, main
from viewer.core.volume import Volume
from viewer.dicom.write import write_ct_series
from viewer.io import nifti_labels as mask_io
from viewer.io.atomic_files import TEMP_MARK, WriteError, remove_stale_temporaries, write_text_atomic
from viewer.io.nifti_labels import load_label_map_nifti, save_label_map_nifti, sidecar_path
from viewer.io.seg import load_source_datasets, read_dicom_seg, write_dicom_seg
from viewer.io.volumes import open_volume, read_volume_file, write_volume
from viewer.labels.table import LabelTable
from viewer.synthetic.phantom import make_phantom

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ct() -> Volume:
    return make_phantom(shape=(12, 40, 40), spacing=(5.0, 4.0, 4.0)).volume


def pattern(shape, version: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and touched mask of save number `version`: the touched block's position encodes the version."""
    labels = np.zeros(shape, np.uint8)
    labels[2:8, 5:30, 5:30] = 1 + version % 5
    labels[version % shape[0], :3, :3] = 3
    touched = np.zeros(shape, bool)
    touched[version % shape[0], 10:12, 10:12] = True
    return labels, touched


def short_writer(real):
    """sitk.WriteImage as on a full disk: the file is cut to a third and nothing is raised."""

    def write(image, name, *args, **kwargs):
        real(image, name, *args, **kwargs)
        size = os.path.getsize(name)
        with open(name, "r+b") as fh:
            fh.truncate(size // 3)

    return write


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- 1. short writes ----------------------------------------------------------------------------------------


def test_short_write_of_a_label_map_is_an_error_and_keeps_the_old_files(tmp_path, ct, monkeypatch):
    labels, touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct, touched)
    before = files(tmp_path)
    monkeypatch.setattr(sitk, "WriteImage", short_writer(sitk.WriteImage))
    new, new_touched = pattern(ct.shape, 2)
    with pytest.raises(OSError, match=r"m\.nii\.gz: not saved: .*short write.*previous files? (is|are) untouched"):
        save_label_map_nifti(path, new, LabelTable.default(), ct, new_touched)
    assert files(tmp_path) == before  # no temporary left, nothing replaced
    back, _, back_touched = load_label_map_nifti(path, ct)
    assert np.array_equal(back, labels) and np.array_equal(back_touched, touched)


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii", "ct.nrrd", "ct.mha"])
def test_short_write_of_a_volume_is_an_error(tmp_path, ct, monkeypatch, name):
    good = write_volume(ct, tmp_path / name)
    before = good.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", short_writer(sitk.WriteImage))
    with pytest.raises(WriteError, match=f"{name}: not saved"):
        write_volume(ct.with_array(ct.array + 1), good)
    assert good.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [name]


def test_cli_convert_and_mask_convert_exit_1_on_a_short_write(tmp_path, ct, monkeypatch, capsys):
    src = write_volume(ct, tmp_path / "in" / "ct.nii.gz")
    out = write_volume(ct.with_array(ct.array[::-1].copy()), tmp_path / "out.nii.gz")
    mask = save_label_map_nifti(tmp_path / "in" / "m.nii.gz", pattern(ct.shape, 1)[0], LabelTable.default(), ct)
    mask_out = save_label_map_nifti(tmp_path / "m2.nii.gz", pattern(ct.shape, 2)[0], LabelTable.default(), ct)
    before, mask_before = out.read_bytes(), mask_out.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", short_writer(sitk.WriteImage))
    capsys.readouterr()
    assert main(["convert", str(src), str(out), "--quiet"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{out}: not saved" in err and "Traceback" not in err
    assert main(["mask", "convert", str(mask), str(mask_out), "--reference", str(src)]) == EXIT_BAD_INPUT
    assert f"{mask_out}: not saved" in capsys.readouterr().err
    assert out.read_bytes() == before and mask_out.read_bytes() == mask_before


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs a tmpfs mount (root)")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_real_full_disk_keeps_the_good_mask_and_says_disk_full(tmp_path, ct, capsys):
    big = make_phantom(shape=(40, 96, 96), spacing=(2.0, 2.0, 2.0)).volume
    rng = np.random.default_rng(0)
    with small_tmpfs(tmp_path / "disk", "160k") as disk:
        labels, touched = pattern(big.shape, 1)
        path = save_label_map_nifti(disk / "m.nii.gz", labels, LabelTable.default(), big, touched)
        before = files(disk)
        noise = rng.integers(0, 6, big.shape, dtype=np.uint8)  # does not compress into what is left
        with pytest.raises(OSError, match="disk full") as info:
            save_label_map_nifti(path, noise, LabelTable.default(), big, noise > 2)
        assert str(path) in str(info.value) or str(disk) in str(info.value)
        assert files(disk) == before
        back, _, back_touched = load_label_map_nifti(path, big)
        assert np.array_equal(back, labels) and np.array_equal(back_touched, touched)
        src = write_volume(big, tmp_path / "ct.nii.gz")
        capsys.readouterr()
        assert main(["convert", str(src), str(disk / "ct.nii"), "--quiet"]) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "disk full" in err and "ct.nii" in err
        assert files(disk) == before


# -- 2. one step for a reader --------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL at a chosen point of a save."""


def kill_at(monkeypatch, n: int) -> None:
    """Let the save perform n renames, then stop it dead before the next one."""
    real = os.replace
    calls = []

    def replace(src, dst):
        if len(calls) == n:
            raise Killed
        calls.append(dst)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("renames", range(8))
def test_a_save_killed_at_any_rename_leaves_one_whole_set(tmp_path, ct, monkeypatch, renames):
    old, old_touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", old, LabelTable.default(), ct, old_touched)
    new, new_touched = pattern(ct.shape, 2)
    kill_at(monkeypatch, renames)
    finished = True
    try:
        save_label_map_nifti(path, new, LabelTable.default(), ct, new_touched)
    except Killed:
        finished = False
    monkeypatch.undo()
    labels, _, touched = load_label_map_nifti(path, ct)
    pair = (old, old_touched) if np.array_equal(labels, old) else (new, new_touched)
    assert np.array_equal(labels, pair[0]) and np.array_equal(touched, pair[1])
    if finished:
        assert pair[0] is new
    # the next save cleans up whatever the killed one left
    save_label_map_nifti(path, old, LabelTable.default(), ct, old_touched)
    touched_files = [p.name for p in tmp_path.iterdir() if ".touched." in p.name]
    assert len(touched_files) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in touched_files) == [
        "m.labels.json", "m.nii.gz"]


def test_labels_changed_by_another_program_lose_only_the_touched_mask(tmp_path, ct):
    labels, touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct, touched)
    edited = labels.copy()
    edited[0] = 4
    sitk.WriteImage(ct.with_array(edited).to_sitk(), str(path))  # e.g. ITK-SNAP saving over it
    notes: list[str] = []
    back, table, back_touched = load_label_map_nifti(path, ct, warnings=notes)
    assert np.array_equal(back, edited) and back_touched is None and table[3].name
    assert notes and "changed after LungLens saved it" in notes[0]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from tests.viewer.io.test_save_safety import pattern
    from viewer.labels.table import LabelTable
    from viewer.io.nifti_labels import save_label_map_nifti
    from viewer.synthetic.phantom import make_phantom
    ct = make_phantom(shape=(12, 40, 40), spacing=(5.0, 4.0, 4.0)).volume
    print("ready", flush=True)
    version = int(sys.argv[3])
    while True:
        version += 1
        labels, touched = pattern(ct.shape, version)
        save_label_map_nifti(sys.argv[2], labels, LabelTable.default(), ct, touched)
""")


@pytest.mark.slow
def test_sigkill_during_saves_never_mixes_files(tmp_path, ct):
    path = tmp_path / "m.nii.gz"
    labels, touched = pattern(ct.shape, 0)
    save_label_map_nifti(path, labels, LabelTable.default(), ct, touched)
    rng = np.random.default_rng(3)
    for kill in range(4):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(ROOT), str(path), str(kill)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.1, 0.8)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        back, _, back_touched = load_label_map_nifti(path, ct)
        versions = [v for v in range(60) if np.array_equal(back, pattern(ct.shape, v)[0])]  # period 60
        assert len(versions) == 1
        assert np.array_equal(back_touched, pattern(ct.shape, versions[0])[1])


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path, ct):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "m.nii.gz"
    stale = tmp_path / f".m.nii.gz{TEMP_MARK}{dead.pid}-0badc0de.nii.gz"
    stale.write_bytes(b"half")
    live = tmp_path / f".m.nii.gz{TEMP_MARK}{os.getpid()}-0badc0de.nii.gz"
    live.write_bytes(b"being written")
    pending = tmp_path / ".m.labels.json.pending"
    (tmp_path / f"..m.labels.json.pending{TEMP_MARK}{dead.pid}-12345678.tmp").write_text("{")
    (tmp_path / f".m.touched.0123abcd.nii.gz{TEMP_MARK}{dead.pid}-12345678.nii.gz").write_text("{")
    save_label_map_nifti(path, pattern(ct.shape, 1)[0], LabelTable.default(), ct)
    assert not stale.exists() and live.exists() and not pending.exists()
    assert not [p for p in tmp_path.iterdir() if "pending" in p.name]
    assert remove_stale_temporaries(path) == []


# -- 3. modes ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_new_files_follow_the_umask(tmp_path, ct, mask):
    with umask(mask):
        labels, touched = pattern(ct.shape, 1)
        save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct, touched)
        write_volume(ct, tmp_path / "ct.nrrd")
        write_text_atomic(tmp_path / "notes.txt", "x")
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~mask, p.name


def test_an_overwritten_file_keeps_its_mode(tmp_path, ct):
    labels, touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct, touched)
    ct_file = write_volume(ct, tmp_path / "ct.nii.gz")
    for p in (path, sidecar_path(path), ct_file):
        os.chmod(p, 0o604)
    with umask(0o077):
        save_label_map_nifti(path, pattern(ct.shape, 2)[0], LabelTable.default(), ct, touched)
        write_volume(ct, ct_file)
    touched_file = path.with_name(json.loads(sidecar_path(path).read_text())["touched"])
    for p in (path, sidecar_path(path), ct_file, touched_file):
        assert stat.S_IMODE(p.stat().st_mode) == 0o604, p.name


# -- 11. mask convert inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    phantom = make_phantom(shape=(10, 32, 32), spacing=(5.0, 5.0, 5.0))
    write_ct_series(phantom.volume, root / "dicom", uid_seed="save-safety")
    return root, open_volume(root / "dicom"), phantom.label_map()


def raw_float_nifti(path: Path, array: np.ndarray, like: Volume) -> Path:
    """A float32 NIfTI written with SimpleITK (which keeps NaN/inf in the file but reads them back as 0)."""
    sitk.WriteImage(like.with_array(array.astype(np.float32)).to_sitk(), str(path))
    return path


def test_float_mask_with_inf_voxels_is_refused(tmp_path, dicom_ct, capsys):
    root, vol, labels = dicom_ct
    data = labels.astype(np.float32)
    data[labels == 1] = np.inf
    bad = raw_float_nifti(tmp_path / "inf.nii.gz", data, vol)
    with pytest.raises(ValueError, match=r"inf\.nii\.gz: not a label map \(\d+ voxel\(s\) are NaN or infinite\)"):
        load_label_map_nifti(bad, vol)
    assert main(["mask", "convert", str(bad), str(tmp_path / "o.nii.gz"), "--reference",
                 str(root / "dicom")]) == EXIT_BAD_INPUT
    assert "NaN or infinite" in capsys.readouterr().err and not (tmp_path / "o.nii.gz").exists()
    nan = data.copy()
    nan[labels == 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_label_map_nifti(raw_float_nifti(tmp_path / "nan.nii", nan, vol), vol)
    ok = raw_float_nifti(tmp_path / "ok.nii.gz", labels, vol)  # finite float labels still load
    assert np.array_equal(load_label_map_nifti(ok, vol)[0], labels)


def test_half_resolution_mask_is_refused_unless_resampling_is_asked_for(tmp_path, dicom_ct, capsys):
    root, vol, labels = dicom_ct
    image = sitk.Resample(vol.with_array(labels).to_sitk(), [s // 2 for s in vol.shape[::-1]], sitk.Transform(),
                          sitk.sitkNearestNeighbor, vol.to_sitk().GetOrigin(),
                          [2 * s for s in vol.spacing[::-1]], vol.to_sitk().GetDirection())
    image.SetOrigin(vol.index_to_lps([0.5, 0.5, 0.5]).tolist())
    half = tmp_path / "half.nii.gz"
    sitk.WriteImage(image, str(half))
    with pytest.raises(ValueError, match=r"half\.nii\.gz: voxels of 10 x 10 x 10 mm .* --resample"):
        load_label_map_nifti(half, vol)
    out = tmp_path / "o.nii.gz"
    args = ["mask", "convert", str(half), str(out), "--reference", str(root / "dicom")]
    assert main(args) == EXIT_BAD_INPUT and not out.exists()
    assert "--resample" in capsys.readouterr().err
    assert main([*args, "--resample"]) == 0
    back = read_volume_file(out).array
    assert back.shape == vol.shape and (back > 0).sum() > 0.5 * (labels > 0).sum()


def test_labelmap_seg_with_a_background_segment_is_read(tmp_path, dicom_ct):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    root, vol, labels = dicom_ct
    sources = load_source_datasets(root / "dicom", vol)
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n, segment_label=f"s{n}", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        for n in range(1, int(labels.max()) + 1)]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=labels, segmentation_type="LABELMAP",
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=5,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="test", manufacturer_model_name="test",
        software_versions="1", device_serial_number="1")
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    if 0 not in numbers:  # older highdicom leaves the background out: add it as a LABELMAP may
        background = hd.seg.SegmentDescription(
            segment_number=1, segment_label="Background", segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
        background.SegmentNumber = 0
        seg.SegmentSequence.insert(0, background)
    path = tmp_path / "labelmap.dcm"
    seg.save_as(path)
    back, table = read_dicom_seg(path, vol, sources)
    assert np.array_equal(back > 0, labels > 0)
    assert "Background" not in [i.name for i in table] and len(table) == int(labels.max())


def test_seg_of_another_series_with_the_same_frame_of_reference_is_refused(tmp_path, dicom_ct, capsys):
    import pydicom

    root, vol, labels = dicom_ct
    sources = load_source_datasets(root / "dicom", vol)
    path = write_dicom_seg(tmp_path / "s.dcm", labels, LabelTable.default(), sources, reference=vol)
    ds = pydicom.dcmread(path)
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4.5.6.7"
    ds.save_as(path)
    with pytest.raises(ValueError, match=r"s\.dcm: drawn on series 1\.2\.3\.4\.5\.6\.7, not on this CT"):
        read_dicom_seg(path, vol, sources)
    back, _ = read_dicom_seg(path, vol, sources, allow_other_series=True)
    assert np.array_equal(back, labels)
    out = tmp_path / "o.nii.gz"
    assert main(["mask", "convert", str(path), str(out), "--reference", str(root / "dicom")]) == EXIT_BAD_INPUT
    assert "--allow-other-series" in capsys.readouterr().err
    assert main(["mask", "convert", str(path), str(out), "--reference", str(root / "dicom"),
                 "--allow-other-series"]) == 0


@pytest.mark.parametrize("text, problem", [
    ('{"labels": [{"value": 1e999, "name": "x", "color": [1, 2, 3]}]}', "out of range"),
    ('{"labels": [{"value": 1, "name": "x", "color": [1, 2, 3], "opacity": NaN}]}', "NaN"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"labels": [], "provenance": {"spacing_zyx_mm": [1, 2, 1e308]}, "touched": "../../etc/passwd"}',
     "'touched' must be a file name"),
    ('{"labels": [{"value": 2, "name": "x", "color": [1, 2]}]}', "'color' must be three integers"),
    ('{"labels": [{"value": true, "name": "x", "color": [1, 2, 3]}]}', "'value' must be an integer"),
])
def test_bad_sidecars_give_a_clear_error(tmp_path, ct, text, problem):
    path = save_label_map_nifti(tmp_path / "m.nii.gz", pattern(ct.shape, 1)[0], LabelTable.default(), ct)
    sidecar_path(path).write_text(text)
    with pytest.raises(ValueError, match="m.labels.json") as info:
        load_label_map_nifti(path, ct)
    assert problem in str(info.value)


def test_sidecar_schema_accepts_what_lunglens_writes(tmp_path, ct):
    labels, touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), ct, touched)
    doc = json.loads(sidecar_path(path).read_text())
    assert mask_io.sidecar_problem(doc) is None and doc["labels_file"]["name"] == "m.nii.gz"


def test_export_training_reports_a_touched_mask_it_cannot_trust(tmp_path, ct, capsys):
    case = tmp_path / "in" / "case1"
    write_volume(ct, case / "ct.nii.gz")
    labels, touched = pattern(ct.shape, 1)
    path = save_label_map_nifti(case / "labels.nii.gz", labels, LabelTable.default(), ct, touched)
    sitk.WriteImage(ct.with_array(pattern(ct.shape, 2)[0]).to_sitk(), str(path))  # edited elsewhere
    assert main(["export-training", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert "changed after LungLens saved it" in capsys.readouterr().out
    dataset = json.loads((tmp_path / "out" / "dataset.json").read_text())
    row = dataset["cases"][0]
    assert row["touched"] is None and row["warnings"] and not (tmp_path / "out" / "case1" / "touched.nii.gz").exists()


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_completeness_is_read_from_the_size_alone(tmp_path, ct, name):
    from viewer.io.atomic_files import nifti_complete

    path = tmp_path / name
    sitk.WriteImage(ct.to_sitk(), str(path), useCompression=name.endswith(".gz"))
    assert nifti_complete(path, ct.array) is True
    data = path.read_bytes()
    for cut in (1, 7, len(data) // 2):
        path.write_bytes(data[:-cut])
        assert nifti_complete(path, ct.array) is False, cut
    nrrd = write_volume(ct, tmp_path / "ct.nrrd")
    assert nifti_complete(nrrd, ct.array) is None  # not a NIfTI: write_volume reads it back instead

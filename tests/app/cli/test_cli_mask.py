"""`lunglens mask convert` (NIfTI <-> DICOM SEG) and `lunglens export-training`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import EXIT_BAD_INPUT, EXIT_USAGE, main
from viewer.core.volume import Volume
from viewer.io.nifti_labels import load_label_map_nifti, save_label_map_nifti
from viewer.io.volumes import read_volume_file, write_volume
from viewer.labels.table import LabelTable


@pytest.fixture(scope="module")
def study(small_phantom, small_phantom_series):
    """A phantom CT as a DICOM series and as NIfTI, its loaded Volume and label map."""
    folder, vol = small_phantom_series("cli-mask")
    root = folder.parent
    write_volume(vol, root / "ct.nii.gz")
    return root, vol, small_phantom.label_map()


def test_nifti_to_seg_and_back(tmp_path, study, capsys):
    root, vol, labels = study
    table = LabelTable.default()
    table.update(3, name="GGO", color=(9, 8, 7))
    touched = labels == 3
    save_label_map_nifti(tmp_path / "in.nii.gz", labels, table, vol, touched)
    seg = tmp_path / "out.dcm"
    assert main(["mask", "convert", str(tmp_path / "in.nii.gz"), str(seg), "--reference", str(root / "dicom")]) == 0
    out = capsys.readouterr()
    assert "GGO (131 voxels)" in out.out and "touched mask is not kept" in out.err
    back = tmp_path / "back.nii.gz"
    assert main(["mask", "convert", str(seg), str(back), "--reference", str(root / "dicom")]) == 0
    labels2, table2, touched2 = load_label_map_nifti(back, vol)
    present = set(np.unique(labels)) - {0}
    assert np.array_equal(labels2, labels) and touched2 is None
    assert table2.names() == {v: n for v, n in table.names().items() if v in present}  # empty labels: no segment
    # NIfTI to NIfTI against the CT as a volume file keeps the touched mask
    again = tmp_path / "again.nii"
    assert main(["mask", "convert", str(tmp_path / "in.nii.gz"), str(again), "--reference",
                 str(root / "ct.nii.gz"), "--allow-other-series"]) == 0
    labels3, _, touched3 = load_label_map_nifti(again, vol, allow_other_series=True)
    assert np.array_equal(labels3, labels) and np.array_equal(touched3, touched)


def test_mask_convert_errors(tmp_path, study, capsys):
    root, vol, labels = study
    save_label_map_nifti(tmp_path / "m.nii.gz", labels, LabelTable.default(), vol)
    write_volume(Volume(labels[:-1].copy(), vol.spacing, vol.origin, vol.direction), tmp_path / "short.nii.gz")
    ref = ["--reference", str(root / "dicom")]
    cases = [
        (["mask", "convert", str(tmp_path / "m.nii.gz"), str(tmp_path / "o.png"), *ref], EXIT_USAGE, "must end in"),
        (["mask", "convert", str(tmp_path / "no.nii.gz"), str(tmp_path / "o.dcm"), *ref], EXIT_BAD_INPUT,
         "no such file"),
        (["mask", "convert", str(tmp_path / "m.nii.gz"), str(tmp_path / "o.dcm"), "--reference",
          str(root / "ct.nii.gz")], EXIT_BAD_INPUT, "DICOM folder"),
        (["mask", "convert", str(tmp_path / "short.nii.gz"), str(tmp_path / "o.dcm"), *ref], EXIT_BAD_INPUT,
         "not on the CT's grid"),
        (["mask", "convert", str(tmp_path / "m.nii.gz"), str(tmp_path / "o.dcm"), "--reference",
          str(tmp_path / "nowhere")], EXIT_BAD_INPUT, "no such file"),
        (["mask", "convert", str(root / "dicom" / "IM00001.dcm"), str(tmp_path / "o.nii.gz"), *ref],
         EXIT_BAD_INPUT, "not a DICOM Segmentation"),
    ]
    for args, code, message in cases:
        assert main(args) == code, args
        assert message in capsys.readouterr().err, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.labels.json", "m.nii.gz", "short.nii.gz"]
    assert main(["mask"]) == EXIT_USAGE
    for cmd in (["mask", "convert"], ["export-training"]):
        with pytest.raises(SystemExit) as info:
            main([*cmd, "--help"])
        assert info.value.code == 0
    assert "touched.nii.gz" in capsys.readouterr().out  # export-training documents its layout


def test_export_training(tmp_path, study, capsys):
    root, vol, labels = study
    data = tmp_path / "data"
    # 1. a loose mask whose sidecar names its CT (the DICOM folder), with a touched mask
    save_label_map_nifti(data / "reviewed" / "patient1.nii.gz", labels, LabelTable.default(), vol,
                         touched=labels == 4)
    # 2. a case folder: ct.nii.gz + labels.nii.gz without a sidecar
    case = data / "case2"
    case.mkdir(parents=True)
    write_volume(vol, case / "ct.nii.gz")
    write_volume(vol.with_array((labels == 1).astype(np.uint8) * 7), case / "labels.nii.gz")
    # 3. a broken case folder: the mask does not fit the CT
    bad = data / "case3"
    bad.mkdir()
    write_volume(vol, bad / "ct.nii.gz")
    write_volume(Volume(labels[1:].copy(), vol.spacing, vol.origin, vol.direction), bad / "labels.nii.gz")
    # 4. a loose mask whose CT is gone
    gone = vol.with_array(vol.array, source=str(tmp_path / "deleted"))
    save_label_map_nifti(data / "lost.nii.gz", labels, LabelTable.default(), gone)

    out = tmp_path / "train"
    assert main(["export-training", str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "case3" in err and "lost.nii.gz" in err and "does not exist" in err
    dataset = json.loads((out / "dataset.json").read_text())
    assert [c["case"] for c in dataset["cases"]] == ["case2", "patient1"]
    assert len(dataset["skipped"]) == 2
    assert dataset["labels"]["1"] == {"names": ["lung left"], "cases": 1, "voxels": int((labels == 1).sum())}
    assert dataset["labels"]["7"]["names"] == ["label 7"]
    for name in ("case2", "patient1"):
        ct = read_volume_file(out / name / "ct.nii.gz")
        lab = read_volume_file(out / name / "labels.nii.gz")
        assert ct.same_grid(vol) and lab.same_grid(vol) and np.array_equal(ct.array, vol.array)
        assert json.loads((out / name / "labels.json").read_text())["labels"]
    assert np.array_equal(read_volume_file(out / "patient1" / "labels.nii.gz").array, labels)
    assert np.array_equal(read_volume_file(out / "patient1" / "touched.nii.gz").array, labels == 4)
    assert not (out / "case2" / "touched.nii.gz").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export-training", str(empty), "--out", str(tmp_path / "o2")]) == EXIT_BAD_INPUT
    assert "no exportable case" in capsys.readouterr().err
    assert main(["export-training", str(tmp_path / "nowhere"), "--out", str(out)]) == EXIT_BAD_INPUT


def test_export_training_with_a_seg_case(tmp_path, study, capsys):
    root, vol, labels = study
    case = tmp_path / "data" / "c1"
    case.mkdir(parents=True)
    (case / "dicom").symlink_to(root / "dicom", target_is_directory=True)
    assert main(["mask", "convert", str(_nifti(tmp_path, vol, labels)), str(case / "seg.dcm"), "--reference",
                 str(root / "dicom")]) == 0
    out = tmp_path / "train"
    assert main(["export-training", str(tmp_path / "data"), "--out", str(out)]) == 0
    assert np.array_equal(read_volume_file(out / "c1" / "labels.nii.gz").array, labels)


def _nifti(tmp_path, vol, labels):
    return save_label_map_nifti(tmp_path / "src.nii.gz", labels, LabelTable.default(), vol)


def test_export_training_warns_about_uncorrected_masks_and_reports_loose_segs(tmp_path, study, capsys):
    root, vol, labels = study
    data = tmp_path / "data"
    # a mask saved with an empty touched mask: nobody corrected it (the AI's, imported and saved as it was)
    save_label_map_nifti(data / "ai" / "patient9.nii.gz", labels, LabelTable.default(), vol,
                         touched=np.zeros(labels.shape, bool))
    # a DICOM SEG under another name than labels.dcm / seg.dcm: it cannot be paired, and must not vanish
    assert main(["mask", "convert", str(_nifti(tmp_path, vol, labels)), str(data / "loose" / "my-seg.dcm"),
                 "--reference", str(root / "dicom")]) == 0
    capsys.readouterr()
    out = tmp_path / "train"
    assert main(["export-training", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "patient9: warning: no voxel was changed by a person" in printed.out
    err = printed.err
    dataset = json.loads((out / "dataset.json").read_text())
    (row,) = dataset["cases"]
    assert any("uncorrected mask" in w for w in row["warnings"])
    (skip,) = dataset["skipped"]
    assert skip["path"].endswith("my-seg.dcm") and "labels.dcm or seg.dcm" in skip["error"]
    assert "my-seg.dcm" in err

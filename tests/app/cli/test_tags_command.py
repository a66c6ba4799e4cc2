"""`lunglens tags`: the DICOM attributes of a series' file, the ones that differ between slices marked."""

from __future__ import annotations

import json

import pydicom
import pytest

from app.cli import main
from viewer.dicom.write import write_ct_series
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tags") / "ct"
    write_ct_series(make_phantom(PhantomConfig(shape=(6, 32, 32), spacing=(5.0, 2.0, 2.0), seed=1)).volume, folder,
                    uid_seed="tags")
    return folder


def test_lists_every_tag_and_marks_what_differs(series, capsys):
    assert main(["tags", str(series), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["slices"] == 6
    rows = {r["keyword"]: r for r in out["tags"]}
    assert rows["Modality"]["value"] == "CT" and rows["Modality"]["vr"] == "CS" and not rows["Modality"]["differs"]
    assert rows["ImagePositionPatient"]["differs"] and rows["SOPInstanceUID"]["differs"]
    assert rows["PixelData"]["value"].endswith("bytes>")
    zs = []
    for k in (0, 5):
        assert main(["tags", str(series), "--slice", str(k), "--json", "--filter", "ImagePositionPatient"]) == 0
        (row,) = json.loads(capsys.readouterr().out)["tags"]
        zs.append(float(row["value"].split("\\")[2]))
    assert zs[0] < zs[1]  # slice 0 is the lowest, as the viewer stacks an axial series


def test_text_output_sequences_private_tags_and_errors(series, tmp_path, capsys):
    one = sorted(series.glob("*.dcm"))[0]
    ds = pydicom.dcmread(one)
    block = ds.private_block(0x0011, "LUNGLENS TEST", create=True)
    block.add_new(0x01, "LO", "private value")
    item = pydicom.Dataset()
    item.CodeValue = "123"
    ds.ProcedureCodeSequence = pydicom.Sequence([item])
    ds.save_as(tmp_path / "one.dcm")
    assert main(["tags", str(tmp_path / "one.dcm")]) == 0
    text = capsys.readouterr().out
    assert "(0008,1032) ProcedureCodeSequence" in text and "Item 1" in text and "(0008,0100) CodeValue" in text
    assert "(0011,1001)" in text and "private value" in text
    assert not any(line.startswith("*") for line in text.splitlines())  # one file: nothing differs
    assert main(["tags", str(series), "--slice", "9"]) == 1
    assert "slice 9 does not exist: the series has 6 slice(s)" in capsys.readouterr().err
    assert main(["tags", str(tmp_path / "missing")]) == 1
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    assert main(["tags", str(tmp_path / "junk.dcm")]) == 1
    assert "junk.dcm" in capsys.readouterr().err

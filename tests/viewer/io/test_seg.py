"""DICOM SEG: written from a label map over the project's CT series, read back voxel-exact."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from viewer.core.volume import Volume
from viewer.dicom.write import write_ct_series
from viewer.io.seg import load_source_datasets, read_dicom_seg, write_dicom_seg
from viewer.io.volumes import open_volume
from viewer.labels.table import LabelInfo, LabelTable


@pytest.fixture(scope="module")
def series(small_phantom, small_phantom_series):
    """The phantom CT as a DICOM series, loaded back, its ordered source datasets and its label map."""
    folder, vol = small_phantom_series("seg-test")
    return folder, vol, load_source_datasets(folder, vol), small_phantom.label_map()


def test_round_trip_voxel_exact_with_names_and_colours(tmp_path, series):
    folder, vol, sources, labels = series
    assert np.unique(labels).tolist() == [0, 1, 2, 3, 4]
    table = LabelTable.default()
    table.update(4, name="consolidation (reviewed)", color=(12, 34, 56))
    table.add(LabelInfo(17, "scar", (250, 250, 5)))  # empty label: not written (no empty segments)
    labels = labels.copy()
    labels[0, :3, :3] = 9  # in the map, not in the table
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, table, sources, reference=vol)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]

    back, table2 = read_dicom_seg(path, vol, sources)
    assert back.dtype == np.uint8 and np.array_equal(back, labels)
    present = {1, 2, 3, 4}
    assert table2.names() == {**{v: n for v, n in table.names().items() if v in present}, 9: "label 9"}
    assert table2.colors()[4] == (12, 34, 56) and 17 not in table2.colors() and 5 not in table2.colors()
    assert table2.colors() == {**{v: c for v, c in table.colors().items() if v in present}, 9: table2.colors()[9]}


def test_seg_references_the_ct_series(tmp_path, series):
    folder, vol, sources, labels = series
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, LabelTable.default(), sources)
    seg = pydicom.dcmread(path)
    ct_uids = {str(ds.SOPInstanceUID) for ds in sources}
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID == vol.metadata.frame_of_reference_uid
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == vol.metadata.series_instance_uid
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} <= ct_uids
    per_frame = {str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
                 for f in seg.PerFrameFunctionalGroupsSequence}
    assert per_frame <= ct_uids and len(per_frame) > 1
    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert segments[1].SegmentLabel == "lung left"
    assert segments[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "44029006"
    assert segments[3].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segments[3].SegmentedPropertyTypeCodeSequence[0].CodeValue == "112120"


def test_frames_found_by_source_uid_without_positions(tmp_path, series):
    folder, vol, sources, labels = series
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, LabelTable.default(), sources)
    seg = pydicom.dcmread(path)
    for group in seg.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence
    seg.save_as(tmp_path / "nopos.dcm")
    assert np.array_equal(read_dicom_seg(tmp_path / "nopos.dcm", vol, sources)[0], labels)
    with pytest.raises(ValueError, match="no position and references none"):
        read_dicom_seg(tmp_path / "nopos.dcm", vol, None)


def test_empty_label_map_is_refused_not_written_as_empty_segments(tmp_path, series):
    folder, vol, sources, _ = series
    empty = np.zeros(vol.shape, np.uint8)
    for table in (LabelTable.default(), LabelTable()):
        with pytest.raises(ValueError, match="nothing to write: the label map is empty"):
            write_dicom_seg(tmp_path / "none.dcm", empty, table, sources)
    assert not (tmp_path / "none.dcm").exists()


def test_odd_slice_size_bit_packing(tmp_path):
    """Frames of 7 x 9 pixels do not end on a byte: the bit-packed frames must still line up."""
    rng = np.random.default_rng(3)
    ct = Volume(rng.integers(-1000, 500, (5, 7, 9)).astype(np.int16), spacing=(2.0, 0.7, 0.9))
    write_ct_series(ct, tmp_path / "ct", uid_seed="odd")
    vol = open_volume(tmp_path / "ct")
    sources = load_source_datasets(tmp_path / "ct", vol)
    labels = rng.integers(0, 4, vol.shape).astype(np.uint8)
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, LabelTable.default(), sources, reference=vol)
    assert np.array_equal(read_dicom_seg(path, vol, sources)[0], labels)


def test_overlapping_segments_higher_number_wins(tmp_path, series):
    folder, vol, sources, _ = series
    stacked = np.zeros((*vol.shape, 2), np.uint8)
    stacked[5:10, 10:30, 10:30, 0] = 1
    stacked[8:12, 20:40, 20:40, 1] = 1
    descriptions = [
        hd.seg.SegmentDescription(n, name, codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
        for n, name in ((1, "first"), (2, "second"))
    ]
    seg = hd.seg.Segmentation(sources, stacked, "BINARY", descriptions, hd.UID(), 5, hd.UID(), 1, "other", "x",
                              "1", "0")
    seg.save_as(tmp_path / "overlap.dcm")
    back, table = read_dicom_seg(tmp_path / "overlap.dcm", vol, sources)
    assert table.names() == {1: "first", 2: "second"}
    assert back[9, 25, 25] == 2 and back[6, 15, 15] == 1 and back[11, 35, 35] == 2
    expected = np.where(stacked[..., 1] > 0, 2, np.where(stacked[..., 0] > 0, 1, 0))
    assert np.array_equal(back, expected)


def test_bad_inputs(tmp_path, series):
    folder, vol, sources, labels = series
    with pytest.raises(ValueError, match="23 source images"):
        write_dicom_seg(tmp_path / "s.dcm", labels, LabelTable.default(), sources[:-1])
    with pytest.raises(ValueError, match="not in the order"):
        write_dicom_seg(tmp_path / "s.dcm", labels, LabelTable.default(), sources[::-1], reference=vol)
    with pytest.raises(ValueError, match="needs the CT series"):
        write_dicom_seg(tmp_path / "s.dcm", labels, LabelTable.default(), [])
    assert not list(tmp_path.iterdir())
    ct_file = sorted(folder.iterdir())[0]
    with pytest.raises(ValueError, match="not a DICOM Segmentation"):
        read_dicom_seg(ct_file, vol, sources)
    (tmp_path / "junk.dcm").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read as DICOM"):
        read_dicom_seg(tmp_path / "junk.dcm", vol, sources)
    path = write_dicom_seg(tmp_path / "seg.dcm", labels, LabelTable.default(), sources)
    shifted = vol.with_array(vol.array, origin=(vol.origin[0] + 2.0, vol.origin[1], vol.origin[2]))
    with pytest.raises(ValueError, match="not a slice of the CT grid"):
        read_dicom_seg(path, shifted, None)
    other = Volume(np.zeros((24, 32, 32), np.int16))
    with pytest.raises(ValueError, match="frames are 64x64"):
        read_dicom_seg(path, other, None)


def test_source_datasets_must_match_the_loaded_ct(tmp_path, series):
    folder, vol, _, _ = series
    shifted = vol.with_array(vol.array, origin=(vol.origin[0], vol.origin[1], vol.origin[2] + 1.0))
    with pytest.raises(ValueError, match="not a slice of the CT grid"):
        load_source_datasets(folder, shifted)
    with pytest.raises(ValueError, match="no such file"):
        load_source_datasets(tmp_path / "nowhere", vol)


def test_anonymized_sources_and_algorithm_segments(tmp_path, series, recwarn):
    """Source images without patient attributes (anonymized) still make a SEG, with no warning passed on and
    the caller's datasets unchanged; segments an algorithm made say so (AUTOMATIC / SEMIAUTOMATIC + name)."""
    import copy
    import warnings

    folder, vol, sources, labels = series
    anonymous = [copy.deepcopy(ds) for ds in sources]
    for ds in anonymous:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName"):
            if keyword in ds:
                delattr(ds, keyword)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # highdicom's warnings about empty patient values must not leak out
        path = write_dicom_seg(tmp_path / "seg.dcm", labels, LabelTable.default(), anonymous, reference=vol,
                               algorithms={3: ("AUTOMATIC", "dcn", "7d724a62"), 4: ("SEMIAUTOMATIC", "dcn", "7d7")})
    assert all("PatientName" not in ds for ds in anonymous)
    seg = pydicom.dcmread(path)
    assert str(seg.PatientName) == ""
    kinds = {str(s.SegmentLabel): (s.SegmentAlgorithmType, str(s.get("SegmentAlgorithmName", "")))
             for s in seg.SegmentSequence}
    assert kinds["lung left"] == ("MANUAL", "")
    assert kinds["ground-glass opacity"] == ("AUTOMATIC", "dcn")
    assert kinds["consolidation"] == ("SEMIAUTOMATIC", "dcn")
    with pytest.raises(ValueError, match="label map is empty"):
        write_dicom_seg(tmp_path / "empty.dcm", np.zeros_like(labels), LabelTable.default(), sources, reference=vol)

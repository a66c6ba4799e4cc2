"""Loading DICOM series: ordering, rescale, geometry corrections and every bad input."""

from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from tests.dicom_factory import axial_positions, planes_datasets, truth, write_planes
from viewer.core.errors import LoadCancelled, LoadError
from viewer.core.volume import Volume
from viewer.dicom.load import load_series
from viewer.dicom.scan import scan
from viewer.dicom.write import save_datasets, write_ct_series
from viewer.io.volumes import open_volume


def test_regular_series_matches_truth_and_simpleitk(tmp_path):
    write_planes(tmp_path, axial_positions(12))
    vol = open_volume(tmp_path)
    assert vol.shape == (12, 40, 48)
    assert vol.spacing == pytest.approx((2.0, 1.5, 1.25))
    assert vol.origin == pytest.approx((-30.0, -25.0, -40.0))
    assert vol.array.dtype == np.int16
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5
    assert vol.warnings == ()

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(ref), vol.array)
    assert ref.GetSpacing() == pytest.approx(vol.to_sitk().GetSpacing())
    assert ref.GetOrigin() == pytest.approx(vol.to_sitk().GetOrigin())
    assert ref.GetDirection() == pytest.approx(vol.to_sitk().GetDirection())


def test_order_comes_from_positions_not_names_or_instance_numbers(tmp_path):
    datasets = planes_datasets(axial_positions(10))
    numbers = list(range(1, 11))
    random.Random(3).shuffle(numbers)
    for ds, n in zip(datasets, numbers):
        ds.InstanceNumber = n  # wrong on purpose
    names = [f"slice_{n:02d}.dcm" for n in numbers]
    order = list(range(10))
    random.Random(5).shuffle(order)
    save_datasets([datasets[i] for i in order], tmp_path, names=[names[i] for i in order])
    vol = open_volume(tmp_path)
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5
    assert vol.origin[2] == pytest.approx(-40.0)


def test_feet_first_descending_positions_still_ascend_in_z(tmp_path):
    write_planes(tmp_path, [(-30, -25, 40 - 2.5 * k) for k in range(8)])
    vol = open_volume(tmp_path)
    assert vol.origin[2] == pytest.approx(40 - 2.5 * 7)
    assert vol.direction[:, 0] == pytest.approx([0, 0, 1])
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_sagittal_series_geometry(tmp_path):
    iop = (0, 1, 0, 0, 0, -1)
    write_planes(tmp_path, [(-20 + 3.0 * k, -30, 30) for k in range(9)], iop)
    vol = open_volume(tmp_path)
    assert vol.shape == (9, 40, 48)
    # normal = row x column = -x: the array's z runs right-handed toward patient right
    assert vol.direction[:, 0] == pytest.approx([-1, 0, 0])
    assert vol.origin[0] == pytest.approx(-20 + 3.0 * 8)
    assert vol.direction[:, 2] == pytest.approx([0, 1, 0])  # columns run posterior
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_rescale_slope_intercept_per_slice(tmp_path):
    datasets = planes_datasets(axial_positions(4))
    for k, ds in enumerate(datasets):
        stored = np.frombuffer(ds.PixelData, np.uint16).astype(np.float64) - 1024  # HU
        intercept = -1000 - 10 * k
        ds.RescaleIntercept = str(intercept)
        ds.RescaleSlope = "0.5"
        ds.PixelData = np.rint((stored - intercept) / 0.5).astype(np.uint16).tobytes()
        ds.BitsStored = 16
        ds.HighBit = 15
    save_datasets(datasets, tmp_path)
    vol = open_volume(tmp_path)
    assert vol.array.dtype in (np.int16, np.float32)
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_signed_pixels_with_12_bits_stored_are_sign_extended(tmp_path):
    datasets = planes_datasets(axial_positions(3))
    for ds in datasets:
        hu = np.frombuffer(ds.PixelData, np.uint16).astype(np.int32) - 1024
        stored = (hu.astype(np.int16).view(np.uint16) & 0x0FFF) | 0xA000  # garbage in the unused bits
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.PixelRepresentation = 1
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.RescaleIntercept = "0"
    save_datasets(datasets, tmp_path)
    vol = open_volume(tmp_path)
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_missing_slice_is_detected_and_filled(tmp_path):
    positions = axial_positions(12)
    del positions[5]
    write_planes(tmp_path, positions)
    vol = open_volume(tmp_path)
    assert vol.shape[0] == 12
    assert vol.spacing[0] == pytest.approx(2.0)
    assert any("1 slice(s) missing" in w for w in vol.warnings)
    assert np.max(np.abs(vol.array[np.arange(12) != 5] - truth(vol)[np.arange(12) != 5])) <= 0.5
    # the filled slice is the mean of its neighbours
    expected = (vol.array[4].astype(float) + vol.array[6]) / 2
    assert np.max(np.abs(vol.array[5] - expected)) <= 0.5


def test_variable_spacing_is_resampled_in_patient_space(tmp_path):
    z = np.concatenate([np.arange(0, 20, 2.0), 20 + np.arange(1, 8) * 5.0])
    write_planes(tmp_path, [(-30, -25, zz) for zz in z])
    vol = open_volume(tmp_path)
    assert any("not uniform" in w for w in vol.warnings)
    assert vol.spacing[0] == pytest.approx(2.0)
    assert vol.shape[0] == int((z[-1] - z[0]) // 2.0) + 1  # never extrapolates past the last slice
    # linear interpolation of a smooth field: a few HU at most
    assert np.mean(np.abs(vol.array - truth(vol))) < 6
    ref = sitk.ImageSeriesReader()
    ref.SetFileNames(ref.GetGDCMSeriesFileNames(str(tmp_path)))
    naive = ref.Execute()  # one mean spacing: wrong positions for most slices
    naive_vol = Volume(sitk.GetArrayFromImage(naive).astype(np.float32), tuple(reversed(naive.GetSpacing())),
                       naive.GetOrigin())
    assert np.mean(np.abs(naive_vol.array - truth(naive_vol))) > 3 * np.mean(np.abs(vol.array - truth(vol)))


def test_gantry_tilt_is_resampled_to_an_orthogonal_grid(tmp_path):
    tilt = np.radians(15.0)
    iop = (1, 0, 0, 0, np.cos(tilt), -np.sin(tilt))
    positions = [(-30, -25, -20 + 3.0 * k) for k in range(14)]  # table moves along z: sheared stack
    datasets = planes_datasets(positions, iop)
    for ds in datasets:
        ds.GantryDetectorTilt = "15"
    save_datasets(datasets, tmp_path)
    vol = open_volume(tmp_path)
    assert any("gantry tilt" in w and "resampled" in w for w in vol.warnings)
    assert np.allclose(vol.direction.T @ vol.direction, np.eye(3), atol=1e-6)
    inside = vol.array > -1023  # voxels within the acquired slab
    err = np.abs(vol.array - truth(vol))[inside]
    assert inside.sum() > 0.5 * vol.array.size
    assert np.mean(err) < 6
    ref = sitk.ImageSeriesReader()
    ref.SetFileNames(ref.GetGDCMSeriesFileNames(str(tmp_path)))
    naive = ref.Execute()
    d = np.asarray(naive.GetDirection()).reshape(3, 3)[:, ::-1]
    if np.linalg.det(d) != 0 and np.allclose(d.T @ d, np.eye(3), atol=1e-4):
        naive_vol = Volume(sitk.GetArrayFromImage(naive).astype(np.float32), tuple(reversed(naive.GetSpacing())),
                           naive.GetOrigin(), d)
        assert np.mean(np.abs(naive_vol.array - truth(naive_vol))) > 3 * np.mean(err)


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless, JPEGLSLossless,
                                    JPEG2000Lossless, "1.2.840.10008.1.2.1.99"])
def test_transfer_syntaxes_decode_identically(tmp_path, syntax):
    datasets = planes_datasets(axial_positions(3), rows=64, cols=64)
    if syntax == ExplicitVRBigEndian:
        for ds in datasets:
            ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
    save_datasets(datasets, tmp_path, transfer_syntax=syntax)
    vol = open_volume(tmp_path)
    assert pydicom.dcmread(next(tmp_path.iterdir())).file_meta.TransferSyntaxUID == syntax
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_multiframe_enhanced_ct_matches_single_frame_series(tmp_path):
    hd = pytest.importorskip("highdicom")
    single = tmp_path / "single"
    datasets = planes_datasets(axial_positions(6))
    save_datasets(datasets, single)
    legacy = [pydicom.dcmread(p) for p in sorted(single.iterdir())]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=legacy, series_instance_uid=hd.UID(), series_number=9, sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    multi = tmp_path / "multi"
    multi.mkdir()
    mf.save_as(multi / "enhanced.dcm")
    ref = open_volume(single)
    vol = open_volume(multi)
    assert scan(multi).series[0].is_multiframe
    assert vol.shape == ref.shape
    assert np.array_equal(vol.array, ref.array)
    assert np.allclose(vol.affine, ref.affine, atol=1e-4)


def test_two_series_in_one_folder_need_a_choice(tmp_path):
    write_planes(tmp_path / "a", axial_positions(5), uid_seed="one", series_number=1)
    write_planes(tmp_path / "b", axial_positions(7, dz=3.0), uid_seed="two", series_number=2)
    result = scan(tmp_path)
    assert sorted(s.n_slices for s in result.series) == [5, 7]
    with pytest.raises(LoadError, match="2 series found"):
        open_volume(tmp_path)
    seven = next(s for s in result.series if s.n_slices == 7)
    vol = open_volume(tmp_path, series=seven.id)
    assert vol.shape[0] == 7
    assert open_volume(tmp_path, series="2").shape[0] == 7  # by SeriesNumber


def test_inconsistent_sizes_split_the_series(tmp_path):
    write_planes(tmp_path, axial_positions(5), uid_seed="same")
    write_planes(tmp_path, axial_positions(3, z0=100), uid_seed="same", rows=32, cols=32,
                 names=[f"small{i}.dcm" for i in range(3)])
    result = scan(tmp_path)
    assert len(result.series) == 2
    assert {s.size for s in result.series} == {(40, 48), (32, 32)}
    assert all("different geometry" in " ".join(s.warnings) for s in result.series)


def test_junk_files_are_skipped_with_reasons(tmp_path):
    write_planes(tmp_path, axial_positions(4))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "noise.bin").write_bytes(os.urandom(5000))
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    result = scan(tmp_path)
    assert len(result.series) == 1 and result.series[0].n_slices == 4
    reasons = {os.path.basename(p): r for p, r in result.skipped}
    assert set(reasons) == {"notes.txt", "empty.dcm", "noise.bin", ".DS_Store"}
    assert all("DICOM" in r for r in reasons.values())
    assert open_volume(tmp_path).shape[0] == 4


def test_truncated_file_is_reported_by_name(tmp_path):
    paths = write_planes(tmp_path, axial_positions(5))
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 1000])
    result = scan(tmp_path)
    skipped = dict(result.skipped)
    assert "truncated" in skipped[str(paths[2])]
    vol = open_volume(tmp_path)  # the gap is then reported as a missing slice
    assert any("missing" in w for w in vol.warnings)

    paths[3].write_bytes(paths[3].read_bytes()[:300])  # cut inside the header
    assert "truncated" in dict(scan(tmp_path).skipped)[str(paths[3])]


def test_pixel_data_cut_after_scan_fails_with_file_name(tmp_path):
    paths = write_planes(tmp_path, axial_positions(4))
    entry = scan(tmp_path).series[0]
    paths[1].write_bytes(paths[1].read_bytes()[:-500])
    with pytest.raises(LoadError, match=paths[1].name):
        load_series(entry)


def test_file_without_pixel_data_is_skipped(tmp_path):
    datasets = planes_datasets(axial_positions(3))
    del datasets[1].PixelData
    save_datasets(datasets, tmp_path)
    result = scan(tmp_path)
    assert any("no pixel data" in r for _, r in result.skipped)
    assert result.series[0].n_slices == 2


def test_empty_folder_and_folder_without_dicom(tmp_path):
    with pytest.raises(LoadError, match="empty"):
        open_volume(tmp_path)
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(LoadError, match="no DICOM image series.*a.txt"):
        open_volume(tmp_path)
    with pytest.raises(LoadError, match="no such file"):
        open_volume(tmp_path / "nope")


def test_non_ct_modality_is_refused_unless_allowed(tmp_path):
    datasets = planes_datasets(axial_positions(3))
    for ds in datasets:
        ds.Modality = "MR"
    save_datasets(datasets, tmp_path)
    assert "not CT" in " ".join(scan(tmp_path).series[0].warnings)
    with pytest.raises(LoadError, match="modality is MR"):
        open_volume(tmp_path)
    assert open_volume(tmp_path, allow_non_ct=True).shape[0] == 3


def test_undecodable_compression_names_file_and_syntax(tmp_path):
    datasets = planes_datasets(axial_positions(2), rows=64, cols=64)
    paths = save_datasets(datasets, tmp_path, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(paths[0])
    frame = bytearray(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1).__next__())
    frame[20:] = os.urandom(len(frame) - 20)
    ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    ds.save_as(paths[0], enforce_file_format=True)
    with pytest.raises(LoadError) as info:
        open_volume(tmp_path)
    assert paths[0].name in str(info.value) and "JPEG 2000" in str(info.value)


def test_private_tag_with_wrong_length_is_harmless(tmp_path):
    datasets = planes_datasets(axial_positions(3))
    for ds in datasets:
        ds.add_new(0x01F10010, "LO", "ACME")
        ds.add_new(0x01F11026, "UN", b"\x01\x02\x03")  # 3 bytes where a 2- or 4-byte VR belongs
    save_datasets(datasets, tmp_path)
    vol = open_volume(tmp_path)
    assert np.max(np.abs(vol.array - truth(vol))) <= 0.5


def test_progress_and_cancel(tmp_path):
    write_planes(tmp_path, axial_positions(20))
    seen = []
    open_volume(tmp_path, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(LoadCancelled):
        open_volume(tmp_path, cancel=lambda: True)


def test_volume_written_as_series_loads_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 2000, size=(7, 33, 29)).astype(np.int16)
    direction = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    vol = Volume(array, spacing=(3.0, 0.7, 0.9), origin=(10.0, -20.0, 30.0), direction=direction)
    write_ct_series(vol, tmp_path / "s", uid_seed="x")
    back = open_volume(tmp_path / "s")
    assert np.array_equal(back.array, array)
    assert np.allclose(back.affine, vol.affine, atol=1e-5)


def test_localizer_is_listed_separately(tmp_path):
    write_planes(tmp_path, axial_positions(6), uid_seed="s")
    loc = planes_datasets([(0, -100, -100)], (0, 1, 0, 0, 0, -1), uid_seed="s")
    loc[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    save_datasets(loc, tmp_path, names=["scout.dcm"])
    result = scan(tmp_path)
    assert len(result.series) == 2
    assert open_volume(tmp_path).shape[0] == 6  # the cross-sectional stack is chosen


def test_copy_of_same_file_is_reported_as_duplicate(tmp_path):
    paths = write_planes(tmp_path, axial_positions(5))
    shutil.copy(paths[2], tmp_path / "copy.dcm")
    vol = open_volume(tmp_path)
    assert vol.shape[0] == 5
    assert any("repeats the position" in w for w in vol.warnings)


def test_jpeg_lossless_series_loads_voxel_identical_by_gdcm_and_by_pydicom(tmp_path, monkeypatch):
    """JPEG Lossless (process 14 SV1, as CT archives and CDs often hold) is decoded by GDCM first; the voxels
    equal the uncompressed series' and pydicom's decode of the same files."""
    from viewer.dicom import pixels
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    ph = make_phantom(PhantomConfig(shape=(6, 48, 48), spacing=(5.0, 4.0, 4.0), seed=1))
    write_ct_series(ph.volume, tmp_path / "raw", uid_seed="raw")
    (tmp_path / "jpeg").mkdir()
    for f in sorted((tmp_path / "raw").iterdir()):
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.KeepOriginalImageUIDOn()
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG")  # GDCM's JPEG is lossless process 14 SV1
        writer.SetFileName(str(tmp_path / "jpeg" / f.name))
        writer.Execute(sitk.ReadImage(str(f)))
    assert pydicom.dcmread(tmp_path / "jpeg" / "IM00001.dcm").file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    raw = open_volume(tmp_path / "raw")
    calls: list[str] = []
    real = pixels.read_with_gdcm
    monkeypatch.setattr(pixels, "read_with_gdcm", lambda h, tried="": calls.append(h.path) or real(h, tried))
    by_gdcm = open_volume(tmp_path / "jpeg")
    assert len(calls) == 6 and np.array_equal(by_gdcm.array, raw.array) and np.allclose(by_gdcm.affine, raw.affine)
    monkeypatch.setattr(pixels, "GDCM_FIRST", frozenset())
    by_pydicom = open_volume(tmp_path / "jpeg")
    assert len(calls) == 6 and np.array_equal(by_pydicom.array, by_gdcm.array)

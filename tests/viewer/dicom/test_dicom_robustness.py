"""One bad file never aborts a folder: malformed headers, deflate bombs, FIFOs, absurd geometry, wrong pixels.

Every input here is written by the test (pydicom through tests/dicom_factory.py and viewer/phantom.py), and
ends with a seeded fuzz run over mutants of a phantom series (tests/benchmarks/fuzz_loader.py at scale).
"""

from __future__ import annotations

import os
import socket
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from app.cli import main
from tests.dicom_factory import axial_positions, planes_datasets, write_deflated, write_planes
from viewer.core.errors import LoadError
from viewer.dicom import header as dicom_header
from viewer.dicom.header import read_header
from viewer.dicom.load import load_series
from viewer.dicom.pixels import read_native_into, read_stored_frames
from viewer.dicom.scan import SeriesEntry, metadata_from_header, scan
from viewer.dicom.write import save_datasets
from viewer.io.volumes import open_volume, read_volume_file

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def good_series(folder: Path, n: int = 6) -> list[Path]:
    """A clean 32x32 CT series of `n` slices, 2 mm apart."""
    return write_planes(folder, axial_positions(n), rows=32, cols=32, uid_seed="good")


def bad_file(folder: Path, mutate, *, name: str = "bad.dcm", transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """One slice of another series, changed by `mutate(ds)` before saving."""
    ds = planes_datasets([(0.0, 0.0, 100.0)], rows=32, cols=32, uid_seed="bad")[0]
    mutate(ds)
    return save_datasets([ds], folder, names=[name], transfer_syntax=transfer_syntax)[0]


def set_text(keyword: str, value: str):
    """Set a numeric-string attribute to any text (written as LO: pydicom's IS/DS would refuse "1e999")."""
    return lambda ds: ds.add_new(keyword, "LO", value)


def flip_meta_vr(path: Path) -> None:
    """Flip one bit of the VR of the first file meta element ('UI' -> 'TI'): pydicom raises NotImplementedError."""
    data = bytearray(path.read_bytes())
    at = data.index(b"UI", 132)
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def assert_good_series_with_skipped(folder: Path, bad: Path, reason: str, capsys) -> None:
    """scan, open_volume, `info` and `convert` all succeed on the good series and name the bad file."""
    result = scan(folder)
    assert [s.n_slices for s in result.series] == [6]
    skipped = dict(result.skipped)
    assert str(bad) in skipped and reason.lower() in skipped[str(bad)].lower(), result.skipped
    vol = open_volume(folder)
    assert vol.shape == (6, 32, 32)
    assert any(str(bad) in w and "skipped" in w for w in vol.warnings)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert str(bad) in out and reason.lower() in out.lower()
    assert main(["convert", str(folder), str(folder.parent / "ct.nii.gz"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert str(bad) in err and reason.lower() in err.lower()
    assert read_volume_file(folder.parent / "ct.nii.gz").shape == (6, 32, 32)


# -- 4: a malformed header skips that file only ---------------------------------------------------


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian], ids=["fast-path", "pydicom"])
@pytest.mark.parametrize("mutate, reason", [
    (set_text("NumberOfFrames", "inf"), "NumberOfFrames 'inf'"),
    (set_text("NumberOfFrames", "1e999"), "NumberOfFrames '1e999'"),
    (lambda ds: setattr(ds, "Rows", [32, 32]), "Rows"),
    (set_text("PixelSpacing", "nan\\1"), "PixelSpacing nan"),
    (set_text("SliceThickness", "inf"), "SliceThickness 'inf'"),
    (set_text("ImagePositionPatient", "0\\nan\\100"), "ImagePositionPatient 0\\nan"),
    (set_text("ImageOrientationPatient", "1\\0\\0\\0\\inf\\0"), "ImageOrientationPatient"),
    (set_text("RescaleSlope", "nan"), "RescaleSlope 'nan'"),
    (set_text("RescaleIntercept", "-inf"), "RescaleIntercept '-inf'"),
], ids=["frames-inf", "frames-1e999", "rows-vm2", "spacing-nan", "thickness-inf", "position-nan",
        "orientation-inf", "slope-nan", "intercept-inf"])
def test_a_malformed_header_skips_that_file_only(tmp_path, capsys, syntax, mutate, reason):
    folder = tmp_path / "study"
    good_series(folder)
    bad = bad_file(folder, mutate, transfer_syntax=syntax)
    assert_good_series_with_skipped(folder, bad, reason, capsys)


def test_a_bit_flip_in_a_file_meta_vr_skips_that_file(tmp_path, capsys):
    folder = tmp_path / "study"
    good_series(folder)
    bad = bad_file(folder, lambda ds: None, transfer_syntax=ExplicitVRBigEndian)
    flip_meta_vr(bad)
    assert_good_series_with_skipped(folder, bad, "Unknown Value Representation", capsys)


def test_series_number_1e999_does_not_stop_the_scan(tmp_path, capsys):
    paths = good_series(tmp_path)
    ds = pydicom.dcmread(paths[0])
    ds.add_new("SeriesNumber", "LO", "1e999")
    ds.save_as(paths[0])
    assert scan(tmp_path).series[0].metadata.series_number == "1e999"
    assert open_volume(tmp_path).shape == (6, 32, 32)
    assert main(["info", str(tmp_path)]) == 0


def test_screen_screens_the_good_series_and_reports_the_bad_file(tmp_path):
    import dataclasses

    import torch

    from app.services.batch_screening import screen
    from inference.inferers.slice import SliceClassifier
    from inference.models._api import get_model
    from inference.models.light_squeezenet import light_squeezenet
    from viewer.dicom.write import write_ct_series
    from viewer.synthetic.phantom import PhantomConfig, make_phantom

    torch.manual_seed(0)
    base = get_model("light-squeezenet")
    spec = dataclasses.replace(base, weights=None, transforms=dataclasses.replace(base.transforms, resize=76, crop=64))
    classifier = SliceClassifier(spec, device="cpu", module=light_squeezenet())
    ph = make_phantom(PhantomConfig(shape=(12, 64, 64), spacing=(8.0, 5.0, 5.0), n_ggo=1, n_consolidation=0,
                                    seed=5))
    folder = tmp_path / "study"
    write_ct_series(ph.volume, folder, uid_seed="good")
    bad_frames = bad_file(folder, set_text("NumberOfFrames", "1e999"), name="frames.dcm")
    bad_flip = bad_file(folder, lambda ds: None, name="flip.dcm", transfer_syntax=ExplicitVRBigEndian)
    flip_meta_vr(bad_flip)
    (folder / "notes.txt").write_text("not an image")  # expected in a folder: not an error
    rows, errors = screen([str(folder)], tmp_path / "out", classifier=classifier, log=lambda _m: None)
    assert len(rows) == 1 and rows[0]["slices"] > 0
    reported = {e["source"]: e["error"] for e in errors}
    assert set(reported) == {str(bad_frames), str(bad_flip)}
    assert "NumberOfFrames" in reported[str(bad_frames)]


# -- 5: deflate bomb ------------------------------------------------------------------------------


def test_a_deflate_bomb_is_refused_with_bounded_memory(tmp_path, capsys):
    folder = tmp_path / "study"
    good_series(folder)
    ds = planes_datasets([(0.0, 0.0, 100.0)], rows=32, cols=32, uid_seed="bad")[0]
    bomb = write_deflated(folder / "bomb.dcm", ds, pixel_bytes=256 << 20)  # 2 KiB declared, 256 MiB inflated
    assert bomb.stat().st_size < 400_000
    tracemalloc.start()
    try:
        result = scan(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"scanning a deflate bomb took {peak / 2**20:.0f} MiB"
    reason = dict(result.skipped)[str(bomb)]
    assert "deflate bomb" in reason and "2,048 bytes of pixel data declared" in reason
    assert_good_series_with_skipped(folder, bomb, "deflate bomb", capsys)
    with pytest.raises(LoadError, match="deflate bomb"):
        open_volume(bomb)


def test_the_absolute_inflation_bound_holds_before_the_image_size_is_known(tmp_path, monkeypatch):
    ds = planes_datasets([(0.0, 0.0, 0.0)], rows=32, cols=32)[0]
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "OB", bytes(24 << 20))  # 24 MiB of zeros before Rows/Columns
    path = write_deflated(tmp_path / "bomb.dcm", ds)
    monkeypatch.setattr(dicom_header, "MAX_INFLATED_BYTES", 8 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(dicom_header.NotDicomError, match="more than 8,388,608 bytes.*no image size seen"):
            read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20


def test_deflated_pixels_are_read_with_the_same_bound(tmp_path, monkeypatch):
    """A deflated file that grows after the scan is refused when its pixels are read, too."""
    ds = planes_datasets([(0.0, 0.0, 0.0)], rows=32, cols=32)[0]
    path = write_deflated(tmp_path / "one.dcm", ds)
    h = read_header(path)
    assert read_stored_frames(h).shape == (1, 32, 32)
    write_deflated(path, ds, pixel_bytes=64 << 20)
    monkeypatch.setattr(dicom_header, "INFLATE_MARGIN_BYTES", 1 << 20)
    with pytest.raises(LoadError, match=f"{path}.*deflate bomb"):
        read_stored_frames(h)


# -- 6: only regular files are opened -------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fifos_and_sockets_are_skipped_never_opened(tmp_path, capsys):
    folder = tmp_path / "study"
    good_series(folder)
    fifo = folder / "pipe.dcm"
    os.mkfifo(fifo)
    sock_path = folder / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    (folder / "dangling.dcm").symlink_to(folder / "nowhere.dcm")
    try:
        result = scan(folder)
        skipped = dict(result.skipped)
        assert "named pipe (FIFO)" in skipped[str(fifo)] and "not opened" in skipped[str(fifo)]
        assert "socket" in skipped[str(sock_path)]
        assert "broken link" in skipped[str(folder / "dangling.dcm")]
        assert_good_series_with_skipped(folder, fifo, "named pipe", capsys)
        with pytest.raises(LoadError, match="named pipe"):
            open_volume(fifo)
        with pytest.raises(dicom_header.NotDicomError, match="named pipe"):
            read_header(fifo)  # a FIFO handed straight to the header reader is not opened either
    finally:
        sock.close()


# -- 7: absurd geometry is refused before allocating -------------------------------------------


def test_a_65535_square_header_is_refused_before_allocating(tmp_path, capsys):
    folder = tmp_path / "study"
    good_series(folder)

    def huge(ds):
        ds.Rows = ds.Columns = 65535

    bad = bad_file(folder, huge, name="huge.dcm")
    tracemalloc.start()
    try:
        assert_good_series_with_skipped(folder, bad, "65535x65535", capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 20
    with pytest.raises(LoadError, match=r"huge.dcm.*65535x65535"):
        open_volume(bad)


def test_a_slice_a_kilometre_away_is_refused_not_resampled(tmp_path):
    paths = good_series(tmp_path)
    ds = pydicom.dcmread(paths[3])
    ds.ImagePositionPatient = [-30.0, -25.0, 1e6]
    ds.save_as(paths[3])
    tracemalloc.start()
    try:
        with pytest.raises(LoadError, match=r"more than 4000 slices.*IM00004.dcm \(-30, -25, 1e\+06\)"):
            open_volume(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_non_finite_geometry_of_a_whole_series_names_file_and_value(tmp_path):
    paths = good_series(tmp_path, n=3)
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.add_new("PixelSpacing", "LO", "inf\\inf")
        ds.save_as(p)
    with pytest.raises(LoadError, match=r"PixelSpacing inf\\inf is not finite.*IM0000"):
        open_volume(tmp_path)


def test_load_series_refuses_non_finite_values_in_headers_it_is_given(tmp_path):
    """Headers that did not come through scan() (a caller's own entry) are checked when loaded."""
    paths = good_series(tmp_path, n=3)
    headers = [read_header(p) for p in paths]
    headers[1].rescale_slope = "inf"
    entry = SeriesEntry("x", headers, metadata_from_header(headers[0]))
    with pytest.raises(LoadError, match=f"{paths[1]}: RescaleSlope 'inf'"):
        load_series(entry)
    headers[1].rescale_slope = "1"
    headers[2].image_position = (0.0, float("nan"), 0.0)
    with pytest.raises(LoadError, match="IM00003.dcm is not finite"):
        load_series(entry)


# -- 8: silent wrong pixels --------------------------------------------------------------------


def test_rows_smaller_than_the_pixel_data_is_refused(tmp_path, capsys):
    folder = tmp_path / "study"
    good_series(folder)
    bad = bad_file(folder, lambda ds: setattr(ds, "Rows", 7), name="rows7.dcm")
    assert_good_series_with_skipped(folder, bad, "does not match the pixel data", capsys)
    h = read_header(bad)
    with pytest.raises(LoadError, match="rows7.dcm.*does not match"):
        read_native_into(h, np.empty((1, 7, 32), np.uint16))


def test_decoded_values_far_outside_bits_stored_are_refused(tmp_path):
    """A JPEG 2000 stream that decodes to 16-bit values in a 12-bit image: corrupt, not HU."""
    datasets = planes_datasets(axial_positions(3), rows=32, cols=32)
    ds = datasets[1]
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = np.full((32, 32), 60000, np.uint16).tobytes()
    paths = save_datasets(datasets, tmp_path, transfer_syntax=JPEG2000Lossless)
    ds = pydicom.dcmread(paths[1])
    ds.BitsStored, ds.HighBit = 12, 11
    ds.save_as(paths[1])
    with pytest.raises(LoadError, match=r"IM00002.dcm: decoded values 60000\.\.60000 lie far outside the 0\.\.4095"):
        open_volume(tmp_path)


@pytest.mark.timeout(60)
def test_a_broken_pixel_data_element_is_refused_without_handing_it_to_gdcm(tmp_path):
    """Found by the fuzzer: GDCM spends 25 s and 4 GB on this file before failing. When pydicom cannot even
    read the Pixel Data element, no decoder can help."""
    paths = save_datasets(planes_datasets(axial_positions(3), rows=32, cols=32), tmp_path, transfer_syntax=RLELossless)
    data = bytearray(paths[1].read_bytes())
    at = data.rindex(b"\xe0\x7f\x10\x00OB")  # the Pixel Data element: its VR becomes 'O\xff', reserved 0xffff
    data[at + 5 : at + 8] = b"\xff\xff\xff"
    paths[1].write_bytes(bytes(data))
    t0 = time.perf_counter()
    with pytest.raises(LoadError, match="IM00002.dcm: unreadable pixel data element: Unknown Value Repr"):
        open_volume(tmp_path)
    assert time.perf_counter() - t0 < 10


# -- 9: every skipped file or folder is reported, by every command ------------------------------


def test_an_unreadable_subfolder_is_reported_by_info_and_convert(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "study"
    good_series(folder / "a")
    locked = folder / "b"
    locked.mkdir()
    (locked / "x.dcm").write_bytes(b"")
    truncated = folder / "a" / "IM00007.dcm"
    data = good_series(tmp_path / "more", n=7)[6].read_bytes()
    truncated.write_bytes(data[:-100])
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads any folder: refuse this one the way the kernel would
        deny_scandir(monkeypatch, locked)
    try:
        result = scan(folder)
        assert dict(result.skipped)[str(locked)] == "cannot read folder: Permission denied"
        assert main(["info", str(folder)]) == 0
        out = capsys.readouterr().out
        assert "2 skipped" in out and str(locked) in out and "truncated" in out
        assert main(["convert", str(folder), str(tmp_path / "ct.nii.gz"), "--quiet"]) == 0
        err = capsys.readouterr().err
        assert f"skipped: {locked}: cannot read folder: Permission denied" in err
        assert f"skipped: {truncated}: truncated file" in err
    finally:
        locked.chmod(0o755)


def deny_scandir(monkeypatch, folder: Path) -> None:
    """os.scandir refuses `folder` with EACCES, as the kernel does for a user without read permission."""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_root_folder_is_a_load_error(tmp_path, monkeypatch):
    deny_scandir(monkeypatch, tmp_path)
    with pytest.raises(LoadError, match="cannot read folder: Permission denied"):
        open_volume(tmp_path)


# -- fuzz ------------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_fuzzed_phantom_files_load_or_fail_clearly(tmp_path):
    """240 seeded mutants (bit flips, truncation, splices, hostile tag values, wrong transfer syntaxes) of a
    phantom series in six transfer syntaxes and as Enhanced CT: each loads or gives a LoadError naming it."""
    from tests.benchmarks.fuzz_loader import generate, make_bases, run_in_process

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bases = make_bases(tmp_path / "bases")
        (tmp_path / "cases").mkdir()
        counts, failures = run_in_process(generate(bases, 240, seed=2024), tmp_path / "cases")
    assert sum(counts.values()) == 240
    assert not failures, "\n\n".join(f"{o}: case {c.index} ({c.base.name}, {c.kind}):\n{d}"
                                     for c, o, d in failures[:5])
    assert counts["loaded"] > 30 and counts["clear error"] > 30  # the mutants reach both outcomes

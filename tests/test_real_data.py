"""Checks against the real series in ../shared/data, where a developer has them.

Skipped on a fresh clone without that folder; the rest of the suite makes its own data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from viewer.dicom.load import load_series
from viewer.dicom.scan import scan, scan_files
from viewer.io.volumes import open_volume

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "chest-ct-4dct-phase00").is_dir(), reason="no ../shared/data here")


def sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkInt16)
    return reader.Execute()


@pytest.mark.parametrize("sub", ["chest-ct-4dct-phase00", "lung-pet-ct-dx-A0002/series3_B40f",
                                 "dicom-edge-cases/jpeg2000-lossless-series"])
def test_regular_real_series_agree_with_simpleitk(sub):
    vol = open_volume(DATA / sub)
    ref = sitk_read(DATA / sub)
    assert np.array_equal(vol.array, sitk.GetArrayFromImage(ref))
    img = vol.to_sitk()
    assert img.GetSpacing() == pytest.approx(ref.GetSpacing(), abs=1e-4)
    assert img.GetOrigin() == pytest.approx(ref.GetOrigin(), abs=1e-3)
    assert img.GetDirection() == pytest.approx(ref.GetDirection(), abs=1e-5)


def test_gantry_tilt_and_variable_spacing_are_corrected():
    vol = open_volume(DATA / "dicom-edge-cases/gantry-tilt-variable-spacing-ge-head")
    assert any("not uniform" in w for w in vol.warnings)
    assert any("tilt" in w and "18.5 deg" in w for w in vol.warnings)
    # every original slice centre row maps onto the resampled grid at the same HU
    entry = scan(DATA / "dicom-edge-cases/gantry-tilt-variable-spacing-ge-head").series[0]
    h = entry.headers[0]
    from viewer.dicom.pixels import read_stored_frames

    original = read_stored_frames(h)[0] * h.slope + h.intercept
    iop = np.asarray(h.image_orientation)
    ipp = np.asarray(h.image_position)
    r, c = 256, np.arange(100, 400)
    pts = ipp + r * h.pixel_spacing[0] * iop[3:] + c[:, None] * h.pixel_spacing[1] * iop[:3]
    idx = np.rint(vol.lps_to_index(pts)).astype(int)
    ok = np.all((idx >= 0) & (idx < vol.shape), axis=1)
    got = vol.array[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
    assert ok.mean() > 0.9
    assert np.median(np.abs(got - original[r, c][ok])) < 5


def test_every_transfer_syntax_decodes():
    folder = DATA / "dicom-edge-cases/transfer-syntaxes-single-slice"
    ref = None
    for path in sorted(folder.glob("CTImage.dcm*")):
        vol = load_series(scan_files([str(path)]).series[0])
        if ref is None:
            ref = vol.array.astype(float)
        lossy = any(s in path.name for s in (".4.50", ".4.51", ".4.53", ".4.55", ".4.81", ".4.91"))
        err = np.abs(vol.array - ref).max()
        assert err <= (70 if lossy else 0), path.name


def test_enhanced_multiframe_and_reformats():
    vol = open_volume(DATA / "dicom-edge-cases/enhanced-ct-multiframe")
    assert vol.shape[0] == 2
    result = scan(DATA / "dicom-edge-cases/non-axial-reformats-covid19-ny-sbu")
    assert {s.orientation for s in result.series} == {"axial", "coronal", "sagittal"}
    for s in result.series:
        v = load_series(s)
        assert v.array.shape[1:] == (512, 512)

"""DICOM SR measurement reports (TID 1500): written over a CT series, read back; bad input refused."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from viewer.core.errors import LoadError
from viewer.dicom.write import write_ct_series
from viewer.io.measurement_sr import MeasurementRecord, read_measurement_sr, write_measurement_sr
from viewer.synthetic.phantom import PhantomConfig, make_phantom


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sr") / "ct"
    write_ct_series(make_phantom(PhantomConfig(shape=(4, 16, 16), spacing=(5.0, 2.0, 2.0), seed=1)).volume, folder,
                    uid_seed="sr")
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def test_round_trip_and_references(tmp_path, sources):
    ellipse = np.array([[0, 0, 5], [20, 0, 5], [10, -4, 5], [10, 4, 5]], float)
    records = [MeasurementRecord("nodule", "ruler", np.array([[1, 2, 5], [4, 6, 5]], float), {"length_mm": 5.0}),
               MeasurementRecord("ROI", "ellipse", ellipse, {"mean_hu": -800.0, "sd_hu": 20.0, "area_mm2": 125.7,
                                                             "nan": float("nan")})]
    path = write_measurement_sr(tmp_path / "sr.dcm", records, sources)
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    back = read_measurement_sr(path)
    assert [(r.name, r.kind) for r in back] == [("nodule", "ruler"), ("ROI", "ellipse")]
    np.testing.assert_allclose(back[1].points_lps, ellipse)
    assert back[1].values == {"mean_hu": -800.0, "sd_hu": 20.0, "area_mm2": 125.7}


def test_bad_input_is_refused(tmp_path, sources):
    with pytest.raises(ValueError, match="no measurements"):
        write_measurement_sr(tmp_path / "a.dcm", [], sources)
    with pytest.raises(ValueError, match="needs the CT images"):
        write_measurement_sr(tmp_path / "a.dcm", [MeasurementRecord("r", "ruler", np.zeros((2, 3)))], [])
    with pytest.raises(ValueError, match="a ruler needs 2 points"):
        write_measurement_sr(tmp_path / "a.dcm", [MeasurementRecord("r", "ruler", np.zeros((3, 3)))], sources)
    with pytest.raises(ValueError, match="unknown measurement kind"):
        write_measurement_sr(tmp_path / "a.dcm", [MeasurementRecord("r", "arrow", np.zeros((2, 3)))], sources)
    assert not (tmp_path / "a.dcm").exists()
    (tmp_path / "junk.dcm").write_bytes(b"junk")
    with pytest.raises(LoadError, match="junk.dcm: not a readable DICOM SR"):
        read_measurement_sr(tmp_path / "junk.dcm")


def test_a_long_short_axis_read_back_can_be_written_again(tmp_path, sources):
    lps = np.array([[0.0, 0.0, 10.0], [40.0, 0.0, 10.0], [20.0, 8.0, 10.0], [20.0, -8.0, 10.0]])
    rec = MeasurementRecord("mass", "axes", lps, {"long_mm": 40.0, "short_mm": 16.0})
    back = read_measurement_sr(write_measurement_sr(tmp_path / "a.dcm", [rec], sources))
    assert back[0].kind == "axes" and back[0].points_lps.shape == (2, 3)
    again = read_measurement_sr(write_measurement_sr(tmp_path / "b.dcm", back, sources))
    assert again[0].values == pytest.approx({"long_mm": 40.0, "short_mm": 16.0})

"""Corner text: what each corner says, and that a missing tag leaves no trace."""

from __future__ import annotations

import dataclasses

from viewer.core.corner_text import CORNERS, ViewFacts, corner_text, dicom_date, dicom_time, patient_age
from viewer.core.volume import SeriesMetadata
from viewer.core.windowing import Window

FULL = SeriesMetadata(patient_name="DOE JANE", patient_id="12345", patient_sex="F", patient_age="045Y",
                      study_date="20200305", study_time="145500.699", study_description="CT THORAX",
                      series_number="4", series_description="ThorRoutine 2.0 D40s", kvp="110", exposure_mas="111",
                      slice_thickness="2.00")
VIEW = ViewFacts("axial", 74, 148, -198.12, Window(-600, 1500), 2.18)


def test_every_corner_holds_its_tags():
    text = corner_text(FULL, VIEW)
    assert text["top_left"] == ["DOE JANE", "ID 12345", "F / 45 y"]
    assert text["top_right"] == ["2020-03-05  14:55", "CT THORAX", "Se 4: ThorRoutine 2.0 D40s"]
    assert text["bottom_left"] == ["axial 75/148", "-198.1 mm  thk 2 mm"]
    assert text["bottom_right"] == ["110 kVp  111 mAs", "W 1500  L -600", "zoom 2.18 px/mm"]


def test_missing_tags_leave_no_none_and_no_empty_line():
    text = corner_text(SeriesMetadata(series_description="scan.nii.gz"), dataclasses.replace(VIEW, px_per_mm=None))
    assert set(text) == set(CORNERS)
    assert text["top_left"] == [] and text["top_right"] == ["scan.nii.gz"]
    assert text["bottom_left"] == ["axial 75/148", "-198.1 mm"] and text["bottom_right"] == ["W 1500  L -600"]
    assert all(line and "None" not in line for lines in text.values() for line in lines)
    partial = corner_text(SeriesMetadata(patient_sex="M", kvp="120"), VIEW)
    assert partial["top_left"] == ["M"] and partial["bottom_right"][0] == "120 kVp"


def test_age_dates_and_times():
    assert patient_age(SeriesMetadata(patient_age="006M")) == "6 m"
    assert patient_age(SeriesMetadata(patient_birth_date="19800306", study_date="20200305")) == "39 y"
    assert patient_age(SeriesMetadata(patient_birth_date="1980", study_date="20200305")) == ""
    assert dicom_date("20200305") == "2020-03-05" and dicom_date(" 2020.03.05 ") == "2020.03.05"
    assert dicom_time("0930") == "09:30" and dicom_time("") == ""

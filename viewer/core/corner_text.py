"""The patient, study and acquisition text in the four corners of a slice view, as PACS viewers show it.

`corner_text` composes the lines from a series' metadata and the view's state; the GUI only places them.
A tag the series lacks leaves its line (or its part of a line) out: never "None" or an empty label.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from viewer.core.volume import SeriesMetadata
from viewer.core.windowing import Window

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


@dataclass(frozen=True)
class ViewFacts:
    """What the view knows: its plane, the slice shown (0-based) of how many, the slice position along the
    plane's normal in mm (LPS), the display window and the zoom (screen pixels per mm)."""

    plane: str
    index: int
    count: int
    position_mm: float | None
    window: Window
    px_per_mm: float | None = None
    slab: str = ""  # e.g. "MIP 10 mm" while a thick slab is shown
    oblique: bool = False  # a turned plane: no slice number, no position along an axis


def dicom_date(value: str) -> str:
    """YYYYMMDD as YYYY-MM-DD; anything else as given (stripped)."""
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return v


def dicom_time(value: str) -> str:
    """HHMMSS[.frac] as HH:MM; anything else as given."""
    v = value.strip()
    if len(v) >= 4 and v[:4].isdigit():
        return f"{v[:2]}:{v[2:4]}"
    return v


def patient_age(md: SeriesMetadata) -> str:
    """PatientAge as DICOM gives it (045Y -> 45 y), else computed from the birth and study dates, else ""."""
    age = md.patient_age.strip()
    if len(age) == 4 and age[:3].isdigit() and age[3] in "DWMY":
        return f"{int(age[:3])} {age[3].lower()}"
    try:
        born, seen = md.patient_birth_date.strip(), md.study_date.strip()
        b = date(int(born[:4]), int(born[4:6]), int(born[6:8]))
        s = date(int(seen[:4]), int(seen[4:6]), int(seen[6:8]))
    except (ValueError, IndexError):
        return ""
    years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
    return f"{years} y" if 0 <= years < 150 else ""


def _number(value: str, unit: str) -> str:
    """A DICOM decimal string with its unit (`120` -> `120 kVp`), trailing zeros dropped; "" when empty."""
    v = value.strip()
    if not v:
        return ""
    try:
        return f"{float(v):g} {unit}"
    except ValueError:
        return f"{v} {unit}"


def _join(*parts: str, sep: str = "  ") -> str:
    return sep.join(p for p in parts if p)


def corner_text(md: SeriesMetadata, view: ViewFacts) -> dict[str, list[str]]:
    """The lines of each corner (`CORNERS`): patient top left, study and series top right, slice bottom
    left, display and acquisition bottom right."""
    sex_age = _join(md.patient_sex.strip(), patient_age(md), sep=" / ")
    study_when = _join(dicom_date(md.study_date), dicom_time(md.study_time))
    series = _join(f"Se {md.series_number.strip()}" if md.series_number.strip() else "", md.series_description.strip(),
                   sep=": ")
    where = f"{view.position_mm:.1f} mm" if view.position_mm is not None else ""
    thickness = _number(md.slice_thickness, "mm")
    slice_line = _join(where, f"thk {thickness}" if thickness else "")
    zoom = f"zoom {view.px_per_mm:.2f} px/mm" if view.px_per_mm else ""
    lines = {
        "top_left": [md.patient_name.strip(), f"ID {md.patient_id.strip()}" if md.patient_id.strip() else "", sex_age],
        "top_right": [study_when, md.study_description.strip(), series],
        "bottom_left": [f"{view.plane} oblique" if view.oblique else f"{view.plane} {view.index + 1}/{view.count}",
                        slice_line, view.slab],
        "bottom_right": [_join(_number(md.kvp, "kVp"), _number(md.exposure_mas, "mAs")),
                         f"W {view.window.width:.0f}  L {view.window.center:.0f}", zoom],
    }
    return {corner: [line for line in lines[corner] if line] for corner in CORNERS}

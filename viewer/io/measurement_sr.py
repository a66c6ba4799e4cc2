"""Measurements as a DICOM SR measurement report (TID 1500, Comprehensive 3D SR, highdicom), which 3D Slicer
and OHIF read.

Each measurement is a planar ROI group ("Planar ROI measurements and qualitative evaluations") with a 3D
region in the CT's frame of reference (SCOORD3D, LPS mm): a ruler is a POLYLINE of its two ends with its Length
(mm); an ellipse is an ELLIPSE of its major and minor axis end points with its Area (mm²), Mean and Standard
Deviation (HU); an angle is a POLYLINE of its first end, vertex and second end with its Angle (degrees); a long
and short axis cross is a POLYLINE of its long axis with its Long axis and Short axis lengths (mm) (the short
axis' ends are not kept: TID 1500 gives a group one region). The group's tracking identifier is the
measurement's name. The CT images are the evidence.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from viewer.core.errors import LoadError
from viewer.core.version import lunglens_version
from viewer.io.atomic_files import atomic_write

KINDS = ("ruler", "ellipse", "angle", "axes")
POINTS = {"ruler": (2,), "ellipse": (4,), "angle": (3,), "axes": (4, 2)}  # an "axes" read back holds its long axis
HU = hd.sr.CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
#: measurement value key -> (concept, unit)
_CONCEPTS = {
    "length_mm": (codes.SCT.Length, codes.UCUM.Millimeter),
    "area_mm2": (codes.SCT.Area, codes.UCUM.SquareMillimeter),
    "mean_hu": (codes.SCT.Mean, HU),
    "sd_hu": (codes.SCT.StandardDeviation, HU),
    "angle_deg": (codes.SCT.Angle, codes.UCUM.Degree),
    "long_mm": (codes.SCT.LongAxis, codes.UCUM.Millimeter),
    "short_mm": (codes.SCT.ShortAxis, codes.UCUM.Millimeter),
}


@dataclass
class MeasurementRecord:
    """A measurement as plain data: its name, kind (`KINDS`), points in LPS mm (a ruler's two ends; an ellipse's
    major then minor axis end points; an angle's end, vertex, end; a cross's long then short axis ends) and values
    (keys of `_CONCEPTS`)."""

    name: str
    kind: str
    points_lps: np.ndarray
    values: dict[str, float] = field(default_factory=dict)


def write_measurement_sr(path: str | Path, records: Sequence[MeasurementRecord], sources: Sequence[Dataset], *,
                         series_number: int = 901) -> Path:
    """Write `records` as a TID 1500 measurement report over the CT images `sources` (headers suffice).

    Raises:
        ValueError: no measurement, no source image, an unknown kind or the wrong number of points.
    """
    if not records:
        raise ValueError("no measurements to write")
    if not sources:
        raise ValueError("a DICOM SR needs the CT images it measures; none given")
    frame = str(sources[0].FrameOfReferenceUID)
    groups = []
    for rec in records:
        pts = np.asarray(rec.points_lps, float)
        if rec.kind not in KINDS:
            raise ValueError(f"unknown measurement kind {rec.kind!r}; expected one of {KINDS}")
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) not in POINTS[rec.kind]:
            need = " or ".join(str(n) for n in POINTS[rec.kind])
            raise ValueError(f"a {rec.kind} needs {need} points in LPS mm, got {pts.shape}")
        if rec.kind == "axes":
            pts = pts[:2]
        graphic = (hd.sr.GraphicTypeValues3D.ELLIPSE if rec.kind == "ellipse"
                   else hd.sr.GraphicTypeValues3D.POLYLINE)
        region = hd.sr.ImageRegion3D(graphic_type=graphic, graphic_data=pts, frame_of_reference_uid=frame)
        measurements = [hd.sr.Measurement(name=_CONCEPTS[k][0], value=float(v), unit=_CONCEPTS[k][1])
                        for k, v in rec.values.items() if k in _CONCEPTS and np.isfinite(v)]
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=rec.name[:64] or rec.kind),
            referenced_region=region, finding_type=codes.SCT.Tissue, measurements=measurements))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="LungLens", manufacturer_name="LungLens", model_name=f"LungLens {lunglens_version()}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns about patient names it finds odd: kept as they are
        sr = hd.sr.Comprehensive3DSR(
            evidence=list(sources), content=report, series_number=series_number, series_instance_uid=hd.UID(),
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LungLens",
            series_description="LungLens measurements")
    path = Path(path)
    atomic_write(path, lambda tmp: sr.save_as(tmp, enforce_file_format=True), suffix=".dcm")
    return path


def read_measurement_sr(path: str | Path) -> list[MeasurementRecord]:
    """The planar ROI measurements of a TID 1500 SR (as `write_measurement_sr` writes them, or another tool's
    with 3D regions).

    Raises:
        LoadError: not a readable measurement report (the message names the file).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sr = hd.sr.srread(str(path))
        groups = sr.content.get_planar_roi_measurement_groups()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - pydicom and highdicom raise many kinds on a bad file
        raise LoadError(f"{path}: not a readable DICOM SR measurement report ({type(exc).__name__}: "
                        f"{str(exc)[:200]})") from None
    names = {concept.value: key for key, (concept, _) in _CONCEPTS.items()}
    out = []
    for g in groups:
        roi = g.roi
        if roi is None:
            continue
        values = {names[m.name.value]: float(m.value) for m in g.get_measurements() if m.name.value in names}
        points = np.asarray(roi.value, float).reshape(-1, 3)
        if roi.GraphicType == "ELLIPSE":
            kind = "ellipse"
        elif roi.GraphicType == "POLYLINE":
            kind = ("axes" if "long_mm" in values else "angle" if "angle_deg" in values and len(points) == 3
                    else "ruler" if len(points) == 2 else "")
        else:
            kind = ""
        if not kind:
            continue  # another tool's shape this reader does not know
        out.append(MeasurementRecord(str(g.tracking_identifier), kind, points, values))
    return out

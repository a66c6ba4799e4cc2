"""Label maps as DICOM Segmentation objects (highdicom), referencing their CT series.

Writing makes a BINARY segmentation (read by 3D Slicer, OHIF and most PACS viewers) with one segment per label
value present in the map (empty labels are not written: several viewers refuse segments without frames).
Segments are numbered 1..n in order of label value; each carries the LungLens value in its Segment Description
("LungLens label value N"), its name as the Segment Label, and its colour as the recommended display CIELab
value.

Segmented property codes (category / type), chosen from the label name:

=====================================  ========================================  =================================
name contains                          category                                  type
=====================================  ========================================  =================================
"ground" or "ggo"                      SCT 49755003 Morphologically Abnormal...  DCM 112120 Ground glass opacity
"consolidation"                        SCT 49755003                              SCT 95436008 Lung consolidation
"nodule"                               SCT 49755003                              SCT 27925004 Nodule
"lesion"                               SCT 49755003                              SCT 52988006 Lesion
"lung" and "left" / "right" / neither  SCT 91723000 Anatomical Structure         SCT 44029006 Left lung /
                                                                                 3341006 Right lung / 39607008 Lung
anything else                          SCT 85756007 Tissue                       SCT 85756007 Tissue
=====================================  ========================================  =================================

The algorithm type is MANUAL, unless the caller says a label came from an algorithm (`algorithms`): AUTOMATIC
when nobody changed it, SEMIAUTOMATIC when a person edited it, with the algorithm's name and version. Source
images without Patient Name and the like (anonymized series) get empty values in the SEG; highdicom's warnings
about such values are not passed on.

Reading maps each frame to a CT slice by its Image Position (Patient) on the reference grid, or, without
one, by its referenced source SOP Instance UID. Where segments overlap the higher segment number wins.
SEG frames must lie on the CT's own grid (same orientation, pixel spacing and size); nothing is resampled.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import iter_pixels
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from viewer.core.errors import LoadError
from viewer.core.version import lunglens_version
from viewer.core.volume import Volume
from viewer.dicom.scan import SeriesEntry, scan
from viewer.io.atomic_files import atomic_write
from viewer.io.nifti_labels import check_label_array, fallback_color, present_values, table_for_values
from viewer.io.volumes import choose_series
from viewer.labels.table import MAX_LABEL, LabelInfo, LabelTable

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
_VALUE_NOTE = "LungLens label value {}"
_VALUE_RE = re.compile(r"LungLens label value (\d+)")

_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
_ANATOMY = codes.SCT.AnatomicalStructure  # SCT 91723000
_TISSUE = codes.SCT.Tissue  # SCT 85756007
_LEFT_LUNG = Code("44029006", "SCT", "Left lung")
_RIGHT_LUNG = Code("3341006", "SCT", "Right lung")
_CONSOLIDATION = Code("95436008", "SCT", "Lung consolidation")


def segment_codes(name: str) -> tuple[Code, Code]:
    """(segmented property category, type) for a label name; see the module docstring."""
    n = name.lower()
    if "ground" in n or "ggo" in n:
        return _ABNORMAL, codes.DCM.GroundGlassOpacity
    if "consolidation" in n:
        return _ABNORMAL, _CONSOLIDATION
    if "nodule" in n:
        return _ABNORMAL, codes.SCT.Nodule
    if "lesion" in n:
        return _ABNORMAL, codes.SCT.Lesion
    if "lung" in n:
        if "left" in n:
            return _ANATOMY, _LEFT_LUNG
        if "right" in n:
            return _ANATOMY, _RIGHT_LUNG
        return _ANATOMY, codes.SCT.Lung
    return _TISSUE, _TISSUE


# -- writing ------------------------------------------------------------------------------


def write_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    table: LabelTable,
    source_datasets: Sequence[Dataset],
    *,
    reference: Volume | None = None,
    series_description: str = "LungLens segmentation",
    series_number: int = 300,
    algorithms: dict[int, tuple[str, str, str]] | None = None,
) -> Path:
    """Write `labels` as a BINARY DICOM SEG over the CT images `source_datasets` (one per slice, in z order).

    Args:
        path: output file (written atomically).
        labels: uint8 (z, y, x) label map on the CT grid.
        table: names and colours; every row becomes a segment.
        source_datasets: the CT series' datasets (pixel data not needed), ordered like the Volume's z axis.
        reference: the loaded CT; when given, each dataset's position must be that of its slice.
        algorithms: label value -> (algorithm type "AUTOMATIC" or "SEMIAUTOMATIC", algorithm name, version) for
            labels an algorithm made; the others are MANUAL.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if reference is not None and labels.shape != reference.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the CT {reference.shape}")
    _check_sources(source_datasets, labels.shape, reference)
    data = check_label_array(labels, labels.shape)
    present = present_values(data)
    table = table_for_values(table, present)
    values = [v for v in table.values() if v in set(present)]
    if not values:
        raise ValueError("nothing to write: the label map is empty (a DICOM SEG holds no empty segments)")
    lut = np.zeros(MAX_LABEL + 1, np.uint8)
    lut[values] = np.arange(1, len(values) + 1)
    descriptions = []
    for number, value in enumerate(values, 1):
        info = table[value]
        category, kind = segment_codes(info.name)
        algorithm_type, algorithm = hd.seg.SegmentAlgorithmTypeValues.MANUAL, None
        if algorithms and value in algorithms:
            kind_name, name, version = algorithms[value]
            algorithm_type = hd.seg.SegmentAlgorithmTypeValues[kind_name]
            algorithm = hd.AlgorithmIdentificationSequence(name=name[:64], version=version[:64] or "unknown",
                                                           family=codes.cid7162.ArtificialIntelligence)
        desc = hd.seg.SegmentDescription(
            segment_number=number, segment_label=info.name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=algorithm_type, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*info.color),
        )
        desc.SegmentDescription = _VALUE_NOTE.format(value)
        descriptions.append(desc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom warns about empty or unusual patient values: kept as they are
        seg = hd.seg.Segmentation(
            source_images=_with_patient_attributes(source_datasets), pixel_array=lut[data],
            segmentation_type="BINARY", segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1, manufacturer="LungLens",
            manufacturer_model_name="LungLens", software_versions=lunglens_version(), device_serial_number="0",
            series_description=series_description, content_label="LUNGLENS",
            content_description="Label map edited in LungLens",
        )
    atomic_write(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True), suffix=".dcm")
    return path


#: patient and study attributes highdicom copies from the source images; an anonymized series may lack them
_COPIED_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_patient_attributes(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The source images, each missing patient/study attribute present and empty (on copies: the caller's
    datasets stay as they are); highdicom needs them all."""
    out = []
    for ds in datasets:
        missing = [k for k in _COPIED_TYPE2 if k not in ds]
        if missing:
            ds = copy.deepcopy(ds)  # a shallow copy would share its elements with the caller's
            for keyword in missing:
                setattr(ds, keyword, "")
        out.append(ds)
    return out


def _check_sources(datasets: Sequence[Dataset], shape: tuple[int, ...], reference: Volume | None) -> None:
    if len(shape) != 3:
        raise ValueError(f"a label map is 3D, got shape {shape}")
    if not datasets:
        raise ValueError("a DICOM SEG needs the CT series it was drawn on; no source images given")
    if len(datasets) != shape[0]:
        raise ValueError(f"{len(datasets)} source images for a label map of {shape[0]} slices")
    for ds in datasets:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise ValueError("multi-frame source images are not supported for DICOM SEG; use NIfTI")
        if (int(ds.Rows), int(ds.Columns)) != tuple(shape[1:]):
            raise ValueError(f"source image {ds.SOPInstanceUID} is {ds.Rows}x{ds.Columns}, "
                             f"the label map {shape[1]}x{shape[2]}")
    for keyword in ("FrameOfReferenceUID", "SeriesInstanceUID", "StudyInstanceUID"):
        found = {str(ds.get(keyword, "")) for ds in datasets}
        if len(found) > 1:
            raise ValueError(f"the source images are not one series: {len(found)} different {keyword}s")
    if reference is not None:
        slice_index(datasets, reference)  # raises unless the i-th image is the i-th slice
        if [slice_index([ds], reference)[0] for ds in datasets] != list(range(len(datasets))):
            raise ValueError("the source images are not in the order of the CT's slices")


def slice_index(datasets: Sequence[Dataset], reference: Volume) -> list[int]:
    """The z index on `reference` of each single-frame image; ValueError if one is not a slice of it."""
    row, col = reference.direction[:, 2], reference.direction[:, 1]
    out = []
    for ds in datasets:
        iop = np.asarray(ds.get("ImageOrientationPatient") or [], dtype=float)
        ipp = ds.get("ImagePositionPatient")
        if iop.shape != (6,) or ipp is None or len(ipp) != 3:
            raise ValueError(f"source image {ds.get('SOPInstanceUID', '?')} has no position or orientation")
        if not (np.allclose(iop[:3], row, atol=1e-3) and np.allclose(iop[3:], col, atol=1e-3)):
            raise ValueError(f"source image {ds.SOPInstanceUID}: orientation {iop.tolist()} differs from the CT's")
        k, j, i = reference.lps_to_index(np.asarray(ipp, dtype=float))
        if abs(k - round(k)) > 0.01 or abs(j) > 0.01 or abs(i) > 0.01 or not 0 <= round(k) < reference.shape[0]:
            raise ValueError(f"source image {ds.SOPInstanceUID} at {list(map(float, ipp))} is not a slice of the "
                             "CT grid (was the series resampled on loading?)")
        out.append(int(round(k)))
    return out


def load_source_datasets(
    source: str | Path | SeriesEntry, reference: Volume, *, series: str | None = None
) -> list[Dataset]:
    """The CT images (headers only) of a DICOM series, ordered like `reference`'s z axis.

    Args:
        source: the DICOM folder or file the CT was loaded from, or its SeriesEntry from a scan.
        reference: the loaded CT.
        series: series id when the folder holds several (default: the reference's SeriesInstanceUID).
    """
    if isinstance(source, SeriesEntry):
        entry = source
    else:
        try:
            result = scan(source)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        try:
            uid = reference.metadata.series_instance_uid
            if series is None and uid and any(s.id == uid for s in result.series):
                series = uid
            entry = choose_series(result, series)
        except LoadError as exc:
            raise ValueError(str(exc)) from None
    if entry.is_multiframe:
        raise ValueError(f"{entry.first.path}: multi-frame CT; DICOM SEG is written for single-frame series only")
    datasets = []
    for h in entry.headers:
        try:
            datasets.append(pydicom.dcmread(h.path, stop_before_pixels=True))
        except (OSError, InvalidDicomError) as exc:
            raise ValueError(f"{h.path}: cannot read: {exc}") from None
    ks = slice_index(datasets, reference)
    by_k: dict[int, Dataset] = {}
    for k, ds in zip(ks, datasets):
        by_k.setdefault(k, ds)  # repeated positions: the loader keeps the first file too
    missing = [k for k in range(reference.shape[0]) if k not in by_k]
    if missing:
        raise ValueError(f"{entry.id}: no image for {len(missing)} of the CT's {reference.shape[0]} slices "
                         f"(e.g. slice {missing[0]}); the CT was resampled or comes from another series")
    return [by_k[k] for k in range(reference.shape[0])]


# -- reading ------------------------------------------------------------------------------


def read_dicom_seg(
    path: str | Path, reference: Volume, source_datasets: Sequence[Dataset] | None = None, *,
    allow_other_series: bool = False,
) -> tuple[np.ndarray, LabelTable]:
    """A DICOM SEG as a uint8 label map on `reference`'s grid, with its label table.

    Args:
        path: the SEG file.
        reference: the CT it was drawn on.
        source_datasets: that CT's images in z order; used for frames without a position, and to check
            the frame of reference.
        allow_other_series: accept a SEG that references another series of the same frame of reference
            (refused by default, as a NIfTI whose sidecar names another series is).
    """
    path = Path(path)
    ds = _read(path)
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if (rows, cols) != tuple(reference.shape[1:]):
        raise ValueError(f"{path}: frames are {rows}x{cols}, the CT slices {reference.shape[1]}x{reference.shape[2]}")
    _check_frame_of_reference(path, ds, reference, source_datasets)
    if not allow_other_series:
        _check_referenced_series(path, ds, reference, source_datasets)
    table, rank_of, lut, value_of_rank = _segments(path, ds)
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    uid_to_k = {str(s.SOPInstanceUID): k for k, s in enumerate(source_datasets or [])}
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    _check_plane_geometry(path, shared, reference)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != n_frames:
        raise ValueError(f"{path}: {len(per_frame)} per-frame functional groups for {n_frames} frames")
    # winner holds the segment rank per voxel, so the higher segment number wins wherever they overlap
    winner = np.zeros(reference.shape, np.uint8)
    max_fraction = float(ds.get("MaximumFractionalValue", 1) or 1)
    for i, frame in enumerate(_frames(path, ds, n_frames, rows, cols)):
        group = per_frame[i]
        _check_plane_geometry(path, group, reference)
        k = _frame_slice(path, i, group, shared, reference, uid_to_k)
        if seg_type == "LABELMAP":
            ranks = lut[np.clip(frame, 0, len(lut) - 1)]
        else:
            ident = _item(group, "SegmentIdentificationSequence", shared)
            if ident is None or "ReferencedSegmentNumber" not in ident:
                raise ValueError(f"{path}: frame {i + 1} does not say which segment it shows")
            number = int(ident.ReferencedSegmentNumber)
            if number not in rank_of:
                raise ValueError(f"{path}: frame {i + 1} refers to segment {number}, which is not described")
            on = frame > max_fraction / 2 if seg_type == "FRACTIONAL" else frame > 0
            ranks = np.where(on, np.uint8(rank_of[number]), np.uint8(0))
        np.maximum(winner[k], ranks, out=winner[k])
    return value_of_rank[winner], table


def _frames(path: Path, ds: Dataset, n_frames: int, rows: int, cols: int) -> Iterator[np.ndarray]:
    """Decode one frame at a time (a whole SEG of a large CT may not fit in memory unpacked)."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if int(ds.get("BitsAllocated", 8)) != 1 or syntax is None or syntax.is_compressed:
        try:
            yield from iter_pixels(ds)
        except (AttributeError, NotImplementedError, RuntimeError, ValueError) as exc:
            raise ValueError(f"{path}: cannot decode the segmentation frames: {exc}") from None
        return
    # bit-packed native data; frames follow each other bit by bit, not byte-aligned (pydicom's
    # iter_pixels mis-reads frames whose size is not a multiple of 8 pixels)
    data = ds.PixelData
    n = rows * cols
    if len(data) * 8 < n * n_frames:
        raise ValueError(f"{path}: the pixel data holds {len(data) * 8} bits; {n_frames} frames of {rows}x{cols} "
                         f"need {n * n_frames}")
    buf = np.frombuffer(data, np.uint8)
    for i in range(n_frames):
        start, stop = i * n, (i + 1) * n
        bits = np.unpackbits(buf[start // 8 : (stop + 7) // 8], bitorder="little")
        yield bits[start % 8 : start % 8 + n].reshape(rows, cols)


def _read(path: Path) -> Dataset:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except (OSError, InvalidDicomError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as DICOM: {exc}") from None
    sop = str(ds.get("SOPClassUID", ""))
    if sop not in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE):
        raise ValueError(f"{path}: not a DICOM Segmentation (SOP class {sop or 'missing'})")
    if "PixelData" not in ds:
        raise ValueError(f"{path}: the segmentation has no pixel data")
    return ds


def _check_frame_of_reference(path: Path, ds: Dataset, reference: Volume,
                              source_datasets: Sequence[Dataset] | None) -> None:
    seg_for = str(ds.get("FrameOfReferenceUID", ""))
    known = {reference.metadata.frame_of_reference_uid}
    known |= {str(s.get("FrameOfReferenceUID", "")) for s in source_datasets or []}
    known.discard("")
    if seg_for and known and seg_for not in known:
        raise ValueError(f"{path}: frame of reference {seg_for} is not the CT's ({', '.join(sorted(known))})")


def _check_referenced_series(path: Path, ds: Dataset, reference: Volume,
                             source_datasets: Sequence[Dataset] | None) -> None:
    theirs = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence") or []}
    theirs.discard("")
    ours = {reference.metadata.series_instance_uid or ""}
    ours |= {str(s.get("SeriesInstanceUID", "")) for s in source_datasets or []}
    ours.discard("")
    if theirs and ours and not theirs & ours:
        raise ValueError(f"{path}: drawn on series {', '.join(sorted(theirs))}, not on this CT "
                         f"({', '.join(sorted(ours))}); the frame of reference is the same, so it can be read "
                         "with --allow-other-series if that is intended")


def _segments(path: Path, ds: Dataset) -> tuple[LabelTable, dict[int, int], np.ndarray, np.ndarray]:
    """The label table, segment number -> rank (1..n in number order), LUTs pixel value -> rank -> label value."""
    items = list(ds.get("SegmentSequence") or [])
    if str(ds.get("SegmentationType", "")).upper() == "LABELMAP":
        items = [s for s in items if int(s.get("SegmentNumber", -1)) != 0]  # pixel value 0: the background
    if not items:
        raise ValueError(f"{path}: the segmentation describes no segments")
    numbers = sorted(int(s.SegmentNumber) for s in items)
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{path}: segment numbers repeat")
    if len(numbers) > MAX_LABEL:
        raise ValueError(f"{path}: {len(numbers)} segments; a LungLens label map holds at most {MAX_LABEL}")
    by_number = {int(s.SegmentNumber): s for s in items}
    rank_of = {n: r for r, n in enumerate(numbers, 1)}
    values = _segment_values(by_number, numbers)
    table = LabelTable()
    used: set[str] = set()
    for n in numbers:
        item, value = by_number[n], values[n]
        name = str(item.get("SegmentLabel", "") or "").strip() or f"segment {n}"
        base, copy = name, 2
        while name.lower() in used:
            name, copy = f"{base} ({copy})", copy + 1
        used.add(name.lower())
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None and len(lab) == 3:
            r, g, b = hd.color.CIELabColor.from_dicom_value(tuple(lab)).to_rgb()
            color = (int(r), int(g), int(b))
        else:
            color = fallback_color(value)
        table.add(LabelInfo(value, name, color))
    lut = np.zeros(max(numbers) + 1, np.uint8)
    value_of_rank = np.zeros(len(numbers) + 1, np.uint8)
    for n, r in rank_of.items():
        lut[n] = r
        value_of_rank[r] = values[n]
    return table, rank_of, lut, value_of_rank


def _segment_values(by_number: dict[int, Dataset], numbers: list[int]) -> dict[int, int]:
    """LungLens label value of each segment: from our Segment Description note, else the segment number."""
    noted = {}
    for n in numbers:
        m = _VALUE_RE.fullmatch(str(by_number[n].get("SegmentDescription", "")).strip())
        if m and 1 <= int(m.group(1)) <= MAX_LABEL:
            noted[n] = int(m.group(1))
    if len(noted) == len(numbers) and len(set(noted.values())) == len(numbers):
        return noted
    if max(numbers) <= MAX_LABEL:
        return {n: n for n in numbers}
    return {n: r for r, n in enumerate(numbers, 1)}


def _item(group: Dataset | None, keyword: str, fallback: Dataset | None = None) -> Dataset | None:
    for g in (group, fallback):
        seq = g.get(keyword) if g is not None else None
        if seq:
            return seq[0]
    return None


def _check_plane_geometry(path: Path, group: Dataset | None, reference: Volume) -> None:
    orient = _item(group, "PlaneOrientationSequence")
    if orient is not None and "ImageOrientationPatient" in orient:
        iop = np.asarray(orient.ImageOrientationPatient, dtype=float)
        row, col = reference.direction[:, 2], reference.direction[:, 1]
        if iop.shape != (6,) or not (np.allclose(iop[:3], row, atol=1e-3) and np.allclose(iop[3:], col, atol=1e-3)):
            raise ValueError(f"{path}: frame orientation {iop.tolist()} is not the CT's; SEG frames are not resampled")
    measures = _item(group, "PixelMeasuresSequence")
    if measures is not None and "PixelSpacing" in measures:
        ps = np.asarray(measures.PixelSpacing, dtype=float)
        if not np.allclose(ps, reference.spacing[1:], rtol=1e-3, atol=1e-4):
            raise ValueError(f"{path}: pixel spacing {ps.tolist()} mm is not the CT's "
                             f"{list(reference.spacing[1:])} mm; SEG frames are not resampled")


def _frame_slice(path: Path, i: int, group: Dataset, shared: Dataset | None, reference: Volume,
                 uid_to_k: dict[str, int]) -> int:
    plane = _item(group, "PlanePositionSequence", shared)
    if plane is not None and "ImagePositionPatient" in plane:
        k, j, c = reference.lps_to_index(np.asarray(plane.ImagePositionPatient, dtype=float))
        if abs(k - round(k)) > 0.01 or abs(j) > 0.01 or abs(c) > 0.01 or not 0 <= round(k) < reference.shape[0]:
            raise ValueError(f"{path}: frame {i + 1} at {list(map(float, plane.ImagePositionPatient))} mm is not "
                             "a slice of the CT grid")
        return int(round(k))
    derivation = _item(group, "DerivationImageSequence")
    for src in (derivation.get("SourceImageSequence") or []) if derivation is not None else []:
        k = uid_to_k.get(str(src.get("ReferencedSOPInstanceUID", "")))
        if k is not None:
            return k
    raise ValueError(f"{path}: frame {i + 1} has no position and references none of the CT's images")

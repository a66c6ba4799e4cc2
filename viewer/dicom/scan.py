"""Series discovery: find every DICOM image series under a folder, from headers only."""

from __future__ import annotations

import os
import stat
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from viewer.core.progress import CancelFn, ProgressFn, check_cancel, report
from viewer.core.volume import SeriesMetadata
from viewer.dicom.header import DicomHeader, NotDicomError, header_problem, read_header, special_file_kind

#: SOP classes of multi-frame CT (Enhanced CT and Legacy Converted Enhanced CT)
ENHANCED_CT_CLASSES = {"1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}


@dataclass
class SeriesEntry:
    """One loadable stack of images: a series, or part of one split by geometry."""

    id: str
    headers: list[DicomHeader]
    metadata: SeriesMetadata
    warnings: list[str] = field(default_factory=list)

    @property
    def first(self) -> DicomHeader:
        return self.headers[0]

    @property
    def modality(self) -> str:
        return self.metadata.modality

    @property
    def description(self) -> str:
        return self.metadata.series_description

    @property
    def n_files(self) -> int:
        return len(self.headers)

    @property
    def n_slices(self) -> int:
        return sum(h.frames for h in self.headers)

    @property
    def size(self) -> tuple[int, int]:
        return self.first.rows, self.first.columns

    @property
    def is_multiframe(self) -> bool:
        return len(self.headers) == 1 and self.first.frames > 1

    @property
    def is_localizer(self) -> bool:
        return any("LOCALIZER" in t.upper() for t in self.first.image_type)

    @property
    def is_ct_stack(self) -> bool:
        """A cross-sectional CT series (or one without a modality): what LungLens opens and screens."""
        return self.modality in ("CT", "") and not self.is_localizer

    @property
    def pixel_spacing(self) -> tuple[float, float] | None:
        ps = self.first.pixel_spacing
        return (ps[0], ps[1]) if ps and len(ps) >= 2 else None

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between neighbouring slices along the normal (None if unknown)."""
        pos = [h.image_position for h in self.headers if h.image_position and len(h.image_position) == 3]
        iop = self.first.image_orientation
        if len(pos) < 2 or not iop or len(iop) != 6:
            try:
                return float(self.first.slice_thickness) if self.first.slice_thickness else None
            except ValueError:
                return None
        normal = np.cross(iop[:3], iop[3:])
        d = np.sort(np.asarray(pos) @ normal)
        gaps = np.diff(d)
        gaps = gaps[gaps > 1e-3]
        return float(np.median(gaps)) if len(gaps) else None

    @property
    def orientation(self) -> str:
        """axial / coronal / sagittal / oblique, from the slice normal."""
        iop = self.first.image_orientation
        if not iop or len(iop) != 6:
            return "multi-frame" if self.is_multiframe else "unknown"
        normal = np.abs(np.cross(iop[:3], iop[3:]))
        axis = int(np.argmax(normal))
        if normal[axis] < 0.95:
            return "oblique"
        return ("sagittal", "coronal", "axial")[axis]

    def summary(self) -> dict[str, object]:
        """One row of the series table."""
        ps = self.pixel_spacing
        sp = self.slice_spacing
        return {
            "id": self.id,
            "patient": self.metadata.patient_name,
            "study_date": self.metadata.study_date,
            "series_number": self.metadata.series_number,
            "description": self.description,
            "modality": self.modality,
            "orientation": self.orientation,
            "slices": self.n_slices,
            "files": self.n_files,
            "rows": self.size[0],
            "columns": self.size[1],
            "pixel_spacing_mm": [round(ps[0], 4), round(ps[1], 4)] if ps else None,
            "slice_spacing_mm": round(sp, 4) if sp else None,
            "transfer_syntax": self.first.transfer_syntax,
            "warnings": list(self.warnings),
            "folder": os.path.dirname(self.first.path),
        }


@dataclass
class ScanResult:
    """Every series found, and every file skipped with the reason."""

    root: str
    series: list[SeriesEntry]
    skipped: list[tuple[str, str]]
    n_files: int
    seconds: float

    def find(self, series_id: str) -> SeriesEntry:
        """The series whose id is `series_id`, or starts with it, or whose SeriesNumber equals it."""
        exact = [s for s in self.series if s.id == series_id]
        if exact:
            return exact[0]
        matches = [s for s in self.series if s.id.startswith(series_id)] or [
            s for s in self.series if s.metadata.series_number == series_id
        ]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(s.id for s in self.series) or "none"
        if not matches:
            raise KeyError(f"no series '{series_id}' in {self.root} (series found: {known})")
        raise KeyError(f"'{series_id}' matches {len(matches)} series in {self.root}: {known}")


#: reasons for skipping that are expected in a DICOM folder (not an image file): no need to alarm anyone
_EXPECTED_SKIPS = ("not a DICOM file", "DICOMDIR index file", "no pixel data")


def is_expected_skip(reason: str) -> bool:
    """True for a file skipped because it is not meant to be an image (a text file, a DICOMDIR, a report)."""
    return reason.startswith(_EXPECTED_SKIPS)


def skipped_lines(skipped: list[tuple[str, str]]) -> list[str]:
    """One line per reason: "skipped: <first path> [and N more]: <reason>"."""
    by_reason: dict[str, list[str]] = {}
    for p, reason in skipped:
        by_reason.setdefault(reason, []).append(p)
    return [f"skipped: {paths[0]}{f' and {len(paths) - 1} more' if len(paths) > 1 else ''}: {reason}"
            for reason, paths in by_reason.items()]


def list_files(root: str | Path) -> list[str]:
    """Every regular file under `root` (or `root` itself), sorted, hidden folders skipped."""
    return walk_files(root)[0]


def walk_files(root: str | Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every regular file under `root` (or `root` itself), sorted, hidden folders skipped; and every file
    or folder that is not read (FIFO, socket, device, unreadable folder, broken link) with the reason.

    Only DirEntry types are checked (no extra system call per file on Linux): a FIFO is never opened.
    """
    root = str(root)
    try:
        mode = os.stat(root).st_mode
    except OSError as exc:
        return [], [(root, f"cannot read: {exc.strerror or exc}")]
    if stat.S_ISREG(mode):
        return [root], []
    if not stat.S_ISDIR(mode):
        return [], [(root, f"{special_file_kind(mode)}, not a regular file: not opened")]
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder, f"cannot read folder: {exc.strerror or exc}"))
            continue
        subfolders = []
        for e in entries:
            try:
                if e.is_file():
                    files.append(e.path)
                elif e.is_dir():
                    if e.is_symlink():
                        skipped.append((e.path, "link to a folder: not followed"))
                    elif not e.name.startswith("."):
                        subfolders.append(e.path)
                else:
                    skipped.append((e.path, _special_reason(e)))
            except OSError as exc:
                skipped.append((e.path, f"cannot read: {exc.strerror or exc}"))
        folders.extend(reversed(subfolders))
    return files, skipped


def _special_reason(entry: os.DirEntry) -> str:
    try:
        mode = entry.stat().st_mode
    except OSError:
        return "broken link: not opened"
    return f"{special_file_kind(mode)}, not a regular file: not opened"


def scan(
    root: str | Path,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> ScanResult:
    """Find the DICOM series in a folder (recursively) or a single file, reading headers only."""
    t0 = time.perf_counter()
    if not os.path.exists(root):
        raise FileNotFoundError(f"{root}: no such file or folder")
    files, not_read = walk_files(root)
    result = scan_files(files, progress=progress, cancel=cancel)
    result.skipped[:0] = not_read
    result.root = str(root)
    result.seconds = time.perf_counter() - t0
    return result


def scan_files(
    files: Iterable[str],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> ScanResult:
    """Read the headers of `files` and group them into series."""
    t0 = time.perf_counter()
    files = list(files)
    headers: list[DicomHeader] = []
    skipped: list[tuple[str, str]] = []
    for i, path in enumerate(files):
        if i % 64 == 0:
            check_cancel(cancel)
            report(progress, i / max(1, len(files)), f"reading headers {i}/{len(files)}")
        try:
            h = read_header(path)
            problem = None
            if not h.has_pixel_data:
                problem = f"no pixel data (a non-image DICOM object, SOP class {h.sop_class_uid or '?'})"
            elif h.is_native and h.pixel_offset + h.pixel_length > h.file_size:
                problem = (f"truncated file: pixel data needs {h.pixel_offset + h.pixel_length} bytes, "
                           f"the file has {h.file_size}")
            else:
                problem = header_problem(h)
        except NotDicomError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - one malformed file must never stop a folder scan
            problem = f"unreadable DICOM header ({type(exc).__name__}: {str(exc)[:200]})"
        if problem:
            skipped.append((path, problem))
            continue
        headers.append(h)
    report(progress, 1.0, f"read {len(files)} headers")
    series = group_series(headers)
    return ScanResult(root="", series=series, skipped=skipped, n_files=len(files),
                      seconds=time.perf_counter() - t0)


def metadata_from_header(h: DicomHeader) -> SeriesMetadata:
    return SeriesMetadata(
        patient_name=h.patient_name.replace("^", " ").strip(),
        patient_id=h.patient_id,
        patient_birth_date=h.patient_birth_date,
        patient_sex=h.patient_sex,
        patient_age=h.patient_age,
        study_instance_uid=h.study_instance_uid,
        study_date=h.study_date,
        study_time=h.study_time,
        study_description=h.study_description,
        accession_number=h.accession_number,
        series_instance_uid=h.series_instance_uid,
        series_number=h.series_number,
        series_description=h.series_description,
        modality=h.modality,
        manufacturer=h.manufacturer,
        manufacturer_model=h.manufacturer_model,
        convolution_kernel=h.convolution_kernel,
        kvp=h.kvp,
        exposure_mas=h.exposure,
        slice_thickness=h.slice_thickness,
        body_part=h.body_part,
        frame_of_reference_uid=h.frame_of_reference_uid,
    )


def _geometry_key(h: DicomHeader) -> tuple:
    iop = tuple(round(v, 3) for v in h.image_orientation) if h.image_orientation else None
    ps = tuple(round(v, 4) for v in h.pixel_spacing) if h.pixel_spacing else None
    localizer = any("LOCALIZER" in t.upper() for t in h.image_type)
    return (h.rows, h.columns, iop, ps, localizer, h.bits_allocated, h.samples_per_pixel)


def group_series(headers: list[DicomHeader]) -> list[SeriesEntry]:
    """Group by study and series UID; split a series whose images differ in geometry."""
    by_series: dict[tuple[str, str], list[DicomHeader]] = defaultdict(list)
    for h in headers:
        by_series[(h.study_instance_uid, h.series_instance_uid)].append(h)
    entries: list[SeriesEntry] = []
    for (_study, uid), hs in by_series.items():
        stacks: dict[tuple, list[DicomHeader]] = defaultdict(list)
        multiframe: list[DicomHeader] = []
        for h in hs:
            if h.frames > 1 or h.sop_class_uid in ENHANCED_CT_CLASSES:
                multiframe.append(h)
            else:
                stacks[_geometry_key(h)].append(h)
        parts = [_split_repeats(v) for v in stacks.values()]
        groups = [g for p in parts for g in p] + [[h] for h in multiframe]
        groups.sort(key=lambda g: (-len(g), g[0].path))
        base = uid or "(no SeriesInstanceUID)"
        for n, group in enumerate(groups):
            group.sort(key=lambda h: h.path)
            sid = base if len(groups) == 1 else f"{base}#{n + 1}"
            entry = SeriesEntry(id=sid, headers=group, metadata=metadata_from_header(group[0]))
            if len(groups) > 1:
                entry.warnings.append(
                    f"series {base} holds {len(groups)} stacks of different geometry, size or acquisition; "
                    f"this is part {n + 1} ({len(group)} file(s))"
                )
            if not uid:
                entry.warnings.append("files have no SeriesInstanceUID; grouped together")
            _check_entry(entry)
            entries.append(entry)
    entries.sort(key=lambda e: (e.metadata.study_date, e.metadata.study_instance_uid,
                                _as_int(e.metadata.series_number), e.id))
    return entries


def _split_repeats(hs: list[DicomHeader]) -> list[list[DicomHeader]]:
    """Split a stack whose positions repeat by acquisition (e.g. several phases in one series)."""
    positions = [tuple(round(v, 2) for v in h.image_position) for h in hs if h.image_position]
    if len(set(positions)) == len(positions):
        return [hs]
    by_acq: dict[str, list[DicomHeader]] = defaultdict(list)
    for h in hs:
        by_acq[h.acquisition_number].append(h)
    if len(by_acq) > 1:
        return list(by_acq.values())
    return [hs]


def _check_entry(entry: SeriesEntry) -> None:
    h = entry.first
    if entry.modality and entry.modality != "CT":
        entry.warnings.append(f"modality is {entry.modality}, not CT: HU-based tools and AI do not apply")
    if entry.is_localizer:
        entry.warnings.append("localizer (scout) image(s), not a cross-sectional series")
    if h.samples_per_pixel not in (0, 1):
        entry.warnings.append(f"colour images ({h.photometric}): cannot be read as CT")
    if not entry.is_multiframe and any(x.image_position is None for x in entry.headers):
        entry.warnings.append("some files have no ImagePositionPatient: slice order falls back to InstanceNumber")
    if h.gantry_tilt:
        try:
            tilt = float(h.gantry_tilt)
        except ValueError:
            tilt = 0.0
        if abs(tilt) > 0.01:
            entry.warnings.append(f"gantry tilt of {tilt:g} deg recorded")
    positions = {tuple(round(v, 2) for v in x.image_position) for x in entry.headers if x.image_position}
    if not entry.is_multiframe and 1 <= len(positions) < sum(1 for x in entry.headers if x.image_position):
        entry.warnings.append(
            f"{entry.n_files} files at only {len(positions)} distinct position(s): repeated slices are dropped"
        )
    if entry.n_slices < 3 and not entry.is_multiframe:
        entry.warnings.append(f"only {entry.n_slices} slice(s)")


def _as_int(text: str) -> int:
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        return 1 << 30

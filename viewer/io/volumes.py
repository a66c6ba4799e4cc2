"""Open anything a user points at: a DICOM folder or file, NIfTI, NRRD or MetaImage.

`open_volume` is the one entry point the command line and the GUI use.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.core.errors import LoadError
from viewer.core.progress import CancelFn, ProgressFn, check_cancel, report
from viewer.core.volume import SeriesMetadata, Volume, volume_from_sitk
from viewer.dicom.load import load_series
from viewer.dicom.scan import ScanResult, SeriesEntry, scan, skipped_lines
from viewer.io.atomic_files import write_image_verified

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_suffix(path: str | Path) -> str | None:
    """The volume-file suffix of `path` (".nii.gz", ".nrrd", ...) or None."""
    name = str(path).lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), None)


def read_volume_file(path: str | Path) -> Volume:
    """Read a NIfTI / NRRD / MetaImage file (via SimpleITK) as a Volume in LPS."""
    path = str(path)
    if not os.path.isfile(path):
        raise LoadError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        raise LoadError(f"{path}: cannot read volume file: {first.strip()}") from None
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim == 2:
        image = sitk.JoinSeries(image)
    elif dim != 3:
        raise LoadError(f"{path}: a {dim}D image with size {image.GetSize()}; LungLens needs a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LoadError(f"{path}: {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                        "a CT volume has one value per voxel")
    warnings: list[str] = []
    try:
        vol = volume_from_sitk(image)
    except ValueError as exc:
        raise LoadError(f"{path}: {exc}") from None
    array = vol.array
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.size and array.dtype.kind in "iuf":
        lo, hi = float(array.min()), float(array.max())
        if lo >= 0 and hi > 1500:
            warnings.append(
                f"values range {lo:g}..{hi:g}: these look like stored values without the HU offset "
                "(air should be about -1000)"
            )
    name = Path(path).name
    return Volume(array, vol.spacing, vol.origin, vol.direction,
                  metadata=SeriesMetadata(series_description=name), warnings=tuple(warnings), source=path)


def write_volume(volume: Volume, path: str | Path, *, compress: bool = True) -> Path:
    """Write `volume` with its geometry, atomically and verified by reading it back.

    Raises ValueError for an unsupported suffix and WriteError (an OSError naming the file, saying "disk
    full" when it is) for a short or failed write; the previous file at `path` is then untouched.
    """
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix is None:
        raise ValueError(f"{path}: unsupported output type; use one of {', '.join(VOLUME_SUFFIXES)}")
    if suffix in (".mhd", ".nhdr"):
        raise ValueError(f"{path}: detached-header formats are not written; use .mha or .nrrd")
    return write_image_verified(path, volume.to_sitk(), np.asarray(volume.array), compress=compress)


def choose_series(result: ScanResult, series_id: str | None = None) -> SeriesEntry:
    """The series to open: the one asked for, or the only CT image series there is."""
    if not result.series:
        reasons = _skip_summary(result)
        raise LoadError(f"{result.root}: no DICOM image series found in {result.n_files} file(s){reasons}")
    if series_id is not None:
        try:
            return result.find(series_id)
        except KeyError as exc:
            raise LoadError(str(exc.args[0])) from None
    if len(result.series) == 1:
        return result.series[0]
    candidates = [s for s in result.series if s.is_ct_stack]
    if len(candidates) == 1:
        return candidates[0]
    listing = "; ".join(f"{s.id} ({s.description or 'no description'}, {s.modality}, {s.n_slices} slices)"
                        for s in result.series)
    raise LoadError(f"{result.root}: {len(result.series)} series found; choose one by id: {listing}")


def _skip_summary(result: ScanResult) -> str:
    if not result.skipped:
        return ""
    counts: dict[str, int] = {}
    for _, reason in result.skipped:
        counts[reason] = counts.get(reason, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    example = result.skipped[0][0]
    return " (skipped: " + "; ".join(f"{n} x {r}" for r, n in top) + f"; e.g. {example})"


def open_volume(
    path: str | Path,
    *,
    series: str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    allow_non_ct: bool = False,
) -> Volume:
    """Load a CT from a folder, a DICOM file or a volume file.

    Args:
        path: DICOM folder (searched recursively), DICOM file, or .nii/.nii.gz/.nrrd/.mha file.
        series: series id (or unique prefix, or SeriesNumber) when a folder holds several.
        progress: called with (fraction, message).
        cancel: returns True to stop; a LoadCancelled is raised then.
        allow_non_ct: open non-CT modalities too.
    """
    path = str(path)
    if not os.path.exists(path):
        raise LoadError(f"{path}: no such file or folder")
    if os.path.isfile(path) and volume_suffix(path):
        report(progress, 0.0, "reading volume file")
        vol = read_volume_file(path)
        report(progress, 1.0, "loaded")
        return vol
    if os.path.isdir(path):
        try:
            with os.scandir(path) as entries:
                if next(entries, None) is None:
                    raise LoadError(f"{path}: the folder is empty")
        except OSError as exc:
            raise LoadError(f"{path}: cannot read folder: {exc.strerror or exc}") from None

    def scan_progress(f: float, msg: str) -> None:
        report(progress, 0.2 * f, msg)

    result = scan(path, progress=scan_progress, cancel=cancel)
    entry = choose_series(result, series)
    check_cancel(cancel)

    def load_progress(f: float, msg: str) -> None:
        report(progress, 0.2 + 0.8 * f, msg)

    vol = load_series(entry, progress=load_progress, cancel=cancel, allow_non_ct=allow_non_ct)
    if result.skipped:  # reported with the volume, as `info` reports them
        vol = vol.with_array(vol.array, warnings=vol.warnings + tuple(skipped_lines(result.skipped)))
    return vol

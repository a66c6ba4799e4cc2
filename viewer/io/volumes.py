"""Open anything a user points at: a DICOM folder or file, NIfTI, NRRD or MetaImage.

`open_volume` is the one entry point the command line and the GUI use.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.core.errors import LoadError
from viewer.core.progress import CancelFn, ProgressFn, check_cancel, report
from viewer.core.volume import SeriesMetadata, Volume, volume_from_sitk
from viewer.dicom.load import load_series
from viewer.dicom.scan import ScanResult, SeriesEntry, scan, skipped_lines
from viewer.io.atomic_files import atomic_write, nifti_complete, stage, write_error, write_image_verified
from viewer.io.nifti_raw import HEADER_BYTES, read_layout

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


#: the steps of a unit map written by `write_unit_map`: values k / UNIT_MAP_STEPS, k = 0..255
UNIT_MAP_STEPS = 255


def write_unit_map(volume: Volume, path: str | Path) -> Path:
    """Write a map whose values lie in [0, 1] (a heat map) as NIfTI 8-bit voxels with scl_slope 1/255: ITK
    (SimpleITK), nibabel and LungLens read it back as floats k/255, within 0.002 of the map, while the file
    holds a quarter of float32's bytes (it compresses in about a fifth of the time and is several times
    smaller). A map with values outside [0, 1] or non-finite ones, or another format, goes to `write_volume`.

    Raises: as `write_volume`.
    """
    path = Path(path)
    array = np.asarray(volume.array)
    if volume_suffix(path) not in (".nii", ".nii.gz") or array.size == 0 or array.dtype.kind != "f":
        return write_volume(volume, path)
    lo, hi = float(np.min(array)), float(np.max(array))  # NaN propagates and fails both tests below
    if not (lo >= 0.0 and hi <= 1.0):
        return write_volume(volume, path)
    quantized = _unit_steps(array)
    header = _unit_map_header(volume, quantized, path)
    if header is None:
        return write_volume(volume, path)  # not the little-endian NIfTI-1 layout patched here: float32 then
    compress = path.name.lower().endswith(".gz")

    def write(tmp: str) -> None:
        with open(tmp, "wb") as raw:
            fh = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) if compress else raw
            fh.write(header)
            fh.write(np.ascontiguousarray(quantized).reshape(-1).data)
            if compress:
                fh.close()

    def verify(tmp: str) -> None:
        if nifti_complete(tmp, quantized) is not True:
            raise write_error(path, "the written file is shorter than its voxels (short write)")

    return atomic_write(path, write, suffix=".nii.gz" if compress else ".nii", verify=verify)


def _unit_map_header(volume: Volume, quantized: np.ndarray, path: Path) -> bytes | None:
    """The NIfTI-1 header (up to the voxels) of `quantized` on `volume`'s grid, scaled by 1/UNIT_MAP_STEPS: ITK
    writes it for the first slice alone (the same geometry, a few kB), then the slice count is patched. None
    where ITK's file is not the little-endian NIfTI-1 layout this expects (or the slices do not fit its dim).
    The scratch file lies beside `path`, named as its temporaries are."""
    first = Volume(np.ascontiguousarray(quantized[:1]), volume.spacing, volume.origin, volume.direction)
    image = first.to_sitk()

    def write_plain(tmp: str) -> None:
        try:
            sitk.WriteImage(image, tmp, useCompression=False)
        except RuntimeError as exc:
            first_line = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            raise write_error(path, f"the image writer failed: {first_line.strip()}") from None

    scratch = stage(path, write_plain, suffix=".nii", sync=False)
    try:
        data = bytearray(Path(scratch.tmp).read_bytes())
    finally:
        scratch.discard()
    layout = read_layout(bytes(data[:HEADER_BYTES]))
    nz = quantized.shape[0]
    if (layout is None or layout.order != "<" or struct.unpack("<i", data[:4])[0] != 348
            or layout.vox_offset + quantized[:1].nbytes != len(data) or struct.unpack("<h", data[40:42])[0] != 3
            or struct.unpack("<h", data[46:48])[0] != 1 or nz > 32767):
        return None
    data[46:48] = struct.pack("<h", nz)  # dim[3]: the slices
    data[112:120] = struct.pack("<ff", 1.0 / UNIT_MAP_STEPS, 0.0)  # scl_slope, scl_inter
    return bytes(data[: layout.vox_offset])


def _unit_steps(array: np.ndarray, voxels: int = 1 << 21) -> np.ndarray:
    """round(array x UNIT_MAP_STEPS) as C-ordered uint8, a few slices at a time (no temporary of the volume's
    size, any strides)."""
    out = np.empty(array.shape, np.uint8)
    step = max(1, voxels // max(1, array[0].size))
    buf = np.empty((step, *array.shape[1:]), np.float32)
    for z in range(0, array.shape[0], step):
        part = buf[: min(step, array.shape[0] - z)]
        np.multiply(array[z : z + len(part)], UNIT_MAP_STEPS, out=part, casting="unsafe")
        part += 0.5
        np.copyto(out[z : z + len(part)], part, casting="unsafe")
    return out


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

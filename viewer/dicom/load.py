"""Load a discovered DICOM series into a Volume in HU, with correct geometry."""

from __future__ import annotations

import math
import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import pydicom.config

from viewer.core.errors import LoadCancelled, LoadError
from viewer.core.progress import CancelFn, ProgressFn, check_cancel, report
from viewer.core.volume import Volume
from viewer.dicom.header import DicomHeader, read_dataset
from viewer.dicom.pixels import fix_stored_bits, read_native_into, read_stored_frames, stored_dtype
from viewer.dicom.scan import SeriesEntry, metadata_from_header
from viewer.dicom.slice_stack import StackPlan, orientation_vectors, plan_stack, resample_stack

_INT16 = np.iinfo(np.int16)


def default_workers() -> int:
    return min(16, 2 * (os.cpu_count() or 2))


def load_series(
    entry: SeriesEntry,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    allow_non_ct: bool = False,
    workers: int | None = None,
) -> Volume:
    """Read every slice of `entry`, convert to HU and place it on a regular grid.

    Raises:
        LoadError: the series cannot be read correctly; the message names the file and the problem.
        LoadCancelled: `cancel()` returned True.
    """
    _validate(entry, allow_non_ct)
    if entry.is_multiframe:
        return _load_multiframe(entry, progress=progress, cancel=cancel)
    headers = entry.headers
    h0 = headers[0]
    warnings = list(entry.warnings)
    plan = _plan(headers, warnings)
    kept = [headers[i] for i in plan.order]
    report(progress, 0.0, f"reading {len(kept)} slices")
    raw = _read_slices(kept, progress, cancel, workers or default_workers())
    hu = _to_hu(raw, [h.slope for h in kept], [h.intercept for h in kept])
    del raw
    if plan.resample:
        report(progress, 0.95, "resampling to a regular grid")
        hu = resample_stack(hu, plan, cancel=cancel)
    report(progress, 1.0, "loaded")
    return _volume(h0.path, hu, plan, metadata_from_header(h0), warnings,
                   os.path.dirname(h0.path) if len(headers) > 1 else h0.path, tuple(h.path for h in kept))


def _volume(path: str, hu: np.ndarray, plan: StackPlan, metadata, warnings: list[str], source: str,
            files: tuple[str, ...] = ()) -> Volume:
    try:
        return Volume(array=hu, spacing=plan.spacing, origin=plan.origin, direction=plan.direction,
                      metadata=metadata, warnings=tuple(dict.fromkeys(warnings + list(plan.warnings))),
                      source=source, files=files)
    except ValueError as exc:
        raise LoadError(f"{path}: {exc}") from None


def _validate(entry: SeriesEntry, allow_non_ct: bool) -> None:
    h = entry.first
    if entry.modality and entry.modality != "CT" and not allow_non_ct:
        raise LoadError(
            f"{h.path}: modality is {entry.modality}, not CT; LungLens reads CT series "
            "(pass allow_non_ct / --allow-non-ct to view it anyway, without HU-based tools)"
        )
    if h.samples_per_pixel not in (0, 1):
        raise LoadError(f"{h.path}: colour image ({h.photometric}), not a CT slice")
    if h.rows <= 0 or h.columns <= 0:
        raise LoadError(f"{h.path}: image has no size (Rows/Columns missing)")
    sizes = {(x.rows, x.columns) for x in entry.headers}
    if len(sizes) > 1:
        raise LoadError(f"{entry.id}: slices have different sizes {sorted(sizes)}; cannot stack them")
    for x in entry.headers:
        if not (math.isfinite(x.slope) and math.isfinite(x.intercept)):
            raise LoadError(f"{x.path}: RescaleSlope {x.rescale_slope!r} / RescaleIntercept "
                            f"{x.rescale_intercept!r} is not finite: the HU values cannot be computed")


def _plan(headers: list[DicomHeader], warnings: list[str]) -> StackPlan:
    h0 = headers[0]
    names = [os.path.basename(h.path) for h in headers]
    ps = h0.pixel_spacing
    if not ps or len(ps) < 2 or min(ps[:2]) <= 0:
        warnings.append("no PixelSpacing: 1 mm pixels assumed; distances are not reliable")
        ps = (1.0, 1.0)
    thickness = _float(h0.slice_thickness)
    have_geometry = all(h.image_position and len(h.image_position) == 3 for h in headers) and all(
        h.image_orientation and len(h.image_orientation) == 6 for h in headers
    )
    if have_geometry:
        iops = np.array([h.image_orientation for h in headers])
        if np.max(np.abs(iops - iops[0])) > 1e-3:
            raise LoadError(f"{h0.path}: slices of the series have different orientations; cannot stack them")
        positions = np.array([h.image_position for h in headers])
        iop = tuple(h0.image_orientation or ())  # have_geometry: every slice has one
    else:
        missing = [names[i] for i, h in enumerate(headers) if not h.image_position]
        dz = thickness or 1.0
        warnings.append(
            f"no ImagePositionPatient in {len(missing)} file(s) (e.g. {missing[0] if missing else '?'}): "
            f"slices ordered by InstanceNumber at {dz:g} mm spacing; the geometry is not reliable"
        )
        order = sorted(range(len(headers)), key=lambda i: (_float(headers[i].instance_number) or 0.0, names[i]))
        rank = np.empty(len(headers))
        rank[order] = np.arange(len(headers))
        iop = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
        positions = np.zeros((len(headers), 3))
        positions[:, 2] = rank * dz
    try:
        return plan_stack(positions, iop, (ps[0], ps[1]), h0.rows, h0.columns,
                          slice_thickness=thickness, names=names)
    except ValueError as exc:
        raise LoadError(f"{h0.path}: {exc}") from None


def _float(text: str) -> float | None:
    try:
        return float(text) if text and text.strip() else None
    except ValueError:
        return None


def _read_slices(
    headers: list[DicomHeader], progress: ProgressFn | None, cancel: CancelFn | None, workers: int
) -> np.ndarray:
    dtypes = {stored_dtype(h) for h in headers}
    dtype = dtypes.pop() if len(dtypes) == 1 else np.dtype(np.int32)
    h0 = headers[0]
    out = np.empty((len(headers), h0.rows, h0.columns), dtype=dtype)

    def read_one(k: int) -> None:
        h = headers[k]
        try:
            if h.is_native and stored_dtype(h) == dtype and h.frames == 1:
                read_native_into(h, out[k])
                fix_stored_bits(h, out[k])
            else:
                frames = read_stored_frames(h)
                out[k] = frames[0]
        except LoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoders raise anything on corrupt data; name the file
            raise LoadError(f"{h.path}: cannot read pixel data ({type(exc).__name__}: {exc})") from None

    n = len(headers)
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = {pool.submit(read_one, k) for k in range(n)}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()
                done += len(finished)
                check_cancel(cancel)
                report(progress, 0.95 * done / n, f"read {done}/{n} slices")
        except (LoadError, LoadCancelled):
            for f in pending:
                f.cancel()
            raise
    return out


def _to_hu(raw: np.ndarray, slopes: list[float], intercepts: list[float]) -> np.ndarray:
    """Apply RescaleSlope/Intercept; int16 when the result is integral and fits, else float32."""
    m = np.asarray(slopes, dtype=np.float64)
    b = np.asarray(intercepts, dtype=np.float64)
    if np.all(m == 1) and np.all(b == np.round(b)) and raw.dtype.kind in "iu" and raw.size:
        lo, hi = int(raw.min()), int(raw.max())
        if lo + b.min() >= _INT16.min and hi + b.max() <= _INT16.max:
            if raw.dtype.itemsize == 2 and hi <= _INT16.max and lo >= _INT16.min:
                hu: np.ndarray = raw.view(np.int16)  # same bits for values that fit: no copy
            else:
                hu = raw.astype(np.int16)
            if np.all(b == b[0]):
                if b[0] != 0:
                    hu += np.int16(b[0])
            else:
                hu += b.astype(np.int16)[:, None, None]
            return hu
    hu = raw.astype(np.float32)
    hu *= m.astype(np.float32)[:, None, None]
    hu += b.astype(np.float32)[:, None, None]
    if np.all(np.isfinite(hu)) and hu.size and np.array_equal(hu, np.round(hu)):
        if hu.min() >= _INT16.min and hu.max() <= _INT16.max:
            return hu.astype(np.int16)
    return hu


# -- multi-frame (Enhanced CT, Legacy Converted Enhanced CT, old multi-frame) ------------------


def _load_multiframe(entry: SeriesEntry, *, progress: ProgressFn | None, cancel: CancelFn | None) -> Volume:
    h = entry.first
    report(progress, 0.0, "reading multi-frame file")
    pydicom.config.convert_wrong_length_to_UN = True
    try:
        ds = read_dataset(h.path)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(f"{h.path}: cannot read multi-frame file: {exc}") from None
    check_cancel(cancel)
    frames = read_stored_frames(h, ds)
    try:
        return _place_frames(h, ds, frames, entry.warnings, progress, cancel)
    except (LoadError, LoadCancelled):
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises anything on malformed functional groups
        raise LoadError(f"{h.path}: malformed multi-frame geometry ({type(exc).__name__}: {exc})") from None


def _place_frames(h: DicomHeader, ds, frames: np.ndarray, entry_warnings: list[str],
                  progress: ProgressFn | None, cancel: CancelFn | None) -> Volume:
    n = frames.shape[0]
    warnings = list(entry_warnings)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != n:
        raise LoadError(f"{h.path}: {len(per_frame)} per-frame functional groups for {n} frames")

    def attr(i: int, seq: str, keyword: str, default=None):
        for group in ((per_frame[i] if per_frame is not None else None), shared):
            item = _first_item(group, seq) if group is not None else None
            if item is not None and keyword in item:
                return item[keyword].value
        return ds.get(keyword, default)

    positions, iops, slopes, intercepts = [], [], [], []
    for i in range(n):
        positions.append(attr(i, "PlanePositionSequence", "ImagePositionPatient"))
        iops.append(attr(i, "PlaneOrientationSequence", "ImageOrientationPatient"))
        slopes.append(float(attr(i, "PixelValueTransformationSequence", "RescaleSlope", 1.0) or 1.0))
        intercepts.append(float(attr(i, "PixelValueTransformationSequence", "RescaleIntercept", 0.0) or 0.0))
    if not (np.all(np.isfinite(slopes)) and np.all(np.isfinite(intercepts))):
        raise LoadError(f"{h.path}: a RescaleSlope or RescaleIntercept is not finite: the HU values cannot be "
                        "computed")
    ps = attr(0, "PixelMeasuresSequence", "PixelSpacing")
    thickness = attr(0, "PixelMeasuresSequence", "SliceThickness")
    spacing_between = ds.get("SpacingBetweenSlices")
    if ps is None or len(ps) < 2:
        warnings.append("no PixelSpacing: 1 mm pixels assumed; distances are not reliable")
        ps = (1.0, 1.0)
    iop = iops[0] if iops[0] is not None else None
    if iop is None:
        warnings.append("no ImageOrientationPatient: axial orientation assumed")
        iop = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if any(o is not None and np.max(np.abs(np.subtract(o, iop))) > 1e-3 for o in iops):
        raise LoadError(f"{h.path}: frames have different orientations; cannot stack them")
    if any(p is None for p in positions):
        dz = float(spacing_between or thickness or 1.0)
        warnings.append(
            f"multi-frame file without per-frame positions: frames stacked {dz:g} mm apart along the normal"
        )
        normal = orientation_vectors(tuple(float(v) for v in iop))[2]
        start = np.asarray(positions[0] if positions[0] is not None else (0.0, 0.0, 0.0), dtype=float)
        positions = [start + i * dz * normal for i in range(n)]
    names = [f"{Path(h.path).name} frame {i + 1}" for i in range(n)]
    try:
        plan = plan_stack(np.asarray(positions, dtype=float), tuple(float(v) for v in iop),
                          (float(ps[0]), float(ps[1])), h.rows, h.columns,
                          slice_thickness=float(thickness) if thickness else None, names=names)
    except ValueError as exc:
        raise LoadError(f"{h.path}: {exc}") from None
    order = plan.order
    hu = _to_hu(np.ascontiguousarray(frames[order]), [slopes[i] for i in order], [intercepts[i] for i in order])
    if plan.resample:
        hu = resample_stack(hu, plan, cancel=cancel)
    report(progress, 1.0, "loaded")
    return _volume(h.path, hu, plan, metadata_from_header(h), warnings, h.path, (h.path,))


def _first_item(ds, keyword: str):
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None

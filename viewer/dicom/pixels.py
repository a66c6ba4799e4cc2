"""Reading stored pixel values of DICOM files, fastest decoder first.

1. Uncompressed little-endian data is read straight from its byte offset (found by
   the header scan) into the caller's array: no parsing, no copy.
2. Compressed data goes through pydicom and its plugins (pylibjpeg, openjpeg, libjpeg,
   JPEG-LS, RLE, deflate).
3. What pydicom cannot decode (JPEG spectral selection and progressive, among others)
   goes through SimpleITK/GDCM.

Values returned are *stored* values; the caller applies RescaleSlope/Intercept.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pydicom.config
import SimpleITK as sitk
from pydicom.uid import UID

from viewer.core.errors import LoadError
from viewer.dicom.header import (
    DEFLATED_LE,
    NATIVE_SYNTAXES,
    DicomHeader,
    NotDicomError,
    pixel_length_problem,
    read_dataset,
)

#: JPEG Lossless (processes 14 and 14 SV1): decoded by GDCM first (faster, and in parallel); voxels identical
GDCM_FIRST = frozenset({"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"})


def syntax_name(uid: str) -> str:
    """Human name of a transfer syntax, with its UID."""
    try:
        name = UID(uid).name
    except Exception:  # noqa: BLE001 - an unknown UID has no name, that is all
        name = ""
    return f"{name} ({uid})" if name and name != uid else uid


def stored_dtype(h: DicomHeader) -> np.dtype:
    """numpy dtype of the stored pixel values."""
    signed = h.pixel_representation == 1
    if h.bits_allocated == 8:
        return np.dtype(np.int8 if signed else np.uint8)
    if h.bits_allocated == 16:
        return np.dtype("<i2" if signed else "<u2")
    if h.bits_allocated == 32:
        return np.dtype("<i4" if signed else "<u4")
    raise LoadError(f"{h.path}: unsupported BitsAllocated {h.bits_allocated} (expected 8, 16 or 32)")


def read_native_into(h: DicomHeader, out: np.ndarray) -> None:
    """Read the uncompressed pixels of `h` into `out` (C-contiguous, dtype `stored_dtype(h)`)."""
    expected = out.nbytes
    problem = pixel_length_problem(h, h.pixel_length)
    if problem or h.pixel_length < expected:
        raise LoadError(f"{h.path}: {problem or f'pixel data too short: {h.pixel_length} of {expected} bytes'}")
    try:
        with open(h.path, "rb") as fh:
            fh.seek(h.pixel_offset)
            got = fh.readinto(out.data.cast("B"))
    except OSError as exc:
        raise LoadError(f"{h.path}: cannot read pixel data: {exc.strerror or exc}") from exc
    if got < expected:
        raise LoadError(f"{h.path}: file is truncated: {got} of {expected} bytes of pixel data present")


def fix_stored_bits(h: DicomHeader, values: np.ndarray) -> np.ndarray:
    """Mask unused high bits (unsigned) or sign-extend (signed) when BitsStored < BitsAllocated."""
    bits = h.bits_stored or h.bits_allocated
    if bits >= h.bits_allocated or values.dtype.kind not in "iu":
        return values
    if h.pixel_representation == 0:
        values &= np.array((1 << bits) - 1, dtype=values.dtype)
        return values
    shift = values.dtype.itemsize * 8 - bits
    unsigned = values.view(values.dtype.str.replace("i", "u"))
    unsigned <<= shift
    values >>= shift  # arithmetic shift on the signed view sign-extends
    return values


def read_stored_frames(h: DicomHeader, dataset: pydicom.Dataset | None = None) -> np.ndarray:
    """All frames of one file as stored values, shape (frames, rows, columns)."""
    if h.samples_per_pixel not in (0, 1):
        raise LoadError(f"{h.path}: colour image ({h.samples_per_pixel} samples per pixel, "
                        f"{h.photometric}); a CT needs one grey value per pixel")
    if h.is_native and dataset is None:
        out = np.empty((h.frames, h.rows, h.columns), dtype=stored_dtype(h))
        read_native_into(h, out)
        return fix_stored_bits(h, out)
    if h.transfer_syntax in GDCM_FIRST and dataset is None and float(h.slope or 1.0).is_integer():
        try:
            return read_with_gdcm(h)
        except LoadError:
            pass  # pydicom may still decode it, and names the problem if not
    pydicom_error = ""
    try:
        pydicom.config.convert_wrong_length_to_UN = True
        ds = dataset if dataset is not None else read_dataset(h.path)
        if "PixelData" not in ds:
            raise LoadError(f"{h.path}: no pixel data in the file")
        try:
            data = ds.PixelData
        except Exception as exc:  # noqa: BLE001 - the element itself is broken: no decoder can help
            raise LoadError(f"{h.path}: unreadable pixel data element: {_first_line(exc)}") from None
        problem = pixel_length_problem(h, len(data)) if h.transfer_syntax in NATIVE_SYNTAXES else None
        if problem:
            raise LoadError(f"{h.path}: {problem}")
        arr = ds.pixel_array
        return check_stored_range(h, arr.reshape((-1, h.rows, h.columns)))
    except LoadError:
        raise
    except NotDicomError as exc:
        raise LoadError(f"{h.path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise anything; fall back to GDCM
        pydicom_error = _first_line(exc)
    if h.transfer_syntax == DEFLATED_LE:  # GDCM would inflate it without a bound
        raise LoadError(f"{h.path}: cannot decode pixel data in transfer syntax {syntax_name(h.transfer_syntax)}: "
                        f"{pydicom_error}")
    return read_with_gdcm(h, f"pydicom: {pydicom_error}; ")


def read_with_gdcm(h: DicomHeader, tried: str = "") -> np.ndarray:
    """All frames of one file as stored values, decoded by GDCM (SimpleITK), which releases the GIL and decodes
    JPEG Lossless about 2.5x faster than pydicom's plugins; GDCM's rescale is undone exactly (`rint`).

    Raises:
        LoadError: GDCM cannot decode it, or decodes a pixel count that does not fit the header.
    """
    try:
        image = sitk.ReadImage(h.path)
        hu = sitk.GetArrayFromImage(image).astype(np.float64)
    except Exception as exc:  # noqa: BLE001
        raise LoadError(
            f"{h.path}: cannot decode pixel data in transfer syntax {syntax_name(h.transfer_syntax)}: "
            f"{tried}SimpleITK/GDCM: {_first_line(exc)}"
        ) from None
    # GDCM applies the rescale; return stored values like the other paths.
    stored = np.rint((hu - h.intercept) / (h.slope or 1.0))
    try:
        stored = stored.reshape((-1, h.rows, h.columns))
    except ValueError:
        raise LoadError(f"{h.path}: SimpleITK/GDCM decoded {stored.size} pixels, not a multiple of Rows x Columns "
                        f"= {h.rows} x {h.columns}") from None
    stored = check_stored_range(h, stored)
    return stored.astype(stored_dtype(h) if h.bits_allocated else np.int32)


def stored_range(h: DicomHeader) -> tuple[int, int]:
    """The stored values BitsStored (and PixelRepresentation) allow."""
    allocated = h.bits_allocated if 0 < h.bits_allocated <= 32 else 32
    bits = h.bits_stored if 0 < h.bits_stored <= allocated else allocated
    if h.pixel_representation == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def check_stored_range(h: DicomHeader, values: np.ndarray) -> np.ndarray:
    """`values`, unless decoded values lie far outside what BitsStored allows (a corrupt compressed stream).

    One bit of slack is allowed: some encoders store a few more bits than BitsStored says.
    """
    if not values.size or values.dtype.kind not in "iuf":
        return values
    lo, hi = stored_range(h)
    span = hi - lo + 1
    vmin, vmax = values.min(), values.max()
    if values.dtype.kind == "f" and not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise LoadError(f"{h.path}: decoded pixel data holds non-finite values")
    if vmin < lo - span or vmax > hi + span:
        raise LoadError(
            f"{h.path}: decoded values {vmin}..{vmax} lie far outside the {lo}..{hi} that BitsStored "
            f"{h.bits_stored} / BitsAllocated {h.bits_allocated} allow: corrupt pixel data in transfer syntax "
            f"{syntax_name(h.transfer_syntax)}"
        )
    return values


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:3])[:300]

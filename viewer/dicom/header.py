"""Fast DICOM header reading: the few attributes a viewer needs, no pixel data.

pydicom parses every element of a header (about 1,200 files/s here); a folder
scan only needs some thirty attributes and the position of the pixel data. This
module walks the element headers of little-endian files itself, skipping values
it does not need by seeking, and falls back to pydicom for anything unusual
(big endian, deflate, odd encodings). Both paths give the same `DicomHeader`.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pydicom.config
from pydicom.errors import InvalidDicomError

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
NATIVE_SYNTAXES = {IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_LE, EXPLICIT_VR_BE}
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_CHUNK = 16384

#: a deflated data set is never inflated past this many bytes (a deflate bomb is refused, not inflated)
MAX_INFLATED_BYTES = 2 << 30
#: inflated bytes allowed beyond what Rows x Columns x frames declare (the rest of the header, padding)
INFLATE_MARGIN_BYTES = 16 << 20
#: one file may hold at most this many pixels (Rows x Columns x frames): 4 GiB at 16 bits
MAX_FILE_PIXELS = 1 << 31

# tag -> (field name, kind); kind: "s" text, "m" multi-valued text, "f" float list, "u" US
_WANTED: dict[int, tuple[str, str]] = {
    0x00080005: ("specific_character_set", "m"),
    0x00080008: ("image_type", "m"),
    0x00080016: ("sop_class_uid", "s"),
    0x00080018: ("sop_instance_uid", "s"),
    0x00080020: ("study_date", "s"),
    0x00080030: ("study_time", "s"),
    0x00080050: ("accession_number", "s"),
    0x00080060: ("modality", "s"),
    0x00080070: ("manufacturer", "s"),
    0x00081030: ("study_description", "s"),
    0x0008103E: ("series_description", "s"),
    0x00081090: ("manufacturer_model", "s"),
    0x00100010: ("patient_name", "s"),
    0x00100020: ("patient_id", "s"),
    0x00100030: ("patient_birth_date", "s"),
    0x00100040: ("patient_sex", "s"),
    0x00101010: ("patient_age", "s"),
    0x00180015: ("body_part", "s"),
    0x00180050: ("slice_thickness", "s"),
    0x00180060: ("kvp", "s"),
    0x00181120: ("gantry_tilt", "s"),
    0x00181152: ("exposure", "s"),
    0x00181210: ("convolution_kernel", "s"),
    0x0020000D: ("study_instance_uid", "s"),
    0x0020000E: ("series_instance_uid", "s"),
    0x00200011: ("series_number", "s"),
    0x00200012: ("acquisition_number", "s"),
    0x00200013: ("instance_number", "s"),
    0x00200032: ("image_position", "f"),
    0x00200037: ("image_orientation", "f"),
    0x00200052: ("frame_of_reference_uid", "s"),
    0x00280002: ("samples_per_pixel", "u"),
    0x00280004: ("photometric", "s"),
    0x00280008: ("number_of_frames", "s"),
    0x00280010: ("rows", "u"),
    0x00280011: ("columns", "u"),
    0x00280030: ("pixel_spacing", "f"),
    0x00280100: ("bits_allocated", "u"),
    0x00280101: ("bits_stored", "u"),
    0x00280103: ("pixel_representation", "u"),
    0x00281050: ("window_center", "f"),
    0x00281051: ("window_width", "f"),
    0x00281052: ("rescale_intercept", "s"),
    0x00281053: ("rescale_slope", "s"),
}
_KEYWORDS = {
    "specific_character_set": "SpecificCharacterSet", "image_type": "ImageType",
    "sop_class_uid": "SOPClassUID", "sop_instance_uid": "SOPInstanceUID", "study_date": "StudyDate",
    "study_time": "StudyTime", "accession_number": "AccessionNumber", "modality": "Modality",
    "manufacturer": "Manufacturer", "study_description": "StudyDescription",
    "series_description": "SeriesDescription", "manufacturer_model": "ManufacturerModelName",
    "patient_name": "PatientName", "patient_id": "PatientID", "patient_birth_date": "PatientBirthDate",
    "patient_sex": "PatientSex", "patient_age": "PatientAge", "exposure": "Exposure",
    "body_part": "BodyPartExamined", "slice_thickness": "SliceThickness",
    "kvp": "KVP", "gantry_tilt": "GantryDetectorTilt", "convolution_kernel": "ConvolutionKernel",
    "study_instance_uid": "StudyInstanceUID", "series_instance_uid": "SeriesInstanceUID",
    "series_number": "SeriesNumber", "acquisition_number": "AcquisitionNumber",
    "instance_number": "InstanceNumber", "image_position": "ImagePositionPatient",
    "image_orientation": "ImageOrientationPatient", "frame_of_reference_uid": "FrameOfReferenceUID",
    "samples_per_pixel": "SamplesPerPixel", "photometric": "PhotometricInterpretation",
    "number_of_frames": "NumberOfFrames", "rows": "Rows", "columns": "Columns",
    "pixel_spacing": "PixelSpacing", "bits_allocated": "BitsAllocated", "bits_stored": "BitsStored",
    "pixel_representation": "PixelRepresentation", "window_center": "WindowCenter",
    "window_width": "WindowWidth", "rescale_intercept": "RescaleIntercept", "rescale_slope": "RescaleSlope",
}
_TEXT_NEEDING_CHARSET = {
    "patient_name", "study_description", "series_description", "manufacturer", "manufacturer_model",
    "body_part", "convolution_kernel",
}


class NotDicomError(Exception):
    """The file is not DICOM (the message says why)."""


class _Unsupported(Exception):
    """The fast parser cannot handle this file; pydicom will."""


_US_KEYWORDS = {"rows": "Rows", "columns": "Columns", "samples_per_pixel": "SamplesPerPixel",
                "bits_allocated": "BitsAllocated", "bits_stored": "BitsStored",
                "pixel_representation": "PixelRepresentation"}


@dataclass(slots=True)
class DicomHeader:
    """The attributes of one DICOM file that series discovery and loading need."""

    path: str
    transfer_syntax: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = ""
    image_type: tuple[str, ...] = ()
    specific_character_set: tuple[str, ...] = ()
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_description: str = ""
    series_description: str = ""
    series_number: str = ""
    acquisition_number: str = ""
    instance_number: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    body_part: str = ""
    slice_thickness: str = ""
    kvp: str = ""
    exposure: str = ""  # mAs
    gantry_tilt: str = ""
    convolution_kernel: str = ""
    image_position: tuple[float, ...] | None = None
    image_orientation: tuple[float, ...] | None = None
    pixel_spacing: tuple[float, ...] | None = None
    window_center: tuple[float, ...] | None = None
    window_width: tuple[float, ...] | None = None
    rows: int = 0
    columns: int = 0
    samples_per_pixel: int = 1
    photometric: str = ""
    number_of_frames: str = ""
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    rescale_slope: str = ""
    rescale_intercept: str = ""
    has_pixel_data: bool = False
    pixel_offset: int = -1  # byte offset of native pixel data in the file, -1 if unknown/encapsulated
    pixel_length: int = -1  # byte length of native pixel data, -1 if unknown/encapsulated
    file_size: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        try:
            return max(1, int(float(self.number_of_frames))) if self.number_of_frames else 1
        except (ValueError, OverflowError):
            return 1  # header_problem() reports the value; scanned headers never get here

    @property
    def slope(self) -> float:
        return _to_float(self.rescale_slope, 1.0)

    @property
    def intercept(self) -> float:
        return _to_float(self.rescale_intercept, 0.0)

    @property
    def is_native(self) -> bool:
        """Uncompressed pixel data that can be read straight from `pixel_offset`."""
        return self.transfer_syntax in (IMPLICIT_VR_LE, EXPLICIT_VR_LE) and self.pixel_offset >= 0


def header_problem(h: DicomHeader) -> str | None:
    """Why the header of an image file cannot be right (a value named), or None.

    Refuses what would allocate absurd memory or give silently wrong geometry or HU: a frame count
    that is no number, an image of more than MAX_FILE_PIXELS pixels, non-finite positions, spacings
    or rescale values, and native pixel data whose length does not match Rows x Columns x frames.
    """
    if h.number_of_frames:
        try:
            frames = float(h.number_of_frames)
        except ValueError:
            frames = math.nan
        if not math.isfinite(frames) or frames != int(frames):
            return f"NumberOfFrames {h.number_of_frames!r} is not a frame count"
    if h.rows <= 0 or h.columns <= 0:
        return f"image has no size (Rows {h.rows}, Columns {h.columns})"
    pixels = h.rows * h.columns * h.frames
    if pixels > MAX_FILE_PIXELS:
        return (f"image size {h.rows}x{h.columns} x {h.frames} frame(s) = {pixels:,} pixels is beyond "
                f"{MAX_FILE_PIXELS:,}: not a CT image (a corrupt header?)")
    for name, keyword in (("image_position", "ImagePositionPatient"), ("image_orientation", "ImageOrientationPatient"),
                          ("pixel_spacing", "PixelSpacing")):
        values = getattr(h, name)
        if values is not None and not all(math.isfinite(v) for v in values):
            return f"{keyword} {_show(values)} is not finite"
    for text, keyword in ((h.slice_thickness, "SliceThickness"), (h.rescale_slope, "RescaleSlope"),
                          (h.rescale_intercept, "RescaleIntercept")):
        if not math.isfinite(_to_float(text, 0.0)):
            return f"{keyword} {text!r} is not finite"
    for name in ("window_center", "window_width"):  # display hints only: drop a broken one
        values = getattr(h, name)
        if values is not None and not all(math.isfinite(v) for v in values):
            setattr(h, name, None)
    if h.pixel_length >= 0 and h.transfer_syntax in NATIVE_SYNTAXES:
        return pixel_length_problem(h, h.pixel_length)
    return None


def pixel_length_problem(h: DicomHeader, length: int) -> str | None:
    """Why `length` bytes of uncompressed pixel data do not fit Rows x Columns x frames x bytes, or None."""
    if h.bits_allocated not in (8, 16, 32):
        return None  # refused when read, with its own message
    row_bytes = h.columns * max(1, h.samples_per_pixel) * h.bits_allocated // 8
    expected = row_bytes * h.rows * h.frames
    # a few bytes of padding are tolerated; a row or more too many means Rows/Columns are wrong
    if expected <= length < expected + max(2, row_bytes):
        return None
    return (f"pixel data is {length:,} bytes but Rows x Columns x frames x bytes = {h.rows} x {h.columns} x "
            f"{h.frames} x {h.bits_allocated // 8} = {expected:,}: the image size in the header does not match "
            "the pixel data")


def _show(values: tuple[float, ...]) -> str:
    return "\\".join(f"{v:g}" for v in values)


def _to_float(text: str, default: float) -> float:
    try:
        return float(text) if text.strip() else default
    except ValueError:
        return default


def read_header(path: str | Path) -> DicomHeader:
    """Read the header of one file: fast path first, pydicom when needed.

    Raises:
        NotDicomError: the file is not DICOM or is unreadable; the message says why.
    """
    path = str(path)
    try:
        with open_regular(path) as fh:
            return _FastParser(fh, path).parse()
    except _Unsupported:
        return _read_header_pydicom(path)
    except NotDicomError:
        raise
    except OSError as exc:
        raise NotDicomError(f"cannot read file: {exc.strerror or exc}") from exc
    except Exception as exc:  # noqa: BLE001 - one malformed file must never stop a folder scan
        raise NotDicomError(f"unreadable DICOM header ({type(exc).__name__}: {_first_line(exc)})") from None


def open_regular(path: str):
    """Open a regular file for reading in binary; never blocks on a FIFO or device (NotDicomError)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotDicomError(f"{special_file_kind(mode)}, not a regular file: not opened")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def special_file_kind(mode: int) -> str:
    """A name for a file type that is not a regular file or folder."""
    for test, name in ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(ln.strip() for ln in text.splitlines()[:3] if ln.strip())[:300]


class _FastParser:
    def __init__(self, fh, path: str) -> None:
        self.fh = fh
        self.path = path
        self.buf = fh.read(_CHUNK)
        self.base = 0  # file offset of buf[0]
        self.file_size = -1

    def _need(self, pos: int, n: int) -> memoryview | bytes:
        """Bytes [pos, pos+n) of the file."""
        end = pos + n
        if pos >= self.base and end <= self.base + len(self.buf):
            return self.buf[pos - self.base : end - self.base]
        self.fh.seek(pos)
        self.buf = self.fh.read(max(n, _CHUNK))
        self.base = pos
        if len(self.buf) < n:
            raise _Truncated(pos)
        return self.buf[:n]

    def _size(self) -> int:
        if self.file_size < 0:
            self.file_size = self.fh.seek(0, 2)
        return self.file_size

    def parse(self) -> DicomHeader:
        head = self.buf
        h = DicomHeader(path=self.path)
        if len(head) >= 132 and head[128:132] == b"DICM":
            pos = 132
            pos, meta = self._parse_meta(pos)
            h.transfer_syntax = meta.get(0x00020010, "")
            h.sop_class_uid = meta.get(0x00020002, "")
        elif len(head) >= 8 and struct.unpack_from("<H", head, 0)[0] in (0x0008, 0x0002):
            # no preamble (old ACR-NEMA style or raw dataset): pydicom decides if it is DICOM
            raise _Unsupported
        else:
            raise NotDicomError("not a DICOM file (no 'DICM' marker at byte 128)")
        if h.sop_class_uid == DICOMDIR_SOP_CLASS:
            raise NotDicomError("DICOMDIR index file (the images are read from the folder itself)")
        if h.transfer_syntax == DEFLATED_LE:
            data = inflate_dataset(self.fh, pos)
            h.file_size = self._size()
            try:
                _FastParser(io.BytesIO(data), self.path)._parse_dataset(0, False, h)
            except _Truncated as exc:
                raise NotDicomError(f"truncated deflated data set: ends at inflated byte {exc.args[0]}") from None
            except struct.error:
                raise _Unsupported from None
            return h
        if h.transfer_syntax == EXPLICIT_VR_BE:
            raise _Unsupported  # big endian: pydicom
        implicit = h.transfer_syntax == IMPLICIT_VR_LE
        try:
            self._parse_dataset(pos, implicit, h)
        except _Truncated as exc:
            raise NotDicomError(f"truncated file: header ends at byte {exc.args[0]}") from None
        except struct.error:
            raise _Unsupported from None
        h.file_size = self._size()
        return h

    def _parse_meta(self, pos: int) -> tuple[int, dict[int, str]]:
        meta: dict[int, str] = {}
        while True:
            try:
                hdr = self._need(pos, 8)
                group, elem = struct.unpack_from("<HH", hdr, 0)
                if group != 0x0002:
                    return pos, meta
                vr = bytes(hdr[4:6])
                if vr in _LONG_VRS:
                    length = struct.unpack_from("<I", self._need(pos + 8, 4), 0)[0]
                    pos += 12
                else:
                    length = struct.unpack_from("<H", hdr, 6)[0]
                    pos += 8
                if length == _UNDEFINED:
                    raise _Unsupported
                if elem in (0x0002, 0x0010):
                    meta[(group << 16) | elem] = bytes(self._need(pos, length)).decode("ascii", "replace").strip(
                        " \x00"
                    )
            except _Truncated:
                raise NotDicomError("truncated file: ends inside the file meta information") from None
            pos += length

    def _element_header(self, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
        """(tag, vr, length, value position) of the element at pos."""
        hdr = self._need(pos, 8)
        group, elem = struct.unpack_from("<HH", hdr, 0)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            return tag, b"", struct.unpack_from("<I", hdr, 4)[0], pos + 8
        vr = bytes(hdr[4:6])
        if vr in _LONG_VRS:
            return tag, vr, struct.unpack_from("<I", self._need(pos + 8, 4), 0)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise _Unsupported  # not explicit VR after all
        return tag, vr, struct.unpack_from("<H", hdr, 6)[0], pos + 8

    def _parse_dataset(self, pos: int, implicit: bool, h: DicomHeader) -> None:
        last_tag = -1
        while True:
            try:
                tag, vr, length, vpos = self._element_header(pos, implicit)
            except _Truncated:
                if pos == self._size():
                    return  # dataset ends without pixel data
                raise
            if tag <= last_tag:
                raise _Unsupported  # out-of-order tags: let pydicom judge
            last_tag = tag
            if tag == _PIXEL_DATA:
                h.has_pixel_data = True
                if length != _UNDEFINED:
                    h.pixel_offset, h.pixel_length = vpos, length
                return
            if tag > _PIXEL_DATA:
                return
            if length == _UNDEFINED:
                pos = self._skip_sequence(vpos, implicit or vr == b"UN", 0)
                continue
            want = _WANTED.get(tag)
            if want is not None:
                self._store(h, want, self._need(vpos, length), length)
            pos = vpos + length

    def _skip_sequence(self, pos: int, implicit: bool, depth: int) -> int:
        if depth > 32:
            raise _Unsupported
        while True:
            hdr = self._need(pos, 8)
            tag = (struct.unpack_from("<H", hdr, 0)[0] << 16) | struct.unpack_from("<H", hdr, 2)[0]
            length = struct.unpack_from("<I", hdr, 4)[0]
            pos += 8
            if tag == _SEQ_END:
                return pos
            if tag != _ITEM:
                raise _Unsupported
            if length != _UNDEFINED:
                pos += length
                continue
            while True:  # elements of an undefined-length item
                etag, vr, elen, vpos = self._element_header(pos, implicit)
                if etag == _ITEM_END:
                    pos = vpos
                    break
                if elen == _UNDEFINED:
                    pos = self._skip_sequence(vpos, implicit or vr == b"UN", depth + 1)
                else:
                    pos = vpos + elen

    @staticmethod
    def _store(h: DicomHeader, want: tuple[str, str], raw, length: int) -> None:
        name, kind = want
        if kind == "u":
            if length > 2:
                raise NotDicomError(f"{_US_KEYWORDS[name]} is {length} bytes long: one 2-byte value expected")
            if length == 2:
                setattr(h, name, struct.unpack_from("<H", raw, 0)[0])
            return
        if name in _TEXT_NEEDING_CHARSET and h.specific_character_set and any(
            c.strip() not in ("", "ISO_IR 6", "ISO_IR 100", "ISO_IR 192") for c in h.specific_character_set
        ):
            text = _decode_charset(bytes(raw), h.specific_character_set)
        elif name in _TEXT_NEEDING_CHARSET and "ISO_IR 192" in h.specific_character_set:
            text = bytes(raw).decode("utf-8", "replace")
        else:
            text = bytes(raw).decode("latin-1")
        text = text.strip(" \x00")
        if not text:
            return
        if kind == "s":
            setattr(h, name, text)
        elif kind == "m":
            setattr(h, name, tuple(v.strip() for v in text.split("\\")))
        else:
            setattr(h, name, _floats(text))


class _Truncated(Exception):
    pass


def _floats(text: str) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in text.split("\\") if v.strip())
    except ValueError:
        return None


def _clip(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decode_charset(raw: bytes, charsets: tuple[str, ...]) -> str:
    from pydicom.charset import decode_bytes

    try:
        return decode_bytes(raw, list(charsets), set())
    except Exception:  # noqa: BLE001 - display text only; never fail a scan on it
        return raw.decode("latin-1")


def _read_header_pydicom(path: str) -> DicomHeader:
    pydicom.config.convert_wrong_length_to_UN = True
    try:
        ds = read_dataset(path, defer_size=256)
    except NotDicomError:
        raise
    except InvalidDicomError:
        raise NotDicomError("not a DICOM file") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on broken files
        raise NotDicomError(f"unreadable DICOM header: {_first_line(exc)}") from None
    h = header_from_dataset(ds, path)
    if h.transfer_syntax == DEFLATED_LE:
        h.pixel_length = len(ds.PixelData) if "PixelData" in ds else -1
    return h


def read_dataset(path: str, *, defer_size: int | None = None) -> pydicom.Dataset:
    """pydicom's dcmread, except that a deflated data set is inflated with a bound (see `inflate_dataset`).

    Raises:
        NotDicomError: the file is not a regular file, or a deflated one inflates past the bound.
    """
    with open_regular(path) as fh:
        head = fh.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            fh.seek(0)
            try:
                pos, meta = _FastParser(fh, path)._parse_meta(132)
            except (_Unsupported, struct.error):
                pos, meta = -1, {}
            if meta.get(0x00020010) == DEFLATED_LE:
                data = inflate_dataset(fh, pos)
                file_meta = pydicom.filereader.read_file_meta_info(path)
                ds = pydicom.filereader.read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True)
                return pydicom.dataset.FileDataset(path, ds, preamble=head[:128], file_meta=file_meta,
                                                   is_implicit_VR=False, is_little_endian=True)
            if pos < 0:
                syntax = str(pydicom.filereader.read_file_meta_info(path).get("TransferSyntaxUID", ""))
                if syntax == DEFLATED_LE:
                    raise NotDicomError("deflated file whose file meta information cannot be parsed")
    return pydicom.dcmread(path, defer_size=defer_size)


def inflate_dataset(fh, offset: int) -> bytes:
    """The inflated data set of a Deflated Explicit VR Little Endian file whose meta information ends at `offset`.

    Inflation is streamed and stops at MAX_INFLATED_BYTES, or at INFLATE_MARGIN_BYTES more than the pixel data
    that Rows x Columns x frames declare, as soon as those are seen: a deflate bomb costs bounded memory.

    Raises:
        NotDicomError: the data set inflates past the bound, or is not a valid deflate stream.
    """
    fh.seek(offset)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    limit, declared, probe_at = MAX_INFLATED_BYTES, -1, 1 << 16
    try:
        while not inflater.eof:
            data = fh.read(1 << 16)
            if not data:
                break
            while data and not inflater.eof:
                out += inflater.decompress(data, min(limit + 1 - len(out), 1 << 22))
                data = inflater.unconsumed_tail
                if declared < 0 and len(out) >= probe_at:
                    probe_at *= 2
                    declared = _declared_pixel_bytes(bytes(out))
                    if declared >= 0:
                        limit = min(MAX_INFLATED_BYTES, declared + INFLATE_MARGIN_BYTES)
                if len(out) > limit:
                    what = (f"{declared:,} bytes of pixel data declared" if declared >= 0 else "no image size seen")
                    raise NotDicomError(
                        f"deflated data set inflates to more than {limit:,} bytes ({what}; the file has "
                        f"{fh.seek(0, 2):,} bytes): refused as a deflate bomb or a corrupt file"
                    )
    except zlib.error as exc:
        raise NotDicomError(f"corrupt deflated data set: {exc}") from None
    return bytes(out)


def _declared_pixel_bytes(prefix: bytes) -> int:
    """Bytes of pixel data declared by the start of an inflated data set (-1 until Rows, Columns and
    BitsAllocated are seen)."""
    h = DicomHeader(path="")
    try:
        _FastParser(io.BytesIO(prefix), "")._parse_dataset(0, False, h)
    except Exception:  # noqa: BLE001 - a prefix ends mid-element; what was read before is enough
        pass
    if h.rows <= 0 or h.columns <= 0 or h.bits_allocated <= 0:
        return -1
    return h.rows * h.columns * h.frames * max(1, h.samples_per_pixel) * -(-h.bits_allocated // 8)


def header_from_dataset(ds: pydicom.Dataset, path: str) -> DicomHeader:
    """A DicomHeader from a pydicom dataset (used for the slow path and for tests)."""
    h = DicomHeader(path=path)
    meta = getattr(ds, "file_meta", None)
    h.transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    if h.transfer_syntax == "" and not getattr(ds, "is_implicit_VR", True):
        h.transfer_syntax = EXPLICIT_VR_LE
    elif h.transfer_syntax == "":
        h.transfer_syntax = IMPLICIT_VR_LE
    if meta is not None and getattr(meta, "MediaStorageSOPClassUID", "") == DICOMDIR_SOP_CLASS:
        raise NotDicomError("DICOMDIR index file (the images are read from the folder itself)")
    for name, kind in _WANTED.values():
        kw = _KEYWORDS[name]
        try:
            value = ds.get(kw, None)
        except Exception:  # noqa: BLE001 - a malformed value is as good as absent
            value = None
        if value is None or value == "":
            continue
        if kind == "u":
            if isinstance(value, (list, tuple, pydicom.multival.MultiValue, bytes)) or not str(value).isdigit():
                raise NotDicomError(f"{kw} {_clip(value)} is not one unsigned number")
            setattr(h, name, int(value))
        elif kind == "m":
            vals = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
            setattr(h, name, tuple(str(v) for v in vals))
        elif kind == "f":
            vals = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
            try:
                setattr(h, name, tuple(float(v) for v in vals))
            except (TypeError, ValueError):
                pass
        else:
            if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
                value = "\\".join(str(v) for v in value)
            setattr(h, name, str(value).strip())
    if not h.sop_class_uid and meta is not None:
        h.sop_class_uid = str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
    h.has_pixel_data = "PixelData" in ds
    if not h.has_pixel_data and ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds):
        h.has_pixel_data = True
    try:
        h.file_size = os.path.getsize(path)
    except OSError:
        pass
    return h

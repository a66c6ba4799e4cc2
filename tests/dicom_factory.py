"""Builds DICOM test series whose true HU at every patient-space point is known.

Each slice samples a smooth analytic field at the LPS position of each pixel, so a
loader's output can be checked voxel by voxel in patient space, whatever the
geometry (tilt, gaps, obliquity).
"""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from viewer.core.volume import Volume
from viewer.dicom.write import derive_uid, save_datasets, volume_to_datasets


def field(points: np.ndarray) -> np.ndarray:
    """A smooth HU field (about -900..+500) of LPS points (..., 3)."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    return -200 + 300 * np.sin(x / 23.0) + 250 * np.cos(y / 31.0) + 150 * np.sin(z / 17.0 + 0.3)


def plane_points(ipp: Sequence[float], iop: Sequence[float], rows: int, cols: int,
                 spacing: tuple[float, float]) -> np.ndarray:
    """LPS position of each pixel (rows, cols, 3) of a plane."""
    row_dir = np.asarray(iop[:3], float)
    col_dir = np.asarray(iop[3:], float)
    r = np.arange(rows)[:, None, None] * spacing[0] * col_dir
    c = np.arange(cols)[None, :, None] * spacing[1] * row_dir
    return np.asarray(ipp, float) + r + c


def planes_datasets(
    positions: Sequence[Sequence[float]],
    iop: Sequence[float] = (1, 0, 0, 0, 1, 0),
    rows: int = 40,
    cols: int = 48,
    spacing: tuple[float, float] = (1.5, 1.25),
    *,
    hu: Callable[[np.ndarray], np.ndarray] = field,
    uid_seed: str = "test",
    series_number: int = 1,
) -> list[Dataset]:
    """One CT dataset per plane (same series), pixels sampled from `hu`."""
    template = Volume(np.zeros((1, rows, cols), np.int16), spacing=(1.0, *spacing))
    base = volume_to_datasets(template, uid_seed=uid_seed, series_number=series_number,
                              study_date="20200101")[0]
    out = []
    for k, ipp in enumerate(positions):
        ds = copy.deepcopy(base)
        values = np.rint(hu(plane_points(ipp, iop, rows, cols, spacing)))
        ds.PixelData = (values + 1024).astype(np.uint16).tobytes()
        ds.ImagePositionPatient = [float(v) for v in ipp]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.InstanceNumber = k + 1
        uid = derive_uid(uid_seed, "sop", series_number, k)
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        out.append(ds)
    return out


def axial_positions(n: int, dz: float = 2.0, z0: float = -40.0, xy: tuple[float, float] = (-30.0, -25.0)):
    return [(xy[0], xy[1], z0 + k * dz) for k in range(n)]


def write_planes(out_dir: Path, positions, iop=(1, 0, 0, 0, 1, 0), *, names=None,
                 transfer_syntax=ExplicitVRLittleEndian, **kw) -> list[Path]:
    return save_datasets(planes_datasets(positions, iop, **kw), out_dir, names=names,
                         transfer_syntax=transfer_syntax)


def truth(volume: Volume, hu: Callable[[np.ndarray], np.ndarray] = field) -> np.ndarray:
    """The analytic field at every voxel centre of `volume`."""
    k, j, i = np.indices(volume.shape)
    idx = np.stack([k, j, i], axis=-1).reshape(-1, 3)
    return hu(volume.index_to_lps(idx)).reshape(volume.shape)


def write_deflated(path: Path, ds: Dataset, *, pixel_bytes: int | None = None, chunk: int = 1 << 20) -> Path:
    """Save `ds` as Deflated Explicit VR Little Endian.

    `pixel_bytes` replaces the pixel data by that many zero bytes, streamed into the compressor: a deflate
    bomb of any inflated size costs no memory here (and about 1/1000 of its size on disk).
    """
    meta = Dataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.ImplementationClassUID = ds.file_meta.ImplementationClassUID
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, FileMetaDataset(meta), enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    header_only = Dataset()
    for elem in ds:
        if elem.tag != 0x7FE00010:
            header_only.add(elem)
    pixels = ds.PixelData
    write_dataset(body, header_only)
    n = len(pixels) if pixel_bytes is None else pixel_bytes
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with open(path, "wb") as fh:
        fh.write(b"\0" * 128 + b"DICM" + head.getvalue())
        fh.write(deflate.compress(body.getvalue()))
        fh.write(deflate.compress(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n)))
        if pixel_bytes is None:
            fh.write(deflate.compress(pixels))
        else:
            zeros = bytes(min(chunk, n))
            for start in range(0, n, chunk):
                fh.write(deflate.compress(zeros[: min(chunk, n - start)]))
        fh.write(deflate.flush())
    return path

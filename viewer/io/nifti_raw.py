"""The raw layout of a NIfTI-1 or NIfTI-2 file: byte order, voxel type and where the voxels start.

SimpleITK hides two things LungLens must see: NaN and inf voxels (read back as 0) and a file cut short by a
full disk (written without an error). Both are found from the header's own numbers.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

HEADER_BYTES = 540  # enough for either version's header


@dataclass(frozen=True)
class NiftiLayout:
    order: str  # struct byte order, "<" or ">"
    datatype: int  # NIfTI datatype code (16 float32, 64 float64, ...)
    vox_offset: int  # byte offset of the first voxel in the (inflated) file


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def open_nifti(path: str | Path) -> BinaryIO:
    """The file's (inflated) bytes, for .nii and .nii.gz alike."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def read_layout(head: bytes) -> NiftiLayout | None:
    """The layout from the first bytes of a NIfTI file (None: not a NIfTI-1/-2 header)."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 112:
            return NiftiLayout(order, struct.unpack(order + "h", head[70:72])[0],
                               int(struct.unpack(order + "f", head[108:112])[0]))
        if size == 540 and len(head) >= 176:
            return NiftiLayout(order, struct.unpack(order + "h", head[12:14])[0],
                               struct.unpack(order + "q", head[168:176])[0])
    return None


def nifti_scaled(path: str | Path) -> bool:
    """Whether `path` is a NIfTI-1 file whose voxels are scaled (scl_slope other than 0 or 1, or a non-zero
    scl_inter): stored integers that stand for real values, such as a heat map in 8 bits."""
    if not is_nifti(path):
        return False
    try:
        with open_nifti(path) as fh:
            head = fh.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        return False
    layout = read_layout(head)
    if layout is None or len(head) < 120 or struct.unpack(layout.order + "i", head[:4])[0] != 348:
        return False
    slope, inter = struct.unpack(layout.order + "ff", head[112:120])
    return (slope not in (0.0, 1.0) and slope == slope) or (inter != 0.0 and inter == inter)

"""Every DICOM attribute of a file as rows (tag, keyword, VR, value), sequences expanded, private tags kept,
and which attributes differ between the files of a series: what a DICOM tag browser shows.

`tag_rows` reads one data set; `series_tags` picks a file of a series (in the slices' order along their
normal, as the viewer stacks them) and marks the tags whose values differ from file to file.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from viewer.core.errors import LoadError

MAX_VALUE_CHARS = 200  # longer values are cut (with their length said): a tag browser line, not a hex dump


@dataclass(frozen=True)
class TagRow:
    """One attribute: `tag` as (gggg,eeee), its keyword ("" for private or unknown ones), VR, the value as text
    and its nesting `depth` (0 top level; items of a sequence one deeper). `differs`: its value is not the same
    in every file of the series (top-level attributes only)."""

    tag: str
    keyword: str
    vr: str
    value: str
    depth: int = 0
    private: bool = False
    differs: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value_text(elem: pydicom.DataElement) -> str:
    if elem.tag == 0x7FE00010 or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        raw = elem.value if isinstance(elem.value, (bytes, bytearray)) else b""
        return f"<{len(raw)} bytes>" if raw else "<binary>"
    value = elem.value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        text = "\\".join(str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= MAX_VALUE_CHARS else f"{text[:MAX_VALUE_CHARS]}... ({len(text)} characters)"


def tag_rows(ds: Dataset, depth: int = 0) -> list[TagRow]:
    """The attributes of a data set in tag order; a sequence is a row ("n items") followed by, per item, an
    "Item i" row and the item's attributes one level deeper."""
    rows: list[TagRow] = []
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        keyword = elem.keyword or elem.name  # private tags: "Private Creator", or their dictionary name
        if elem.VR == "SQ":
            items = list(elem.value or [])
            rows.append(TagRow(tag, keyword, "SQ", f"{len(items)} item(s)", depth, elem.tag.is_private))
            for i, item in enumerate(items, 1):
                rows.append(TagRow("", f"Item {i}", "", "", depth + 1, elem.tag.is_private))
                rows.extend(tag_rows(item, depth + 2))
            continue
        rows.append(TagRow(tag, keyword, str(elem.VR), _value_text(elem), depth, elem.tag.is_private))
    return rows


def read_dataset(path: str | Path, pixels: bool = True) -> Dataset:
    """A DICOM file's data set (with `pixels`, the pixel data too: its size is shown, not its bytes). A file
    without the DICM preamble is read only if it holds a SOP class or a modality (old ACR-NEMA-style files).

    Raises:
        LoadError: not a readable DICOM file (the message names it).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about odd values; the rows show them as they are
            try:
                return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
            except InvalidDicomError:
                ds = pydicom.dcmread(str(path), force=True, stop_before_pixels=not pixels)
                if "SOPClassUID" in ds or "Modality" in ds:
                    return ds
                raise LoadError(f"{path}: not a DICOM file (no DICM preamble and no DICOM header)") from None
    except LoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on a bad file
        raise LoadError(f"{path}: not a readable DICOM file ({type(exc).__name__}: {str(exc)[:200]})") from None


def slice_planes(datasets: Sequence[Dataset]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each image's position (N, 3) and unit normal (N, 3) in LPS mm, or None when one lacks them (a
    multi-frame file, an image without geometry)."""
    try:
        pos = np.array([np.asarray(ds.ImagePositionPatient, float)[:3] for ds in datasets])
        iop = np.array([np.asarray(ds.ImageOrientationPatient, float)[:6] for ds in datasets])
    except (AttributeError, ValueError, TypeError):
        return None
    if pos.shape != (len(datasets), 3) or iop.shape != (len(datasets), 6):
        return None
    return pos, np.cross(iop[:, :3], iop[:, 3:])


def slice_order(datasets: Sequence[Dataset]) -> list[int]:
    """Indices of the files in the order the viewer stacks them: along the slice normal (ascending), by
    InstanceNumber where positions are missing."""
    planes = slice_planes(datasets)
    if planes is not None:
        return np.argsort(np.einsum("ij,ij->i", *planes), kind="stable").tolist()
    return sorted(range(len(datasets)), key=lambda i: int(getattr(datasets[i], "InstanceNumber", 0) or 0))


def series_tags(paths: Sequence[str | Path], index: int | None = None) -> tuple[str, list[TagRow]]:
    """The rows of one file of a series (`index` in the viewer's slice order; None: the first) with the
    top-level attributes whose values differ between the files (or are missing from some) marked, and that
    file's path.

    Raises:
        LoadError: a file cannot be read, or `index` lies outside the series (the message says its size).
    """
    if not paths:
        raise LoadError("no DICOM files given")
    headers = [read_dataset(p, pixels=False) for p in paths]
    order = slice_order(headers)
    if index is not None and not 0 <= index < len(order):
        raise LoadError(f"slice {index} does not exist: the series has {len(order)} slice(s) (0-{len(order) - 1})")
    path = str(paths[order[index or 0]])
    rows = tag_rows(read_dataset(path))
    differing = differing_tags(headers)
    return path, [TagRow(**{**r.as_dict(), "differs": r.depth == 0 and r.tag in differing}) for r in rows]


def differing_tags(headers: Sequence[Dataset]) -> set[str]:
    """The top-level tags, as (gggg,eeee), whose values are not the same in every data set or that some lack."""
    if len(headers) < 2:
        return set()
    values: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    for ds in headers:
        for elem in ds:
            if elem.VR != "SQ":
                tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
                values.setdefault(tag, set()).add(_value_text(elem))
                counts[tag] = counts.get(tag, 0) + 1
    return {tag for tag, v in values.items() if len(v) > 1 or counts[tag] < len(headers)}


def nearest_file(planes: tuple[np.ndarray, np.ndarray] | None, lps: Sequence[float]) -> int:
    """The index of the image whose plane (`slice_planes`) lies nearest the LPS point (mm, along its normal);
    0 without planes (a multi-frame file, a single slice)."""
    if planes is None:
        return 0
    pos, normal = planes
    return int(np.argmin(np.abs(np.einsum("ij,ij->i", np.asarray(lps, float) - pos, normal))))


def filter_rows(rows: Sequence[TagRow], text: str) -> list[TagRow]:
    """The rows whose tag, keyword or value contains `text` (case-insensitive; "" keeps all)."""
    needle = text.strip().lower()
    if not needle:
        return list(rows)
    return [r for r in rows if needle in r.tag.lower() or needle in r.keyword.lower() or needle in r.value.lower()]


def format_rows(rows: Sequence[TagRow]) -> str:
    """Rows as aligned text lines; "*" marks a tag that differs between the series' files."""
    lines = []
    for r in rows:
        mark = "*" if r.differs else " "
        lines.append(f"{mark} {'  ' * r.depth}{r.tag:11} {r.keyword[:40]:40} {r.vr:2} {r.value}".rstrip())
    return "\n".join(lines)

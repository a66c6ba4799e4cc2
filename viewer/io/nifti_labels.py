"""Save and load editable label maps as NIfTI on the CT grid, with a JSON sidecar.

A label map ``mask.nii.gz`` (uint8, the CT's geometry) comes with:

* ``mask.labels.json``: the LabelTable JSON (``format``, ``labels``) plus ``provenance`` (the CT's series,
  study and frame-of-reference UIDs, its path, shape, spacing, origin and direction, the save time) and
  ``touched`` (the file name below, or null);
* ``mask.touched.nii.gz`` (only when given): 1 where a person changed the voxel.

Every file is written to a temporary file in the same folder and renamed, so a crash leaves the old file or
the new one, never half of one. Loading checks the geometry: a mask on another grid of the same physical
space (e.g. flipped axes) is resampled by nearest neighbour; anything else is a ValueError.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np

from viewer.core.version import lunglens_version
from viewer.core.volume import Volume
from viewer.io.atomic_files import (
    StagedFile,
    WriteError,
    fsync_dir,
    image_suffix,
    remove_stale_temporaries,
    stage_image,
    write_error,
    write_text_atomic,
)
from viewer.io.label_grid import read_labels_on_grid
from viewer.labels.colors import DEFAULT_LABEL_NAMES, fallback_color
from viewer.labels.table import MAX_LABEL, LabelInfo, LabelTable

SIDECAR_SUFFIX = ".labels.json"
TOUCHED_SUFFIX = ".touched.nii.gz"
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def mask_stem(path: str | Path) -> Path:
    """`path` without its .nii.gz/.nii suffix (the base of the sidecar names); ValueError for other files."""
    path = Path(path)
    for suffix in _NIFTI_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.with_name(path.name[: -len(suffix)])
    raise ValueError(f"{path}: a label map is saved as .nii.gz or .nii")


def sidecar_path(path: str | Path) -> Path:
    stem = mask_stem(path)
    return stem.with_name(stem.name + SIDECAR_SUFFIX)


def touched_path(path: str | Path) -> Path:
    stem = mask_stem(path)
    return stem.with_name(stem.name + TOUCHED_SUFFIX)


# -- saving -------------------------------------------------------------------------------


def save_label_map_nifti(
    path: str | Path,
    labels: np.ndarray,
    table: LabelTable,
    reference: Volume,
    touched: np.ndarray | None = None,
) -> Path:
    """Write `labels` as a NIfTI on `reference`'s grid, its sidecar, and the touched mask if given.

    Values in `labels` that the table lacks are added to the sidecar as "label N". The save is one step for
    a reader: the touched mask goes to a new file name, the sidecar (which names it and holds the SHA-256 of
    the labels file) is staged as ``.<stem>.labels.json.pending``, then the labels and the sidecar are renamed
    in that order. A reader that finds labels newer than the sidecar takes the pending sidecar whose hash
    matches (`load_label_map_nifti`), so old labels never meet a new touched mask or the reverse. Touched
    masks of earlier saves are removed after the switch. Raises WriteError (an OSError) naming the file when
    the disk is full or a write comes back short; the previous files stay as they were.
    """
    path = Path(path)
    mask_stem(path)
    data = check_label_array(labels, reference.shape)
    if touched is not None:
        touched = _check_touched(touched, reference.shape)
    table = table_for_values(table, present_values(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(_pending_path(path))
    remove_stale_temporaries(path, pattern=re.escape(mask_stem(path).name) + _TOUCHED_RE.pattern)
    pending = _pending_path(path)
    new_files: list[Path] = []  # removed again if the save fails before the labels are switched
    labels_file: StagedFile | None = None
    switched = False
    touched_name = None
    try:
        if touched is not None:
            tpath = _new_touched_path(path)
            new_files.append(tpath)
            write_label_image(tpath, touched.astype(np.uint8), reference)
            touched_name = tpath.name
            _copy_mode(path, tpath)  # a companion of an existing map takes the map's mode
        labels_file = _stage_label_image(path, data, reference)
        doc = sidecar_document(table, reference, touched=touched_name, mask_dir=path.parent)
        doc["labels_file"] = {"name": path.name, "sha256": _sha256(labels_file.tmp)}
        new_files.append(pending)
        write_text_atomic(pending, json.dumps(doc, indent=2))
        _copy_mode(sidecar_path(path), pending)
        labels_file.commit()
        switched = True
        os.replace(pending, sidecar_path(path))
        fsync_dir(path.parent)
    except BaseException as exc:
        if labels_file is not None and not switched:
            labels_file.discard()
        if not switched:
            for f in new_files:
                f.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _named(path, exc) from None
        raise
    _remove_other_touched(path, keep=touched_name)
    return path


def _named(path: Path, exc: OSError) -> WriteError:
    """The error of a failed save, naming the label map even when one of its other files failed."""
    if not isinstance(exc, WriteError):
        return write_error(path, exc.strerror or str(exc))
    if str(exc).startswith(f"{path}:"):
        return exc
    return WriteError(f"{path}: not saved: {exc.problem} (while writing its companion files); the previous "
                      "files are untouched", exc.problem)


def _copy_mode(source: Path, target: Path) -> None:
    try:
        os.chmod(target, stat.S_IMODE(source.stat().st_mode))
    except FileNotFoundError:
        pass


def _pending_path(path: Path) -> Path:
    side = sidecar_path(path)
    return side.with_name(f".{side.name}.pending")


def _new_touched_path(path: Path) -> Path:
    stem = mask_stem(path)
    while True:
        candidate = stem.with_name(f"{stem.name}.touched.{secrets.token_hex(4)}.nii.gz")
        if not candidate.exists():
            return candidate


def is_touched_file(name: str) -> bool:
    """Whether a file name is a touched mask that `save_label_map_nifti` writes (any version)."""
    return re.search(_TOUCHED_RE.pattern + "$", name, re.IGNORECASE) is not None


_TOUCHED_RE = re.compile(r"\.touched(\.[0-9a-f]{8})?\.nii(\.gz)?", re.IGNORECASE)


def _remove_other_touched(path: Path, keep: str | None) -> None:
    """Delete the touched masks of earlier saves of `path` (not the one the sidecar now names)."""
    stem = mask_stem(path).name
    removed = False
    for entry in path.parent.iterdir():
        name = entry.name
        if name == keep or not name.startswith(stem) or not _TOUCHED_RE.fullmatch(name[len(stem):]):
            continue
        try:
            entry.unlink()
            removed = True
        except OSError:
            pass
    if removed:
        fsync_dir(path.parent)


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_label_array(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`labels` as uint8 after checking shape, type and range (ValueError naming the problem)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"a label map is 3D, got an array of shape {labels.shape}")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"label map shape {labels.shape} does not match the CT {tuple(shape)}")
    if labels.dtype == np.uint8:
        return labels
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"label values must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > MAX_LABEL):
        raise ValueError(f"label values must lie in 0..{MAX_LABEL}, got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)


def _check_touched(touched: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    touched = np.asarray(touched)
    if tuple(touched.shape) != tuple(shape):
        raise ValueError(f"touched mask shape {touched.shape} does not match the CT {tuple(shape)}")
    return touched.astype(bool, copy=False)


def present_values(labels: np.ndarray) -> list[int]:
    """The non-zero values in a uint8 label map."""
    counts = np.bincount(labels.ravel(), minlength=MAX_LABEL + 1)
    return [int(v) for v in np.flatnonzero(counts) if v != 0]


def table_for_values(table: LabelTable | None, values: list[int]) -> LabelTable:
    """A copy of `table` with a row for every value in `values` it lacks (default name, or "label N")."""
    out = table.copy() if table is not None else LabelTable()
    used = {i.name.lower() for i in out}
    for v in values:
        if v in out:
            continue
        name = DEFAULT_LABEL_NAMES.get(v, f"label {v}")
        if name.lower() in used:
            name = f"label {v}"
        n = 2
        while name.lower() in used:
            name, n = f"label {v} ({n})", n + 1
        out.add(LabelInfo(v, name, fallback_color(v)))
        used.add(name.lower())
    return out


def sidecar_document(
    table: LabelTable, reference: Volume, *, touched: str | None, mask_dir: str | Path | None = None
) -> dict[str, Any]:
    """The sidecar JSON: the label table, where it was drawn (provenance) and the touched file name.

    ``provenance.ct_path`` is the CT's absolute path, ``ct_path_relative`` the same relative to `mask_dir`
    (so a folder of CTs and masks can move together).
    """
    md = reference.metadata
    ct = reference.source
    relative = None
    if ct and os.path.exists(ct):
        ct = os.path.abspath(ct)
        if mask_dir is not None:
            try:
                relative = os.path.relpath(ct, os.path.abspath(mask_dir))
            except ValueError:  # another drive on Windows
                relative = None
    return {
        **table.to_dict(),
        "provenance": {
            "software": f"LungLens {lunglens_version()}",
            "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "series_instance_uid": md.series_instance_uid,
            "study_instance_uid": md.study_instance_uid,
            "frame_of_reference_uid": md.frame_of_reference_uid,
            "ct_path": ct,
            "ct_path_relative": relative,
            "shape_zyx": list(reference.shape),
            "spacing_zyx_mm": list(reference.spacing),
            "origin_lps_mm": list(reference.origin),
            "direction": reference.direction.tolist(),
        },
        "touched": touched,
    }


def write_label_image(path: str | Path, array: np.ndarray, reference: Volume) -> Path:
    """Write a uint8 array with `reference`'s geometry as .nii/.nii.gz, atomically and verified."""
    return _stage_label_image(Path(path), array, reference).commit()


def _stage_label_image(path: Path, array: np.ndarray, reference: Volume) -> StagedFile:
    data = np.ascontiguousarray(array, dtype=np.uint8)
    image = reference.with_array(data).to_sitk()
    return stage_image(path, image, data, compress=image_suffix(path) == ".nii.gz")


# -- loading ------------------------------------------------------------------------------


def load_label_map_nifti(
    path: str | Path,
    reference: Volume,
    *,
    allow_other_series: bool = False,
    allow_resample: bool = False,
    warnings: list[str] | None = None,
) -> tuple[np.ndarray, LabelTable, np.ndarray | None]:
    """Read a label map saved by `save_label_map_nifti` (or any integer NIfTI mask) onto `reference`'s grid.

    Returns (uint8 labels, table, touched bool mask or None). Without a sidecar the table gets default names;
    values in the image but not in the sidecar are added. A sidecar naming another series than `reference`'s
    is refused unless `allow_other_series`. The sidecar is trusted only for the labels file whose SHA-256 it
    holds: after a save killed between its two renames the pending sidecar of the new labels is taken; a
    labels file changed by another program keeps the table but loses the touched mask (noted in `warnings`).
    A mask on another voxel grid of the same space is refused unless `allow_resample`.

    Raises:
        ValueError: unreadable file, not 3D, non-integer or out-of-range values, another geometry, a bad sidecar.
    """
    path = Path(path)
    labels = read_labels_on_grid(path, reference, strict=True, allow_resample=allow_resample)
    doc = _current_sidecar(path, warnings)
    table = LabelTable()
    touched = None
    if doc is not None:
        table = _table_from_sidecar(sidecar_path(path), doc)
        _check_provenance(path, doc.get("provenance"), reference, allow_other_series)
        name = doc.get("touched")
        if name:
            touched_file = path.with_name(Path(str(name)).name)
            if not touched_file.is_file():
                raise ValueError(f"{sidecar_path(path)} names the touched mask {name}, which is missing")
            touched = read_labels_on_grid(touched_file, reference, strict=True, allow_resample=allow_resample) > 0
    elif touched_path(path).is_file():
        touched = read_labels_on_grid(touched_path(path), reference, strict=True,
                                      allow_resample=allow_resample) > 0
    return labels, table_for_values(table, present_values(labels)), touched


def _current_sidecar(path: Path, warnings: list[str] | None) -> dict[str, Any] | None:
    """The sidecar that belongs to the labels file at `path` now (see `save_label_map_nifti`)."""
    doc = _read_sidecar(path)
    if doc is None or "labels_file" not in doc:
        return doc  # no sidecar, or one written before sidecars held the labels' hash
    actual = _sha256(path)
    if _recorded_hash(sidecar_path(path), doc) == actual:
        return doc
    pending = _pending_path(path)
    if pending.is_file():
        newer = _read_sidecar_file(pending)
        if _recorded_hash(pending, newer) == actual:
            return newer  # the save was killed after renaming the labels: its sidecar is the pending one
    note = (f"{path} was changed after LungLens saved it: its label names are kept, its touched mask "
            "(voxels a person changed) is not")
    if warnings is not None:
        warnings.append(note)
    return {**doc, "touched": None}


def _recorded_hash(side: Path, doc: dict[str, Any]) -> str | None:
    entry = doc.get("labels_file")
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise ValueError(f"{side}: 'labels_file' must be an object with a 'sha256' string")
    return entry["sha256"]


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    return _read_sidecar_file(side)


MAX_SIDECAR_BYTES = 4 << 20  # a label table of 255 labels is a few tens of kB


def _read_sidecar_file(side: Path) -> dict[str, Any]:
    """A sidecar parsed and checked against its schema (ValueError naming the file and the problem)."""
    try:
        if side.stat().st_size > MAX_SIDECAR_BYTES:
            raise ValueError(f"{side}: not a LungLens label sidecar ({side.stat().st_size} bytes; at most "
                             f"{MAX_SIDECAR_BYTES})")
        doc = json.loads(side.read_text(encoding="utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{side}: not a LungLens label sidecar (JSON nested too deeply)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        text = str(exc) if str(exc).startswith(str(side)) else f"{side}: cannot read the label sidecar: {exc}"
        raise ValueError(text) from None
    problem = sidecar_problem(doc)
    if problem:
        raise ValueError(f"{side}: not a valid LungLens label sidecar: {problem}")
    return doc


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a sidecar may hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


def _numbers(v: Any, n: int | None = None) -> bool:
    return isinstance(v, list) and (n is None or len(v) == n) and all(_is_number(x) for x in v)


_PROVENANCE_STRINGS = ("software", "saved", "series_instance_uid", "study_instance_uid", "frame_of_reference_uid",
                       "ct_path", "ct_path_relative")


def sidecar_problem(doc: Any) -> str | None:
    """What is wrong with a label sidecar document (None when it follows the schema)."""
    if not isinstance(doc, dict):
        return "expected a JSON object"
    labels = doc.get("labels")
    if not isinstance(labels, list):
        return "expected a 'labels' list"
    if len(labels) > MAX_LABEL:
        return f"{len(labels)} labels; at most {MAX_LABEL}"
    if "format" in doc and not isinstance(doc["format"], str):
        return "'format' must be a string"
    for n, row in enumerate(labels):
        if not isinstance(row, dict):
            return f"label entry {n} is not an object"
        if not _is_int(row.get("value"), 1, MAX_LABEL):
            return f"label entry {n}: 'value' must be an integer 1..{MAX_LABEL}"
        if not isinstance(row.get("name"), str) or len(row["name"]) > 200:
            return f"label entry {n}: 'name' must be a string of at most 200 characters"
        color = row.get("color")
        if not (isinstance(color, list) and len(color) == 3 and all(_is_int(c, 0, 255) for c in color)):
            return f"label entry {n}: 'color' must be three integers 0..255"
        if "opacity" in row and not (_is_number(row["opacity"]) and 0 <= row["opacity"] <= 1):
            return f"label entry {n}: 'opacity' must be a number 0..1"
        for key in ("visible", "locked"):
            if key in row and not isinstance(row[key], bool):
                return f"label entry {n}: '{key}' must be true or false"
    touched = doc.get("touched")
    if touched is not None and (not isinstance(touched, str) or Path(touched).name != touched):
        return "'touched' must be a file name beside the label map, or null"
    entry = doc.get("labels_file")
    if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)):
        return "'labels_file' must be an object with a 'sha256' string"
    prov = doc.get("provenance")
    if prov is None:
        return None
    if not isinstance(prov, dict):
        return "'provenance' must be an object"
    for key in _PROVENANCE_STRINGS:
        if prov.get(key) is not None and not isinstance(prov[key], str):
            return f"provenance '{key}' must be a string"
    for key, n in (("shape_zyx", 3), ("spacing_zyx_mm", 3), ("origin_lps_mm", 3)):
        if prov.get(key) is not None and not _numbers(prov[key], n):
            return f"provenance '{key}' must be {n} finite numbers"
    direction = prov.get("direction")
    if direction is not None and not (isinstance(direction, list) and len(direction) == 3
                                      and all(_numbers(r, 3) for r in direction)):
        return "provenance 'direction' must be a 3x3 matrix of finite numbers"
    return None


def _table_from_sidecar(side: Path, doc: dict[str, Any]) -> LabelTable:
    try:
        return LabelTable.from_dict(doc)
    except ValueError as exc:
        raise ValueError(f"{side}: {exc}") from None


def _check_provenance(path: Path, prov: Any, reference: Volume, allow_other_series: bool) -> None:
    if not isinstance(prov, dict) or allow_other_series:
        return
    theirs = str(prov.get("series_instance_uid") or "")
    ours = reference.metadata.series_instance_uid
    if theirs and ours and theirs != ours:
        raise ValueError(f"{path}: drawn on series {theirs}, not on this CT ({ours})")


def read_sidecar(path: str | Path) -> dict[str, Any] | None:
    """The sidecar document of the label map at `path` (None without one); ValueError when unreadable."""
    return _read_sidecar(Path(path))

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
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from viewer.errors import LoadError
from viewer.io import read_labels_on_grid, read_volume_file
from viewer.label_table import MAX_LABEL, LabelInfo, LabelTable, fallback_color
from viewer.layers import DEFAULT_LABEL_NAMES
from viewer.volume import Volume

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

    Values in `labels` that the table lacks are added to the sidecar as "label N". A stale touched file of an
    earlier save is removed when `touched` is None.
    """
    path = Path(path)
    mask_stem(path)
    data = check_label_array(labels, reference.shape)
    if touched is not None:
        touched = _check_touched(touched, reference.shape)
    table = table_for_values(table, present_values(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    tpath = touched_path(path)
    if touched is not None:
        write_label_image(tpath, touched.astype(np.uint8), reference)
    write_label_image(path, data, reference)
    doc = sidecar_document(table, reference, touched=tpath.name if touched is not None else None,
                           mask_dir=path.parent)
    write_text_atomic(sidecar_path(path), json.dumps(doc, indent=2))
    if touched is None and tpath.exists():
        tpath.unlink()
    return path


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
            "software": f"LungLens {_version()}",
            "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
    """Write a uint8 array with `reference`'s geometry as .nii/.nii.gz, atomically."""
    path = Path(path)
    image = reference.with_array(np.ascontiguousarray(array, dtype=np.uint8)).to_sitk()
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    atomic_write(path, suffix, lambda tmp: sitk.WriteImage(image, tmp, useCompression=suffix == ".nii.gz"))
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, ".tmp", write)
    return path


def atomic_write(path: Path, suffix: str, write: Callable[[str], None]) -> None:
    """Call `write` with a temporary file name beside `path` (ending in `suffix`), then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- loading ------------------------------------------------------------------------------


def load_label_map_nifti(
    path: str | Path, reference: Volume, *, allow_other_series: bool = False
) -> tuple[np.ndarray, LabelTable, np.ndarray | None]:
    """Read a label map saved by `save_label_map_nifti` (or any integer NIfTI mask) onto `reference`'s grid.

    Returns (uint8 labels, table, touched bool mask or None). Without a sidecar the table gets default names;
    values in the image but not in the sidecar are added. A sidecar naming another series than `reference`'s
    is refused unless `allow_other_series`.

    Raises:
        ValueError: unreadable file, not 3D, non-integer or out-of-range values, another geometry, a bad sidecar.
    """
    path = Path(path)
    labels = read_label_image(path, reference)
    doc = _read_sidecar(path)
    table = LabelTable()
    touched = None
    if doc is not None:
        try:
            table = LabelTable.from_dict(doc)
        except ValueError as exc:
            raise ValueError(f"{sidecar_path(path)}: {exc}") from None
        _check_provenance(path, doc.get("provenance"), reference, allow_other_series)
        name = doc.get("touched")
        if name:
            touched_file = path.with_name(Path(str(name)).name)
            if not touched_file.is_file():
                raise ValueError(f"{sidecar_path(path)} names the touched mask {name}, which is missing")
            touched = read_label_image(touched_file, reference) > 0
    elif touched_path(path).is_file():
        touched = read_label_image(touched_path(path), reference) > 0
    return labels, table_for_values(table, present_values(labels)), touched


def read_label_image(path: str | Path, reference: Volume) -> np.ndarray:
    """A 3D integer image file as uint8 on `reference`'s grid (nearest neighbour when only the grid differs)."""
    path = Path(path)
    _check_dimension(path)
    try:
        image = read_volume_file(path)
    except LoadError as exc:
        raise ValueError(str(exc)) from None
    _check_values(path, image.array)
    if image.same_grid(reference, tol=1e-3):
        data = image.array
    else:
        problem = same_space_problem(image, reference)
        if problem:
            raise ValueError(f"{path}: not on the CT's grid: {problem}")
        try:
            data = read_labels_on_grid(path, reference)
        except LoadError as exc:
            raise ValueError(str(exc)) from None
    return np.ascontiguousarray(data, dtype=np.uint8)


def _check_dimension(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
        raise ValueError(f"{path}: cannot read the label map: {first.strip()}") from None
    size = reader.GetSize()
    if len(size) == 4 and size[3] == 1:
        return
    if len(size) != 3:
        raise ValueError(f"{path}: a {len(size)}D image of size {size}; a label map is 3D")


def _check_values(path: Path, array: np.ndarray) -> None:
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"{path}: not a label map (non-integer values)")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{path}: not a label map (voxel type {array.dtype})")
    if array.size and (array.min() < 0 or array.max() > MAX_LABEL):
        raise ValueError(f"{path}: label values must lie in 0..{MAX_LABEL}, found {array.min():g}..{array.max():g}")


def same_space_problem(image: Volume, reference: Volume) -> str | None:
    """Why `image` does not cover the same physical box as `reference` (None when it does).

    Same space: the axes are a signed permutation of each other (e.g. a flipped or transposed grid) and the
    outer boxes of the voxels agree within half a reference voxel.
    """
    overlap = np.abs(image.direction.T @ reference.direction)
    if not np.allclose(np.sort(overlap.ravel())[-3:], 1.0, atol=1e-3):
        return (f"orientation {image.orientation_code()} is not a flip or permutation of the CT's "
                f"{reference.orientation_code()}")
    lo_a, hi_a = _box(image)
    lo_b, hi_b = _box(reference)
    tol = 0.5 * min(reference.spacing)
    if np.max(np.abs(lo_a - lo_b)) > tol or np.max(np.abs(hi_a - hi_b)) > tol:
        return (f"it covers LPS {np.round(lo_a, 1).tolist()}..{np.round(hi_a, 1).tolist()} mm, the CT "
                f"{np.round(lo_b, 1).tolist()}..{np.round(hi_b, 1).tolist()} mm (shape {image.shape} vs "
                f"{reference.shape})")
    return None


def _box(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(vol.shape, dtype=float)
    corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5) for c in (-0.5, n[2] - 0.5)])
    pts = vol.index_to_lps(corners)
    return pts.min(axis=0), pts.max(axis=0)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{side}: cannot read the label sidecar: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{side}: not a LungLens label sidecar (expected a JSON object)")
    return doc


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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lunglens")
    except Exception:  # noqa: BLE001 - a source tree without metadata
        return "unknown"

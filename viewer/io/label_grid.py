"""Label voxels from a volume file onto a CT's grid: the one reader and its checks.

`read_labels_on_grid` reads any mask file (NIfTI, NRRD, MetaImage) as labels on the CT's voxels. Two
policies share its checks (readable, one value per voxel, integer values, overlap with the CT):

* lenient (default): any overlapping grid is resampled by nearest neighbour; values 0..65535; LoadError.
* strict (an editable label map): 3D, finite integer values 0..MAX_LABEL (NaN caught in the raw NIfTI data),
  the same physical space as the CT, resampled only if `allow_resample` or a flip/permutation of the CT's
  grid; uint8; ValueError.

`read_overlay_on_grid` takes float maps too (a heat map) and gives labels for everything else.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.core.errors import LoadError
from viewer.core.volume import Volume
from viewer.io.nifti_raw import HEADER_BYTES, is_nifti, nifti_scaled, open_nifti, read_layout
from viewer.io.volumes import read_volume_file
from viewer.labels.table import MAX_LABEL


def read_labels_on_grid(path: str | Path, reference: Volume, *, strict: bool = False,
                        allow_resample: bool = False) -> np.ndarray:
    """A label/mask volume file on `reference`'s grid.

    Lenient (default): resampled (nearest neighbour) onto the CT's grid by its geometry, as uint8/uint16;
    masks written on the CT's own grid come back voxel for voxel. A file that does not overlap the CT
    (another patient's or study's) is refused with both boxes. Raises LoadError.

    Strict (an editable label map): a grid that is a flip or permutation of the CT's with the same voxels
    is re-indexed exactly; any other grid of the same space (another voxel size) is resampled by nearest
    neighbour only if `allow_resample`; another space is refused. Returns uint8; raises ValueError.
    """
    if strict:
        return _label_map_on_grid(Path(path), reference, allow_resample)
    labels = read_volume_file(path)
    if labels.array.dtype.kind == "f" and not _integral(labels.array):
        raise LoadError(f"{path}: not a label map (non-integer values)")
    return _labels_on_grid(path, labels, reference)


def read_overlay_on_grid(path: str | Path, reference: Volume) -> tuple[str, np.ndarray]:
    """An overlay file on `reference`'s grid: ("labels", uint8/uint16 labels) for integer values, or
    ("heatmap", float32 map, linear interpolation) for a float map with fractional values, or a NIfTI whose
    voxels are scaled (such as the 8-bit heatmap.nii.gz `lunglens screen` writes, even when it is all zero).
    Non-finite values of a map become its minimum.

    Raises:
        LoadError: unreadable, not one value per voxel, or no overlap with `reference` (the message names
            both LPS boxes and frames of reference).
    """
    image = read_volume_file(path)
    if image.array.dtype.kind != "f" or (_integral(image.array) and not nifti_scaled(path)):
        return "labels", _labels_on_grid(path, image, reference)
    array = image.array
    finite = np.isfinite(array)
    if not finite.any():
        raise LoadError(f"{path}: no finite value in the map")
    if not finite.all():
        array = np.where(finite, array, array[finite].min())
    _check_overlap(path, image, reference, "map")
    if image.same_grid(reference, tol=1e-3):
        return "heatmap", np.ascontiguousarray(array, dtype=np.float32)
    res = sitk.Resample(image.with_array(array.astype(np.float32)).to_sitk(), reference.to_sitk(), sitk.Transform(),
                        sitk.sitkLinear, float(array[finite].min()), sitk.sitkFloat32)
    return "heatmap", sitk.GetArrayFromImage(res)


def same_space_problem(image: Volume, reference: Volume) -> str | None:
    """Why `image` does not cover the same physical box as `reference` (None when it does).

    Same space: the axes are a signed permutation of each other (e.g. a flipped or transposed grid) and the
    outer boxes of the voxels agree within half a reference voxel.
    """
    overlap = np.abs(image.direction.T @ reference.direction)
    if not np.allclose(np.sort(overlap.ravel())[-3:], 1.0, atol=1e-3):
        return (f"orientation {image.orientation_code()} is not a flip or permutation of the CT's "
                f"{reference.orientation_code()}")
    lo_a, hi_a = image.lps_bounds()
    lo_b, hi_b = reference.lps_bounds()
    tol = 0.5 * min(reference.spacing)
    if np.max(np.abs(lo_a - lo_b)) > tol or np.max(np.abs(hi_a - hi_b)) > tol:
        return (f"it covers LPS {np.round(lo_a, 1).tolist()}..{np.round(hi_a, 1).tolist()} mm, the CT "
                f"{np.round(lo_b, 1).tolist()}..{np.round(hi_b, 1).tolist()} mm (shape {image.shape} vs "
                f"{reference.shape})")
    return None


_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def nonfinite_nifti_voxels(path: str | Path) -> int:
    """How many voxels of a float NIfTI file are NaN or infinite, read from the raw data (0 for other files)."""
    if not is_nifti(path):
        return 0
    try:
        with open_nifti(path) as fh:
            head = fh.read(HEADER_BYTES)
            layout = read_layout(head)
            code = _NIFTI_FLOATS.get(layout.datatype) if layout is not None else None
            if layout is None or code is None:
                return 0
            dtype = np.dtype(layout.order + code)
            if layout.vox_offset > len(head):
                fh.read(layout.vox_offset - len(head))
                rest = b""
            else:
                rest = head[layout.vox_offset:]
            bad = 0
            while True:
                block = fh.read(1 << 22)
                data = rest + block
                usable = len(data) - len(data) % dtype.itemsize
                if usable:
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], dtype))))
                rest = data[usable:]
                if not block:
                    return bad
    except (OSError, EOFError, zlib.error, ValueError):
        return 0  # unreadable files are reported by the image reader


# -- the strict reading of an editable label map ---------------------------------------------


def _label_map_on_grid(path: Path, reference: Volume, allow_resample: bool) -> np.ndarray:
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
        if not allow_resample and not _same_voxels(image, reference):
            raise ValueError(
                f"{path}: voxels of {_fmt_mm(image.spacing)} mm (shape {image.shape}), the CT's are "
                f"{_fmt_mm(reference.spacing)} mm (shape {reference.shape}); a label map is read voxel for "
                "voxel: resample it on purpose (lunglens mask convert --resample) if that is what you want")
        try:
            data = _labels_on_grid(path, image, reference)
        except LoadError as exc:
            raise ValueError(str(exc)) from None
    return np.ascontiguousarray(data, dtype=np.uint8)


def _same_voxels(image: Volume, reference: Volume) -> bool:
    """Whether `image`'s grid maps onto `reference`'s voxel for voxel (axes flipped or permuted only)."""
    perm = np.abs(np.round(reference.direction.T @ image.direction))  # [i, j]: CT axis i along image axis j
    return bool(np.allclose(perm @ np.asarray(image.spacing), np.asarray(reference.spacing), rtol=1e-3)
                and np.array_equal(perm @ np.asarray(image.shape), np.asarray(reference.shape)))


def _fmt_mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{s:.4g}" for s in spacing[::-1])


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
        bad = nonfinite_nifti_voxels(path)  # ITK's NIfTI reader turns NaN and inf into 0 without a word
        if bad:
            raise ValueError(f"{path}: not a label map ({bad} voxel(s) are NaN or infinite)")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{path}: not a label map (voxel type {array.dtype})")
    if array.size and (array.min() < 0 or array.max() > MAX_LABEL):
        raise ValueError(f"{path}: label values must lie in 0..{MAX_LABEL}, found {array.min():g}..{array.max():g}")


# -- placing labels on the grid (both policies) ----------------------------------------------


def _integral(array: np.ndarray) -> bool:
    return bool(np.array_equal(array, np.round(array)))


def _labels_on_grid(path: str | Path, labels: Volume, reference: Volume) -> np.ndarray:
    if labels.same_grid(reference, tol=1e-3):
        data = labels.array
    else:
        _check_overlap(path, labels, reference, "label map")
        res = sitk.Resample(labels.to_sitk(), reference.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        data = sitk.GetArrayFromImage(res)
        if not data.any() and labels.array.any():
            raise LoadError(f"{path}: no labelled voxel of it lies inside the CT: {_frames(labels, reference)}")
    if data.min() < 0 or data.max() > 65535:
        raise LoadError(f"{path}: label values must lie in 0..65535")
    return data.astype(np.uint8 if data.max() <= 255 else np.uint16)


def _check_overlap(path: str | Path, image: Volume, reference: Volume, what: str) -> None:
    """Refuse an image whose box does not meet the CT's (it was resampled into nothing)."""
    (lo_a, hi_a), (lo_b, hi_b) = image.lps_bounds(), reference.lps_bounds()
    if np.all(np.minimum(hi_a, hi_b) > np.maximum(lo_a, lo_b)):
        return
    raise LoadError(f"{path}: the {what} does not overlap the CT (another patient or study?): "
                    f"{_frames(image, reference)}")


def _frames(image: Volume, reference: Volume) -> str:
    """Both LPS boxes (mm) and frames of reference, for a message."""
    parts = []
    for who, vol in (("it", image), ("the CT", reference)):
        lo, hi = vol.lps_bounds()
        frame = vol.metadata.frame_of_reference_uid or "none recorded"
        parts.append(f"{who} covers LPS {np.round(lo, 1).tolist()}..{np.round(hi, 1).tolist()} mm "
                     f"(frame of reference: {frame})")
    return "; ".join(parts)

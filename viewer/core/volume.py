"""The CT volume: HU voxels plus their place in patient space.

Conventions (used everywhere in LungLens):

* ``array`` is indexed ``(z, y, x)``: slice, row, column.
* ``spacing`` is per array axis, in the same ``(z, y, x)`` order, in mm.
* ``origin`` is the LPS patient-space position (x, y, z) in mm of the centre of
  voxel ``[0, 0, 0]``.
* ``direction`` is a 3x3 matrix whose column ``j`` is the LPS unit vector along
  array axis ``j`` (again ``z, y, x`` order). For an ordinary axial series it is
  ``[[0,0,1],[0,1,0],[1,0,0]]``: array z runs along patient S (+z), rows along
  P (+y) and columns along L (+x).

``affine`` maps ``(k, j, i, 1)`` array indices to LPS millimetres. SimpleITK
orders everything ``(x, y, z)``; :meth:`Volume.to_sitk` and
:func:`volume_from_sitk` translate.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import SimpleITK as sitk

AXIAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class SeriesMetadata:
    """What a viewer shows about a series; every field is optional text."""

    patient_name: str = ""
    patient_id: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_age: str = ""  # DICOM AS, e.g. 045Y
    study_instance_uid: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    accession_number: str = ""
    series_instance_uid: str = ""
    series_number: str = ""
    series_description: str = ""
    modality: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    convolution_kernel: str = ""
    kvp: str = ""
    exposure_mas: str = ""
    slice_thickness: str = ""
    body_part: str = ""
    frame_of_reference_uid: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(eq=False)
class Volume:
    """A 3D image on a regular grid in LPS patient space.

    Args:
        array: voxel values indexed (z, y, x); HU for CT.
        spacing: voxel size per array axis (z, y, x) in mm.
        origin: LPS position (x, y, z) in mm of voxel [0, 0, 0].
        direction: 3x3, column j = LPS unit vector of array axis j.
        metadata: patient/study/series description.
        warnings: what the loader noticed and corrected (shown to the user).
        source: where it was loaded from.
        files: the DICOM files it was read from (any order; the tag browser finds each slice's file by its
            position), empty for other formats.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: AXIAL_DIRECTION.copy())
    metadata: SeriesMetadata = field(default_factory=SeriesMetadata)
    warnings: tuple[str, ...] = ()
    source: str = ""
    files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {self.array.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin = tuple(float(o) for o in self.origin)  # type: ignore[assignment]
        if len(self.spacing) != 3 or min(self.spacing) <= 0 or not np.all(np.isfinite(self.spacing)):
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError("direction must be an orthonormal 3x3 matrix")
        self.direction = direction
        self.warnings = tuple(self.warnings)

    # -- geometry -----------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix taking (k, j, i, 1) array indices to LPS mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def index_to_lps(self, index: Any) -> np.ndarray:
        """LPS mm of (k, j, i) array indices; accepts one index or an (N, 3) array."""
        idx = np.asarray(index, dtype=float)
        a = self.affine
        return idx @ a[:3, :3].T + a[:3, 3]

    def lps_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The LPS box (min corner, max corner) in mm that the voxels cover, outer voxel edges included."""
        n = np.asarray(self.shape, dtype=float)
        corners = np.array([[a, b, c] for a in (-0.5, n[0] - 0.5) for b in (-0.5, n[1] - 0.5)
                            for c in (-0.5, n[2] - 0.5)])
        pts = self.index_to_lps(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def lps_to_index(self, points: Any) -> np.ndarray:
        """Fractional (k, j, i) array indices of LPS points (one or (N, 3))."""
        pts = np.asarray(points, dtype=float)
        a = self.affine
        return (pts - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Physical size along each array axis (z, y, x) in mm."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A derived volume on the same grid (a mask, a heat map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"array shape {array.shape} does not match volume {self.array.shape}")
        return replace(self, array=array, **changes)

    def same_grid(self, other: Volume, tol: float = 1e-3) -> bool:
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=tol))

    def orientation_code(self) -> str:
        """Three letters naming the patient direction the image axes x, y, z (array axes 2, 1, 0) point to, in
        the DICOM/ITK order: "LPS" for the viewer's canonical orientation, "RAS" for a NIfTI in RAS+."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = ""
        for j in (2, 1, 0):
            v = self.direction[:, j]
            ax = int(np.argmax(np.abs(v)))
            code += letters[ax][0] if v[ax] > 0 else letters[ax][1]
        return code

    # -- SimpleITK ----------------------------------------------------------------

    def to_sitk(self) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(tuple(reversed(self.spacing)))
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction[:, ::-1].flatten()))
        return img


def volume_from_sitk(image: sitk.Image, **fields: Any) -> Volume:
    """A Volume from a 3D SimpleITK image (any orientation)."""
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("expected a scalar image, got a multi-component (e.g. RGB) image")
    array = sitk.GetArrayFromImage(image)
    direction_xyz = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return Volume(
        array=array,
        spacing=tuple(reversed(image.GetSpacing())),
        origin=image.GetOrigin(),
        direction=direction_xyz[:, ::-1],
        **fields,
    )

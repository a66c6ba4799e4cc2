"""Label maps edited on the viewer's canonical grid, saved and loaded on the CT's original grid. Qt-free.

The viewer shows every CT reoriented to canonical axes (`viewer.core.reorient`); a label map drawn there is
permuted and flipped back before it is written, so the file lies voxel for voxel on the CT as it was
acquired (what other tools and the DICOM SEG's source images expect). Loading does the reverse.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from viewer.core.reorient import canonical_axes, from_canonical_array, reorient_array
from viewer.core.volume import Volume
from viewer.io.nifti_labels import load_label_map_nifti, mask_stem, save_label_map_nifti
from viewer.io.seg import load_source_datasets, read_dicom_seg, write_dicom_seg
from viewer.io.volumes import volume_suffix
from viewer.labels.table import LabelTable

FORMATS = ("nifti", "seg")


@dataclass(frozen=True)
class GridMapping:
    """The CT's original geometry and how the viewer's canonical grid maps onto it.

    `reference` carries the original geometry, metadata and source path; its array is a zero-cost
    stand-in (the CT voxels stay in the viewer, on the canonical grid).
    """

    reference: Volume
    source: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def of(cls, volume: Volume) -> GridMapping:
        """The mapping for a CT as loaded (before reorientation)."""
        stand_in = np.broadcast_to(np.zeros((), np.uint8), volume.shape)
        source, flips = canonical_axes(volume.direction)
        return cls(volume.with_array(stand_in), source, flips)

    def to_original(self, array: np.ndarray) -> np.ndarray:
        """An array on the canonical grid, on the original grid (a contiguous copy)."""
        return from_canonical_array(array, self.source, self.flips)

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """An array on the original grid, on the canonical grid (a contiguous copy)."""
        return reorient_array(array, self.source, self.flips)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        return tuple(self.reference.shape[s] for s in self.source)  # type: ignore[return-value]

    @property
    def is_dicom(self) -> bool:
        """Whether the CT came from a DICOM series (so a DICOM SEG can reference it)."""
        return is_dicom_series(self.reference)


def is_dicom_series(volume: Volume) -> bool:
    """Whether `volume` was loaded from a DICOM series that is still there (so a DICOM SEG can reference it)."""
    return bool(volume.metadata.series_instance_uid and volume.source and volume_suffix(volume.source) is None
                and os.path.exists(volume.source))


def file_format(path: str | Path) -> str:
    """"nifti" for .nii/.nii.gz, "seg" for .dcm (or a file without a suffix); ValueError otherwise."""
    name = Path(path).name.lower()
    if name.endswith((".nii.gz", ".nii")):
        return "nifti"
    if name.endswith(".dcm") or "." not in name:
        return "seg"
    raise ValueError(f"{path}: a label map is a NIfTI (.nii.gz, .nii) or a DICOM SEG (.dcm)")


def save_label_map(path: str | Path, labels: np.ndarray, table: LabelTable, mapping: GridMapping, *,
                   touched: np.ndarray | None = None,
                   algorithms: dict[int, tuple[str, str, str]] | None = None) -> Path:
    """Write a canonical-grid label map on the CT's original grid: NIfTI with sidecar, or DICOM SEG.

    The format follows the suffix (see `file_format`); the touched mask goes with a NIfTI only, `algorithms`
    (label value -> algorithm type, name, version; see `write_dicom_seg`) with a DICOM SEG only. Every file
    is written atomically. Raises ValueError (e.g. a SEG for a CT that is not a DICOM series) or OSError.
    """
    path = Path(path)
    fmt = file_format(path)
    if labels.shape != mapping.canonical_shape:
        raise ValueError(f"label map shape {labels.shape} does not match the CT {mapping.canonical_shape}")
    original = mapping.to_original(labels)
    if fmt == "nifti":
        mask_stem(path)
        t = mapping.to_original(touched) if touched is not None else None
        return save_label_map_nifti(path, original, table, mapping.reference, t)
    if not mapping.is_dicom:
        raise ValueError("a DICOM SEG references the DICOM series it was drawn on; this CT was not loaded from "
                         "DICOM: save the label map as NIfTI (.nii.gz)")
    sources = load_source_datasets(mapping.reference.source, mapping.reference)
    return write_dicom_seg(path, original, table, sources, reference=mapping.reference, algorithms=algorithms)


def read_label_map(path: str | Path, reference: Volume, *, sources: Sequence[Dataset] | None = None,
                   allow_other_series: bool = False, allow_resample: bool = False,
                   warnings: list[str] | None = None) -> tuple[np.ndarray, LabelTable, np.ndarray | None]:
    """Read a label map onto `reference`'s grid (as the CT was loaded): (uint8 labels, table, touched or None).

    A NIfTI with its sidecar (`load_label_map_nifti`; `allow_resample` applies) or, for any other file but a
    volume format, a DICOM SEG (`read_dicom_seg`, against `sources`: the CT's DICOM images, read from
    `reference.source` when not given; DICOM files are often named by UID, so no suffix is required).
    A label map of another series is refused unless `allow_other_series`. Notes for the user (e.g. a touched
    mask dropped because the labels changed after the save) go to `warnings`. Raises ValueError.
    """
    path = Path(path)
    name = path.name.lower()
    if volume_suffix(path) and not name.endswith((".nii.gz", ".nii")):
        raise ValueError(f"{path}: a label map is a NIfTI (.nii.gz, .nii) or a DICOM SEG (.dcm)")
    if name.endswith((".nii.gz", ".nii")):
        return load_label_map_nifti(path, reference, allow_other_series=allow_other_series,
                                    allow_resample=allow_resample, warnings=warnings)
    if sources is None:
        if not is_dicom_series(reference):
            raise ValueError(f"{path}: a DICOM SEG is read against its DICOM series; this CT was not loaded from "
                             "DICOM")
        sources = load_source_datasets(reference.source, reference)
    labels, table = read_dicom_seg(path, reference, sources, allow_other_series=allow_other_series)
    return labels, table, None


def load_label_map(path: str | Path, mapping: GridMapping, *, warnings: list[str] | None = None
                   ) -> tuple[np.ndarray, LabelTable, np.ndarray | None]:
    """Read a NIfTI label map or a DICOM SEG of the CT onto the canonical grid: (labels, table, touched or None).

    Notes for the user (e.g. a touched mask dropped because the labels changed after the save) go to `warnings`.
    """
    labels, table, touched = read_label_map(path, mapping.reference, warnings=warnings)
    return (mapping.to_canonical(labels), table,
            mapping.to_canonical(touched) if touched is not None else None)

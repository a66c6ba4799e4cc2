"""A labelled set of CT volumes for DeCoVNet: layout, reading and splits.

Layout (one folder per case)::

    DATA/
      <case>/ct.nii.gz        the CT in HU (any orientation; read into (z, y, x) = (S, P, L) order),
      <case>/ct/              or, instead, a folder with the CT as a DICOM series (read through
                              `reader`: `lunglens train decovnet` passes the viewer's DICOM loader)
      <case>/label.txt        COVID or NonCOVID (not needed when cases.csv names the label)
      <case>/lungs.nii.gz     optional lung mask or label map (non-zero = lung) on the CT grid;
                              without it the lungs come from `segment_lungs` (threshold method)
      <case>/lesion_mask.nii.gz  optional lesion mask on the CT grid (non-zero = lesion) of a COVID case:
                              its lesions are transplanted into other cases when training asks for it
                              (`inference.training.datasets.lesion_transplant`)
      <case>/lesions.json     optional {"lesions": [{"kind": "ggo", "bbox": [[z0, z1], [y0, y1], [x0, x1]]}]},
                              half-open voxel boxes in that same (z, y, x) order, for the hit rate
      cases.csv               optional: columns case,label[,split]
      splits.json             optional: {"train": [case, ...], "val": [...], "test": [...], "donors": [...]}
                              ("donors": COVID cases with a lesion mask that give lesions to transplants but
                              are not trained on themselves, so the network cannot learn the patient)
      dataset.json            optional: {"name": ..., "description": ...} (copied into the model card)

Splits come from splits.json, else from the split column of cases.csv, else a seeded split
stratified by label. A `reader` reads the CT (file or DICOM folder): any callable taking a path and
returning (array (z, y, x), spacing (z, y, x) mm) in that orientation; this module reads NIfTI
itself and no DICOM (it imports nothing from the viewer).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.core.types import InferenceError

CLASSES: tuple[str, ...] = ("NonCOVID", "COVID")
CT_FILE, LUNGS_FILE, LABEL_FILE, LESIONS_FILE = "ct.nii.gz", "lungs.nii.gz", "label.txt", "lesions.json"
LESION_MASK_FILE = "lesion_mask.nii.gz"
CT_DIR = "ct"  # a DICOM series, when the case has no CT_FILE
#: lesion kinds that count as COVID-like for the hit rate
COVID_LESIONS: tuple[str, ...] = ("ggo", "consolidation")

Reader = Callable[[Path], tuple[np.ndarray, tuple[float, float, float]]]


class DatasetError(InferenceError):
    """The folder does not follow the layout; the message names the file and the problem."""


@dataclass
class VolumeCase:
    """One labelled case; `load` reads its arrays."""

    name: str
    folder: Path
    label: int  # index into CLASSES
    lesion_boxes: list[tuple[tuple[int, int], ...]] = field(default_factory=list)

    @property
    def ct_path(self) -> Path:
        """The CT: `ct.nii.gz`, else the `ct/` DICOM folder."""
        return self.folder / CT_FILE if (self.folder / CT_FILE).is_file() else self.folder / CT_DIR

    def load(self, reader: Reader | None = None) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray | None]:
        """HU (z, y, x), spacing (z, y, x) mm and the lung mask (None when the case has none)."""
        path = self.ct_path
        if path.is_dir() and reader is None:
            raise DatasetError(f"{path}: a DICOM folder needs a reader (`lunglens train decovnet` has one)")
        hu, spacing = (reader or read_nifti)(path)
        lungs = None
        if (self.folder / LUNGS_FILE).is_file():
            lungs, _ = read_nifti(self.folder / LUNGS_FILE)
            if lungs.shape != hu.shape:
                raise DatasetError(f"{self.folder / LUNGS_FILE}: shape {lungs.shape} differs from the CT {hu.shape}")
            lungs = lungs > 0
        return hu, spacing, lungs

    def lesion_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """The case's lesion mask (bool, CT grid of `shape`), or None when it has none."""
        path = self.folder / LESION_MASK_FILE
        if not path.is_file():
            return None
        mask, _ = read_nifti(path)
        if mask.shape != tuple(shape):
            raise DatasetError(f"{path}: shape {mask.shape} differs from the CT {tuple(shape)}")
        return mask > 0


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A volume file as an array (z, y, x) pointing (S, P, L), with its (z, y, x) spacing."""
    try:
        image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    except RuntimeError as exc:
        raise DatasetError(f"{path}: cannot read: {str(exc).strip().splitlines()[-1]}") from None
    return sitk.GetArrayFromImage(image), tuple(float(s) for s in reversed(image.GetSpacing()))  # type: ignore[return-value]


def find_cases(root: str | Path, classes: Sequence[str] = CLASSES) -> list[VolumeCase]:
    """Every case folder under `root`, with labels and lesion boxes, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder")
    labels = {row["case"]: row["label"] for row in _csv_rows(root)}
    cases = []
    for folder in sorted(p for p in root.iterdir() if (p / CT_FILE).is_file() or (p / CT_DIR).is_dir()):
        name = folder.name
        if name in labels:
            text = labels[name]
        elif (folder / LABEL_FILE).is_file():
            text = (folder / LABEL_FILE).read_text().strip()
        else:
            raise DatasetError(f"{folder}: no {LABEL_FILE} and not listed in cases.csv")
        if text not in classes:
            raise DatasetError(f"{folder}: label {text!r} is not one of {', '.join(classes)}")
        cases.append(VolumeCase(name, folder, classes.index(text), _lesion_boxes(folder / LESIONS_FILE)))
    if not cases:
        raise DatasetError(f"{root}: no case folder with a {CT_FILE} or a {CT_DIR}/ DICOM folder")
    return cases


def split_cases(cases: Sequence[VolumeCase], root: str | Path, val_fraction: float = 0.25,
                seed: int = 0) -> dict[str, list[VolumeCase]]:
    """`train`/`val` (and `test` where listed) from splits.json, cases.csv or a seeded stratified split."""
    root = Path(root)
    by_name = {c.name: c for c in cases}
    names: dict[str, list[str]] = {}
    if (root / "splits.json").is_file():
        names = json.loads((root / "splits.json").read_text())
    else:
        for row in _csv_rows(root):
            if row.get("split"):
                names.setdefault(row["split"], []).append(row["case"])
    if names:
        unknown = [n for part in names.values() for n in part if n not in by_name]
        if unknown:
            raise DatasetError(f"{root}: split lists unknown case(s) {', '.join(unknown[:5])}")
        out = {k: [by_name[n] for n in v] for k, v in names.items()}
    else:
        rng = np.random.default_rng(seed)
        out = {"train": [], "val": []}
        for label in sorted({c.label for c in cases}):
            group = [c for c in cases if c.label == label]
            order = rng.permutation(len(group))
            n_val = int(round(len(group) * val_fraction)) if len(group) > 1 else 0
            out["val"] += [group[i] for i in order[:n_val]]
            out["train"] += [group[i] for i in order[n_val:]]
    if not out.get("train") or not out.get("val"):
        raise DatasetError(f"{root}: need cases in both the train and the val split")
    return out


def _csv_rows(root: Path) -> list[dict[str, str]]:
    path = root / "cases.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"case", "label"} <= set(rows[0]):
        raise DatasetError(f"{path}: needs the columns case,label")
    return rows


def _lesion_boxes(path: Path) -> list[tuple[tuple[int, int], ...]]:
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["lesions"]
        return [tuple((int(a), int(b)) for a, b in e["bbox"]) for e in entries if e.get("kind") in COVID_LESIONS]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: not a lesions file ({exc})") from None

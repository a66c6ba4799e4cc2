"""Collect corrected label maps and their CTs into a training set (`lunglens export-training`).

Input: DIR is searched recursively (hidden folders and the output folder are skipped) for two layouts.

1. Case folders. A folder holding a label map named ``labels.nii.gz``, ``labels.nii``, ``mask.nii.gz`` or
   ``mask.nii`` (with its LungLens sidecar ``<stem>.labels.json`` and ``<stem>.touched.nii.gz`` if saved by
   LungLens), or a DICOM SEG named ``labels.dcm`` or ``seg.dcm``, next to its CT: ``ct.nii.gz``, ``ct.nii``,
   ``image.nii.gz``, or a sub-folder ``ct/`` or ``dicom/`` holding the DICOM series (a SEG needs the DICOM
   series). The case is named after the folder (its path below DIR, "/" turned into "_").
2. Loose masks. Any other ``*.nii.gz`` / ``*.nii`` with a sidecar ``<stem>.labels.json`` whose
   ``provenance.ct_path`` (or ``ct_path_relative``, from the sidecar's folder) names an existing CT: what the
   viewer writes when it saves labels. The case is named after the mask (``<stem>``).

Output, per case ``OUT/<case>/``: ``ct.nii.gz`` (HU, the CT's geometry), ``labels.nii.gz`` (uint8 on the same
grid), ``labels.json`` (the label table, provenance, and the source CT and mask paths), ``touched.nii.gz``
(voxels a person changed) when known. ``OUT/dataset.json`` lists the cases (files, shape, spacing, voxels per
label), every label value with its name(s), the number of cases holding it and its voxel total, and the
skipped inputs with the reason. A case that cannot be read is reported and skipped, never aborts the export.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from viewer.core.errors import LoadError
from viewer.io.atomic_files import write_text_atomic
from viewer.io.label_maps import read_label_map
from viewer.io.nifti_labels import (
    SIDECAR_SUFFIX,
    is_touched_file,
    read_sidecar,
    sidecar_document,
    write_label_image,
)
from viewer.io.seg import LABEL_MAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE
from viewer.io.volumes import open_volume, write_volume

_log = logging.getLogger(__name__)  # the default `log` of `export_training`

MASK_NAMES = ("labels.nii.gz", "labels.nii", "mask.nii.gz", "mask.nii")
SEG_NAMES = ("labels.dcm", "seg.dcm")
CT_FILES = ("ct.nii.gz", "ct.nii", "image.nii.gz")
CT_FOLDERS = ("ct", "dicom")
FORMAT = "lunglens-training-set/1"


@dataclass(frozen=True)
class CaseSource:
    """One case found in the input: a CT and its label map (NIfTI or DICOM SEG)."""

    name: str
    ct: Path
    mask: Path


def find_cases(root: str | Path, out: str | Path | None = None) -> tuple[list[CaseSource], list[dict[str, str]]]:
    """The cases under `root` (see the module docstring) and the inputs skipped, with the reason."""
    root = Path(root)
    out_abs = Path(out).resolve() if out is not None else None
    cases: list[CaseSource] = []
    skipped: list[dict[str, str]] = []
    taken: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (out_abs is None or (here / d).resolve() != out_abs))
        files = set(filenames)
        mask = next((here / n for n in (*MASK_NAMES, *SEG_NAMES) if n in files), None)
        if mask is not None:
            ct = _case_ct(here, mask)
            if ct is not None:
                cases.append(CaseSource(_case_name(root, here), ct, mask))
                taken.add(mask)
            elif mask.suffix.lower() == ".dcm":
                skipped.append({"path": str(mask), "error": "a DICOM SEG needs its CT series in ct/ or dicom/ "
                                                            "next to it"})
        for name in sorted(filenames):
            path = here / name
            if name.lower().endswith(".dcm") and path != mask and _is_seg(path):
                skipped.append({"path": str(path), "error": "a DICOM SEG is read only as labels.dcm or seg.dcm "
                                                            "in a case folder beside ct/ or dicom/: rename or move "
                                                            "it"})
                continue
            if path in taken or not name.lower().endswith((".nii.gz", ".nii")) or is_touched_file(name):
                continue
            stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
            if stem + SIDECAR_SUFFIX not in files:
                if path == mask:
                    skipped.append({"path": str(path), "error": "no CT next to it (ct.nii.gz, ct/ or dicom/) "
                                                                "and no sidecar naming one"})
                continue
            try:
                ct = _sidecar_ct(path)
            except ValueError as exc:
                skipped.append({"path": str(path), "error": str(exc)})
                continue
            cases.append(CaseSource(stem, ct, path))
    return _unique_names(cases), skipped


def _is_seg(path: Path) -> bool:
    """Whether a .dcm file is a DICOM Segmentation (its SOP class only is read; unreadable files are not)."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not our business here: the CT loader reports unreadable images
        return False
    return str(ds.get("SOPClassUID", "")) in (SEGMENTATION_STORAGE, LABEL_MAP_SEGMENTATION_STORAGE)


def _case_ct(folder: Path, mask: Path) -> Path | None:
    if mask.suffix.lower() != ".dcm":
        for name in CT_FILES:
            if (folder / name).is_file():
                return folder / name
    for name in CT_FOLDERS:
        if (folder / name).is_dir():
            return folder / name
    return None


def _sidecar_ct(mask: Path) -> Path:
    doc = read_sidecar(mask) or {}
    prov = doc.get("provenance") if isinstance(doc.get("provenance"), dict) else {}
    ct = str(prov.get("ct_path") or "")
    rel = str(prov.get("ct_path_relative") or "")
    for candidate in (ct, str(mask.parent / rel) if rel else ""):
        if candidate and os.path.exists(candidate):
            return Path(candidate)
    if not ct and not rel:
        raise ValueError("its sidecar does not name the CT (provenance.ct_path)")
    raise ValueError(f"its sidecar names the CT {ct or rel}, which does not exist")


def _case_name(root: Path, folder: Path) -> str:
    rel = folder.relative_to(root).as_posix()
    return root.resolve().name if rel == "." else rel.replace("/", "_")


def _unique_names(cases: list[CaseSource]) -> list[CaseSource]:
    seen: dict[str, int] = {}
    out = []
    for c in cases:
        name = c.name or "case"
        n = seen.get(name, 0) + 1
        seen[name] = n
        out.append(CaseSource(name if n == 1 else f"{name}-{n}", c.ct, c.mask))
    return out


def export_training(
    root: str | Path,
    out: str | Path,
    *,
    log: Callable[[str], None] = _log.info,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Write the training set of every case under `root` to `out`; returns (cases written, skipped inputs)."""
    out = Path(out)
    sources, skipped = find_cases(root, out)
    rows: list[dict[str, Any]] = []
    for case in sources:
        try:
            rows.append(_export_case(case, out / case.name))
            log(f"{case.name}: {case.mask} on {case.ct}")
            for note in rows[-1]["warnings"]:
                log(f"{case.name}: warning: {note}")
        except (LoadError, ValueError, OSError, RuntimeError) as exc:
            message = str(exc)
            if message.startswith(f"{case.mask}: "):
                message = message[len(f"{case.mask}: "):]
            skipped.append({"path": str(case.mask), "error": message})
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, dict[str, Any]] = {}
    for row in rows:
        for value, entry in row["labels"].items():
            agg = labels.setdefault(value, {"names": [], "cases": 0, "voxels": 0})
            if entry["name"] not in agg["names"]:
                agg["names"].append(entry["name"])
            agg["cases"] += 1 if entry["voxels"] else 0
            agg["voxels"] += entry["voxels"]
    dataset = {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": str(Path(root).resolve()),
        "n_cases": len(rows),
        "labels": dict(sorted(labels.items(), key=lambda kv: int(kv[0]))),
        "cases": rows,
        "skipped": skipped,
    }
    write_text_atomic(out / "dataset.json", json.dumps(dataset, indent=2))
    return rows, skipped


def _export_case(case: CaseSource, folder: Path) -> dict[str, Any]:
    vol = open_volume(case.ct)
    touched = None
    notes: list[str] = []  # e.g. a touched mask not trusted because the labels changed after it was saved
    if case.mask.suffix.lower() == ".dcm" and not case.ct.is_dir():
        raise ValueError(f"{case.mask}: a DICOM SEG needs its CT as a DICOM series folder")
    labels, table, touched = read_label_map(case.mask, vol, warnings=notes)
    if touched is not None and not touched.any() and labels.any():
        notes.append("no voxel was changed by a person (its touched mask is empty): an uncorrected mask, such as "
                     "the AI's, not a correction")
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(vol, folder / "ct.nii.gz")
    write_label_image(folder / "labels.nii.gz", labels, vol)
    if touched is not None:
        write_label_image(folder / "touched.nii.gz", touched.astype(np.uint8), vol)
    elif (folder / "touched.nii.gz").exists():
        (folder / "touched.nii.gz").unlink()  # from an earlier export of this case
    doc = sidecar_document(table, vol, touched="touched.nii.gz" if touched is not None else None)
    doc["source"] = {"ct": str(case.ct.resolve()), "mask": str(case.mask.resolve())}
    write_text_atomic(folder / "labels.json", json.dumps(doc, indent=2))
    counts = np.bincount(labels.ravel(), minlength=256)
    return {
        "case": case.name,
        "ct": f"{case.name}/ct.nii.gz",
        "labels_file": f"{case.name}/labels.nii.gz",
        "table": f"{case.name}/labels.json",
        "touched": f"{case.name}/touched.nii.gz" if touched is not None else None,
        "touched_voxels": int(touched.sum()) if touched is not None else None,
        "source_ct": str(case.ct),
        "source_mask": str(case.mask),
        "warnings": notes,
        "shape_zyx": list(vol.shape),
        "spacing_zyx_mm": [round(s, 6) for s in vol.spacing],
        "labels": {str(i.value): {"name": i.name, "voxels": int(counts[i.value])} for i in table},
    }

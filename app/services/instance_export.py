"""COVID-CT-Mask-Net's lesion instances as a label map to save (DICOM SEG or NIfTI) and as JSON.

A label map holds uint8 values, so "one segment per instance" is possible for up to `MAX_INSTANCE_SEGMENTS`
instances; more must be merged (one "lesion instances" segment) or thinned with a higher minimum score.
"""

from __future__ import annotations

import json

import numpy as np

from inference.screening.pipelines.instances import INSTANCE_LESION_LABEL
from viewer.labels.colors import fallback_color
from viewer.labels.table import MAX_LABEL, LabelInfo, LabelTable

MERGED_VALUE = INSTANCE_LESION_LABEL  # the viewer's "other lesion": the model merges GGO and consolidation
MERGED_NAME = "lesion instances (COVID-CT-Mask-Net)"
MAX_INSTANCE_SEGMENTS = MAX_LABEL


def kept(records: list[dict], min_score: float) -> list[dict]:
    """The instances scoring at least `min_score`, best first."""
    return sorted((r for r in records if r["score"] >= min_score), key=lambda r: -r["score"])


def instance_label_map(instance_labels: np.ndarray, records: list[dict], min_score: float,
                       per_instance: bool) -> tuple[np.ndarray, LabelTable, list[dict]]:
    """A uint8 label map of the instances scoring at least `min_score`, its label table and those instances
    (each with its "value" in the map added).

    per_instance: one value per instance, best first (1, 2, ...), named by rank, slice and score; otherwise
    every instance is `MERGED_VALUE`.

    Raises:
        ValueError: no instance scores that high, or more than `MAX_INSTANCE_SEGMENTS` with `per_instance`.
    """
    chosen = kept(records, min_score)
    if not chosen:
        raise ValueError(f"no lesion instance scores {min_score:.2f} or more: nothing to save")
    if per_instance and len(chosen) > MAX_INSTANCE_SEGMENTS:
        raise ValueError(f"{len(chosen)} lesion instances score {min_score:.2f} or more, and a label map holds at "
                         f"most {MAX_INSTANCE_SEGMENTS} segments: save them merged, or raise the minimum score")
    lut = np.zeros(int(instance_labels.max(initial=0)) + 1, np.uint8)
    infos, out = [], []
    for rank, r in enumerate(chosen, start=1):
        value = rank if per_instance else MERGED_VALUE
        if r["id"] < len(lut):
            lut[r["id"]] = value
        out.append({**r, "value": value})
        if per_instance:
            infos.append(LabelInfo(value, f"lesion instance {rank} (slice {r['slice']}, score {r['score']:.2f})",
                                   fallback_color(value + 16)))
    if not per_instance:
        infos = [LabelInfo(MERGED_VALUE, MERGED_NAME, (230, 90, 200))]
    return lut[instance_labels], LabelTable(infos), out


def instances_json(records: list[dict], min_score: float, model: str, saved_as: str = "") -> str:
    """The instances as a JSON document: the model, the minimum score, each instance (id, slice on the
    viewer's canonical axial grid, score, box x0 y0 x1 y1 in pixels, area in mm2, and its value in the saved
    label map when there is one)."""
    doc = {"model": model, "min_score": round(float(min_score), 4),
           "grid": "axial slices of the CT as loaded in LungLens (index 0 the most inferior)",
           "label_map": saved_as or None, "instances": records}
    return json.dumps(doc, indent=1) + "\n"

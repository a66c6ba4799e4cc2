"""What a training folder says about itself, for the model card a trainer writes.

A folder may carry `dataset.json`: {"name", "description", "terms", "limitations"} (all optional).
Without one, a folder named like the public COVID-CT set gets that set's description and terms
(its images may not be redistributed); any other folder is named by its path, and the card says
that its licence was not recorded, so nobody ships weights believing the data was cleared.
"""

from __future__ import annotations

import json
from pathlib import Path

DATASET_FILE = "dataset.json"
UNRECORDED_TERMS = "not recorded with the data (no dataset.json): check the data's licence before sharing these weights"

COVID_CT: dict[str, str] = {
    "name": "COVID-CT (Zhao et al. 2020, arXiv:2003.13865), official train split",
    "description": "CT slice images taken from figures in COVID-19 papers (COVID) and from other public sources "
                   "(NonCOVID)",
    "terms": "research use only: copyrights belong to the source papers' authors and publishers; the data is not "
             "redistributed with LungLens",
    "limitations": "slice images from paper figures (mixed windowing, lettering and arrows); not validated on DICOM "
                   "volumes from any scanner",
}


def read_dataset_info(data_dir: str | Path | None) -> dict[str, str]:
    """`name`, `description`, `terms` and `limitations` of a training folder (see the module docstring)."""
    if data_dir is None:
        return {"name": "unknown", "description": "", "terms": UNRECORDED_TERMS, "limitations": ""}
    root = Path(data_dir)
    info: dict[str, str] = {}
    path = root / DATASET_FILE
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except ValueError:
            loaded = {}
        if isinstance(loaded, dict):
            info = {k: str(loaded[k]) for k in ("name", "description", "terms", "limitations") if k in loaded}
    elif "covid-ct" in root.resolve().name.lower():
        info = dict(COVID_CT)
    return {"name": info.get("name", str(root)), "description": info.get("description", ""),
            "terms": info.get("terms", UNRECORDED_TERMS), "limitations": info.get("limitations", "")}

"""Batch screening of every CT series under some paths: a ranked worklist and per-case masks."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.core.types import InferenceError
from inference.inferers.lesions import LesionSegmenter
from inference.inferers.slice import SliceClassifier
from inference.inferers.volume import VolumeClassifier
from inference.screening.run import ScreeningConfig, load_model, run
from viewer.core.errors import LoadError
from viewer.core.progress import ProgressFn
from viewer.core.reorient import canonical_axes, from_canonical_array, to_canonical
from viewer.core.volume import Volume
from viewer.dicom.load import load_series
from viewer.dicom.scan import SeriesEntry, is_expected_skip, scan
from viewer.io.atomic_files import write_text_atomic
from viewer.io.volumes import read_volume_file, volume_suffix, write_volume

_log = logging.getLogger(__name__)  # the default `log` of `screen`

CSV_FIELDS = ("rank", "case", "series", "probability", "involvement_percent", "severity", "lesion_ml",
              "slices", "seconds", "source")


@dataclass
class Case:
    """One series to screen: a loader and a name."""

    name: str
    series: str
    source: str
    entry: SeriesEntry | None = None

    def load(self) -> Volume:
        return load_series(self.entry) if self.entry is not None else read_volume_file(self.source)


def find_cases(paths: list[str], errors: list[dict]) -> list[Case]:
    """Every CT image series (or volume file) under `paths`; what cannot be used goes to `errors`."""
    cases: list[Case] = []
    for path in paths:
        if not os.path.exists(path):
            errors.append({"source": path, "error": "no such file or folder"})
            continue
        if os.path.isfile(path) and volume_suffix(path):
            cases.append(Case(_safe(Path(path).name.split(".")[0]), "", path))
            continue
        result = scan(path)
        for p, reason in result.skipped:
            if not is_expected_skip(reason):  # text files, DICOMDIR, reports are expected; report the rest
                errors.append({"source": p, "error": reason})
        for entry in result.series:
            if not entry.is_ct_stack or entry.n_slices < 3:
                continue
            md = entry.metadata
            label = md.patient_id or md.patient_name or Path(entry.first.path).parent.name
            name = _safe(f"{label}_{md.series_number or 'x'}_{entry.id[-8:]}")
            cases.append(Case(name, entry.id, os.path.dirname(entry.first.path), entry))
    return cases


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "case"


def screen(paths: list[str], out_dir: str | Path, *, model: str = "light-squeezenet", device: str = "auto",
           backend: str = "auto", precision: str = "auto", config: ScreeningConfig | None = None,
           lungs: str = "threshold",
           progress: ProgressFn | None = None, log: Callable[[str], None] = _log.info,
           classifier: SliceClassifier | VolumeClassifier | LesionSegmenter | None = None,
           ) -> tuple[list[dict], list[dict]]:
    """Screen every case with a slice or volume model or a lesion segmenter (DCN); write results.csv/json
    (ranked by probability) and per-case NIfTI masks. `lungs`: the lung mask method ("threshold" or "unet").

    A volume model (DeCoVNet) classifies no single slices: its `slices` column is 0.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    errors: list[dict] = []
    cases = find_cases(paths, errors)
    # the same classifier settings as the GUI's Analyze, so a case gets the same probability in both
    clf = classifier or load_model(model, device=device, backend=backend, precision=precision)
    heatmap = clf.check_heatmap(config.heatmap if config else None)  # a bad choice stops the batch before any case
    rows: list[dict] = []
    for n, case in enumerate(cases):
        t0 = time.perf_counter()

        def case_progress(f: float, msg: str, n: int = n, name: str = case.name) -> None:
            if progress is not None:
                progress((n + f) / max(1, len(cases)), f"{name}: {msg}")

        try:
            volume = case.load()
            canon = to_canonical(volume)
            pred = run(canon.array, canon.spacing, clf, config=config, lungs=lungs, progress=case_progress)
            source, flips = canonical_axes(volume.direction)
            folder = out / case.name
            for name, array in (("heatmap", pred.heatmap), ("lesions", pred.lesion_mask), ("lungs", pred.lung_mask)):
                write_volume(volume.with_array(from_canonical_array(array, source, flips)), folder / f"{name}.nii.gz")
            summary = pred.summary()
            write_text_atomic(folder / "prediction.json", json.dumps(summary, indent=2))
        except (LoadError, InferenceError, ValueError, OSError, RuntimeError) as exc:
            errors.append({"source": case.source, "series": case.series, "error": str(exc)})
            log(f"skipped {case.name}: {exc}")
            continue
        rows.append({"case": case.name, "series": case.series, "probability": summary["probability"],
                     "involvement_percent": summary["involvement_percent"], "severity": summary["severity"],
                     "lesion_ml": summary["lesion_ml"], "slices": summary["slices_classified"],
                     "seconds": round(time.perf_counter() - t0, 3), "source": case.source})
    rows.sort(key=lambda r: -r["probability"])
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "results.csv", table.getvalue())
    write_text_atomic(out / "results.json", json.dumps({"model": clf.spec.name, "input_kind": clf.spec.input_kind,
                                                        "lungs": lungs, "heatmap": heatmap, "device": clf.engine,
                                                        "cases": rows, "errors": errors}, indent=2))
    return rows, errors

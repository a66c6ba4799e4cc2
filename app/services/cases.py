"""Screening one case: the series found under some paths, how each is screened and written (masks, key images,
prediction.json), and the ranked results files of a batch."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from app.services.key_images import write_key_images
from app.services.slice_table import slice_table
from inference.core.choices import DEFAULT_SCREENING_MODEL
from inference.core.types import InferenceError
from inference.lungs.select import segment_lung_labels
from inference.screening.assess import MIN_SLICES, STATUS_OK, lung_problem, prediction_problem, voxel_problem
from inference.screening.run import ScreeningConfig, ScreeningModel, load_model, run
from viewer.core.errors import LoadError
from viewer.core.progress import ProgressFn
from viewer.core.reorient import canonical_axes, from_canonical_array, to_canonical
from viewer.core.volume import SeriesMetadata, Volume
from viewer.dicom.load import load_series
from viewer.dicom.scan import SeriesEntry, is_expected_skip, scan
from viewer.io.atomic_files import write_text_atomic
from viewer.io.volumes import read_volume_file, volume_suffix, write_unit_map, write_volume

_log = logging.getLogger(__name__)  # the default `log` of `screen_case`

CSV_FIELDS = ("rank", "case", "status", "series", "probability", "involvement_percent", "severity", "lesion_ml",
              "slices", "seconds", "source", "patient_id", "patient_name", "study_date")
NOT_ASSESSABLE = "not assessable"
FAILED = "failed"


@dataclass
class Case:
    """One series to screen: a loader and a name."""

    name: str
    series: str
    source: str
    entry: SeriesEntry | None = None
    refusal: str | None = None  # known before loading: why this series cannot be screened

    def load(self) -> Volume:
        return load_series(self.entry) if self.entry is not None else read_volume_file(self.source)


def find_cases(paths: list[str], errors: list[dict]) -> list[Case]:
    """Every image series (or volume file) under `paths`, those that cannot be screened with their `refusal`;
    paths and files that hold no series go to `errors`. A series reached twice (overlapping paths, links) is
    screened once and the second sighting noted in `errors`; case names are unique (a second `x` is `x_2`)."""
    return [case for found in iter_cases(paths, errors) for case in found]


def iter_cases(paths: list[str], errors: list[dict]) -> Iterator[list[Case]]:
    """`find_cases` one path at a time: the cases found under each path (a list, maybe empty), as soon as that
    path is scanned, so that screening can begin while the rest is scanned."""
    seen: dict[tuple, str] = {}  # (series id, real paths of its files) -> where it was first found
    names: set[str] = set()

    def add(found: list[Case], case: Case, key: tuple) -> None:
        if key in seen:
            errors.append({"source": case.source, "error": f"the same series as {seen[key]}, reached through "
                                                            "another path: screened once"})
            return
        seen[key] = case.source
        base, n = case.name, 2
        while case.name in names:
            case.name, n = f"{base}_{n}", n + 1
        names.add(case.name)
        found.append(case)

    for path in paths:
        found: list[Case] = []
        if not os.path.exists(path):
            errors.append({"source": path, "error": "no such file or folder"})
        elif os.path.isfile(path) and volume_suffix(path):
            add(found, Case(_safe(Path(path).name.split(".")[0]), "", path), ("file", os.path.realpath(path)))
        else:
            result = scan(path)
            for p, reason in result.skipped:
                if not is_expected_skip(reason):  # text files, DICOMDIR, reports are expected; report the rest
                    errors.append({"source": p, "error": reason})
            for entry in result.series:
                md = entry.metadata
                label = md.patient_id or md.patient_name or Path(entry.first.path).parent.name
                name = _safe(f"{label}_{md.series_number or 'x'}_{entry.id[-8:]}")
                key = (entry.id, frozenset(os.path.realpath(h.path) for h in entry.headers))
                add(found, Case(name, entry.id, os.path.dirname(entry.first.path), entry, _series_refusal(entry)),
                    key)
        yield found


def _series_refusal(entry: SeriesEntry) -> str | None:
    """Why a series found by the scan cannot be screened, from its headers alone, or None."""
    if entry.is_localizer:
        return "a localizer (scout) image, not cross-sectional CT"
    if not entry.is_ct_stack:
        return f"modality {entry.modality}, not CT"
    if entry.n_slices < MIN_SLICES:
        return f"too few slices ({entry.n_slices}; at least {MIN_SLICES})"
    return None


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "case"


@dataclass(frozen=True)
class ScreenOptions:
    """How every case of a batch is screened (the same in every worker process or cluster task)."""

    model: str = DEFAULT_SCREENING_MODEL
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    config: ScreeningConfig | None = None
    lungs: str = "threshold"  # the lung mask method: "threshold" or "unet"

    def load(self) -> ScreeningModel:
        return load_model(self.model, device=self.device, backend=self.backend, precision=self.precision)


def write_results(out: Path, rows: list[dict], errors: list[dict], header: dict) -> None:
    """results.csv and results.json of ranked `rows`."""
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=CSV_FIELDS, lineterminator="\r\n", restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "results.csv", table.getvalue())
    write_text_atomic(out / "results.json", json.dumps({**header, "cases": rows, "errors": errors}, indent=2))


def screen_case(case: Case, out: Path, clf: ScreeningModel,
                options: ScreenOptions, progress: ProgressFn | None = None,
                log: Callable[[str], None] = _log.info) -> dict:
    """Screen one case into `out`/<case name>; its row: status "ok", "not assessable: why" (the series cannot be
    screened: it will not change by trying again), or "failed: why" (a write error, memory, a library error: worth
    another try)."""
    t0 = time.perf_counter()
    row: dict = {"case": case.name, "series": case.series, "source": case.source}
    try:
        if case.refusal is not None:
            raise _NotAssessable(case.refusal)
        summary = _screen_case(case, out, clf, options.config, options.lungs, progress or (lambda f, m: None))
    except (_NotAssessable, LoadError, InferenceError, ValueError) as why:
        log(f"{case.name}: {NOT_ASSESSABLE}: {why}")
        return {**row, "status": f"{NOT_ASSESSABLE}: {why}", "seconds": round(time.perf_counter() - t0, 3)}
    except (OSError, RuntimeError, MemoryError) as why:
        log(f"{case.name}: {FAILED}: {why}")
        return {**row, "status": f"{FAILED}: {why}", "seconds": round(time.perf_counter() - t0, 3)}
    return {**row, **row_identity(summary["study"]), "status": STATUS_OK, "probability": summary["probability"],
            "involvement_percent": summary["involvement_percent"], "severity": summary["severity"],
            "lesion_ml": summary["lesion_ml"], "slices": summary["slices_classified"],
            "seconds": round(time.perf_counter() - t0, 3)}


class _NotAssessable(Exception):
    """A case that loads but cannot be screened; the message is the reason."""


def _screen_case(case: Case, out: Path, clf: ScreeningModel,
                 config: ScreeningConfig | None, lungs: str, progress: ProgressFn) -> dict:
    """Load, check and screen one case; write its masks and prediction.json; its summary.

    Raises:
        _NotAssessable: the volume or the result fails a rule of `inference.screening.assess`.
    """
    t0 = time.perf_counter()
    volume = case.load()
    t_load = time.perf_counter() - t0
    canon = to_canonical(volume)
    hu, spacing = canon.array, canon.spacing
    problem = voxel_problem(hu)
    if problem:
        raise _NotAssessable(problem)
    t0 = time.perf_counter()
    lung_labels = segment_lung_labels(hu, spacing, lungs)
    t_lungs = time.perf_counter() - t0
    problem = lung_problem(lung_labels, spacing, volume.metadata.body_part)
    if problem:
        raise _NotAssessable(problem)
    pred = run(hu, spacing, clf, config=config, lung_labels=lung_labels, progress=progress)
    # the lungs were segmented here, before the assessability check, not inside `run` (which records 0 then)
    pred.timings.update(load=t_load, lung_segmentation=t_lungs)
    problem = prediction_problem(pred)
    if problem:
        raise _NotAssessable(problem)
    source, flips = canonical_axes(volume.direction)
    folder = out / case.name
    # the heat map (values in [0, 1]) in 8 bits scaled by 1/255: read back as floats, written in half the time
    write_unit_map(volume.with_array(from_canonical_array(pred.heatmap, source, flips)), folder / "heatmap.nii.gz")
    masks = [("lesions", pred.lesion_mask), ("lungs", pred.lung_mask)]
    if pred.instance_labels is not None:  # one id per lesion instance, as prediction.json's "instances" lists them
        masks.append(("instances", pred.instance_labels))
    for name, array in masks:
        write_volume(volume.with_array(from_canonical_array(array, source, flips)), folder / f"{name}.nii.gz")
    summary = {**pred.summary(), "study": study_identity(volume.metadata),
               "key_images": write_key_images(folder, hu, spacing, pred.heatmap, pred.lesion_mask, pred.lung_mask),
               "slices": slice_table(pred, canon)}
    write_text_atomic(folder / "prediction.json", json.dumps(summary, indent=2))
    return summary


STUDY_KEYS = ("patient_name", "patient_id", "patient_birth_date", "patient_sex", "patient_age", "study_date",
              "study_time", "study_description", "accession_number", "study_instance_uid", "series_instance_uid",
              "series_number", "series_description", "modality")
ROW_IDENTITY = ("patient_id", "patient_name", "study_date")  # what a results row (and the worklist) shows


def study_identity(metadata: SeriesMetadata) -> dict[str, str]:
    """Who and what was screened, from the headers (empty strings where a tag is absent)."""
    meta = metadata.as_dict()
    return {k: meta.get(k, "") for k in STUDY_KEYS}


def row_identity(study: dict[str, str]) -> dict[str, str]:
    """The identity columns of a results row, from `study_identity`."""
    return {k: study.get(k, "") for k in ROW_IDENTITY}


def rank_rows(rows: list[dict]) -> list[dict]:
    """Assessed rows by falling probability, ranked 1..n; then the not-assessable rows (no rank, no probability)
    in the order they were found."""
    ok = sorted((r for r in rows if r["status"] == STATUS_OK), key=lambda r: -r["probability"])
    for rank, row in enumerate(ok, start=1):
        row["rank"] = rank
    rest = [{**r, "rank": None, "probability": None} for r in rows if r["status"] != STATUS_OK]
    return ok + rest

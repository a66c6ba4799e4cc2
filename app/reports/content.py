"""What a report shows, read from a `lunglens screen` results folder (results.json + each case's
prediction.json and key images)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

DISCLAIMER = "Research use only: not for clinical diagnosis."


class ReportError(Exception):
    """The results folder cannot make a report; the message names the file and the problem."""


@dataclass(frozen=True)
class Bands:
    """Triage bands of P(COVID-19): high at or above `high`, low below `low`, intermediate between."""

    low: float = 0.3
    high: float = 0.7
    threshold: float = 0.5  # the operating point: positive at or above it

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.threshold <= self.high <= 1.0:
            raise ReportError(f"bands must satisfy 0 <= low ({self.low}) <= threshold ({self.threshold}) <= "
                              f"high ({self.high}) <= 1")

    def band(self, p: float | None) -> str:
        if p is None:
            return ""
        return "high" if p >= self.high else "low" if p < self.low else "intermediate"


@dataclass
class CaseSection:
    row: dict  # the case's row of results.json
    prediction: dict = field(default_factory=dict)  # prediction.json (empty for a case not assessed)
    folder: Path | None = None

    @property
    def assessed(self) -> bool:
        return bool(self.prediction)

    @property
    def study(self) -> dict:
        return self.prediction.get("study", {})

    def key_images(self) -> list[tuple[dict, Path]]:
        if self.folder is None:
            return []
        return [(k, self.folder / k["file"]) for k in self.prediction.get("key_images", [])
                if (self.folder / k["file"]).is_file()]


@dataclass
class Report:
    folder: Path
    model: str
    card: dict
    cases: list[CaseSection]
    bands: Bands
    problems: list[dict]  # paths that held no series


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: not found; is this a `lunglens screen --out` folder?") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def load_report(results_dir: str | Path, case: str | None = None, bands: Bands | None = None) -> Report:
    """The report of a results folder; `case` keeps one case (its name in results.json)."""
    folder = Path(results_dir)
    results = _read_json(folder / "results.json")
    rows = results.get("cases")
    if not isinstance(rows, list):
        raise ReportError(f"{folder / 'results.json'}: has no list of cases")
    if case is not None:
        rows = [r for r in rows if r.get("case") == case]
        if not rows:
            names = ", ".join(str(r.get("case")) for r in results.get("cases", [])) or "none"
            raise ReportError(f"{folder}: no case named {case!r}; cases: {names}")
    sections = []
    for row in rows:
        pred_path = folder / str(row.get("case", "")) / "prediction.json"
        if row.get("status") == "ok":
            sections.append(CaseSection(row, _read_json(pred_path), pred_path.parent))
        else:
            sections.append(CaseSection(row))
    model = str(results.get("model", ""))
    return Report(folder, model, _card(model), sections, bands or Bands(), list(results.get("errors", [])))


def _card(model: str) -> dict:
    try:
        from inference.models import get_model

        return get_model(model).card()
    except Exception:  # noqa: BLE001 - a report of an unknown or removed model still gets written
        return {}


def card_summary(card: dict, model: str) -> list[tuple[str, str]]:
    """(label, text) lines: the model, its training data, validation metrics, weights' hash."""
    lines = [("Model", model or "unknown")]
    data = card.get("training_data")
    if isinstance(data, dict):
        lines.append(("Training data", f"{data.get('dataset', '')}: {data.get('description', '')}".strip(": ")))
    metrics = card.get("validation_metrics")
    if isinstance(metrics, dict):
        shown = [f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, int | float)]
        lines.append(("Validation", ", ".join(shown)))
    if card.get("sha256"):
        lines.append(("Weights SHA-256", str(card["sha256"])[:16] + "..."))
    if not card:
        lines.append(("Model card", "not found for this model"))
    return lines


def identity_lines(section: CaseSection) -> list[tuple[str, str]]:
    s, row = section.study, section.row
    birth = " ".join(x for x in (s.get("patient_sex", ""), s.get("patient_age", ""), _date(s.get(
        "patient_birth_date", ""))) if x)
    return [("Patient", f"{s.get('patient_name', '') or row.get('patient_name', '')}".replace("^", " ").strip()),
            ("Patient ID", s.get("patient_id", "") or row.get("patient_id", "")),
            ("Sex / age / born", birth),
            ("Study", " ".join(x for x in (_date(s.get("study_date", "")), _time(s.get("study_time", "")),
                                           s.get("study_description", "")) if x)),
            ("Accession", s.get("accession_number", "")),
            ("Series", " ".join(x for x in (s.get("series_number", ""), s.get("series_description", "")) if x)),
            ("Series UID", s.get("series_instance_uid", "") or str(row.get("series", ""))),
            ("Source", str(row.get("source", "")))]


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


def _time(t: str) -> str:
    return f"{t[:2]}:{t[2:4]}" if len(t) >= 4 and t[:4].isdigit() else t

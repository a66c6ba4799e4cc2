"""C-ECHO and C-FIND (study root): is the node there, which studies and series it holds."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from app.pacs.association import associate, check_status
from app.pacs.nodes import PacsError, PacsNode

#: attributes asked for, and returned as JSON keys (DICOM keywords), for studies and for series
STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "StudyDescription", "AccessionNumber", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
               "BodyPartExamined", "NumberOfSeriesRelatedInstances")
PENDING = (0xFF00, 0xFF01)  # a DIMSE reply that more follow
_DATE = re.compile(r"^\d{8}(-\d{8})?$|^\d{8}-$|^-\d{8}$")


def echo(node: PacsNode) -> float:
    """Round-trip time of a C-ECHO in seconds. PacsError when the node does not answer with Success."""
    with associate(node, [build_context(Verification)], what="verification") as assoc:
        t0 = time.perf_counter()
        status = check_status(node, "C-ECHO", assoc.send_c_echo())
        if status != 0:
            raise PacsError(f"{node.describe()} answered C-ECHO with status 0x{status:04X}")
        return time.perf_counter() - t0


@dataclass(frozen=True)
class StudyQuery:
    """Study-level matching keys; empty ones match anything. `date` is DICOM's YYYYMMDD or a range."""

    patient_id: str = ""
    patient_name: str = ""
    date: str = ""
    modality: str = ""
    accession: str = ""
    study_uid: str = ""  # one study (a list of UIDs separated by backslashes matches any of them)

    def __post_init__(self) -> None:
        if self.date and not _DATE.match(self.date):
            raise PacsError(f"date {self.date!r}: use YYYYMMDD or a range YYYYMMDD-YYYYMMDD")


def find_studies(node: PacsNode, query: StudyQuery) -> list[dict]:
    """Matching studies as dicts keyed by `STUDY_KEYS` (values as text, numbers as int)."""
    ds = _identifier("STUDY", STUDY_KEYS)
    ds.PatientID, ds.PatientName, ds.StudyDate = query.patient_id, query.patient_name, query.date
    ds.ModalitiesInStudy, ds.AccessionNumber = query.modality, query.accession
    ds.StudyInstanceUID = query.study_uid
    return _find(node, ds, STUDY_KEYS)


def find_series(node: PacsNode, study_uid: str) -> list[dict]:
    """The series of one study, by series number."""
    ds = _identifier("SERIES", SERIES_KEYS)
    ds.StudyInstanceUID = study_uid
    rows = _find(node, ds, SERIES_KEYS)
    return sorted(rows, key=lambda r: (r.get("SeriesNumber") is None, r.get("SeriesNumber") or 0))


def _identifier(level: str, keys: tuple[str, ...]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in keys:
        setattr(ds, key, "")
    return ds


def _find(node: PacsNode, ds: Dataset, keys: tuple[str, ...]) -> list[dict]:
    rows = []
    with associate(node, [build_context(StudyRootQueryRetrieveInformationModelFind)], what="C-FIND") as assoc:
        for status, identifier in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind):
            code = check_status(node, "C-FIND", status)
            if code in PENDING and identifier is not None:
                rows.append(row_of(identifier, keys))
            elif code != 0:
                raise PacsError(f"{node.describe()} answered C-FIND with status 0x{code:04X}"
                                f"{_comment(status)}")
    return rows


def row_of(identifier: Dataset, keys: tuple[str, ...]) -> dict:
    """A query answer as a dict keyed by `keys`: text values, numbers as int (None when absent), multi-valued
    modalities joined by backslashes."""
    row: dict = {}
    for key in keys:
        value = identifier.get(key, None)
        if key.startswith("NumberOf") or key == "SeriesNumber":
            try:
                row[key] = int(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                row[key] = None
        elif value is None:
            row[key] = ""
        elif key == "ModalitiesInStudy" and isinstance(value, MultiValue | list | tuple):
            row[key] = "\\".join(str(v) for v in value)
        else:
            row[key] = str(value)
    return row


def _comment(status: Dataset) -> str:
    text = status.get("ErrorComment", "")
    return f": {text}" if text else ""

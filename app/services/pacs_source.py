"""A PACS query as a worklist source: the matching studies are retrieved (C-GET, or C-MOVE to LungLens's own
storage SCP) into the data folder, one folder per study; a study retrieved before is not fetched again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.pacs.nodes import PacsNode
from app.pacs.query import StudyQuery, find_studies
from app.pacs.retrieve import get, move
from app.services.worklist_db import data_dir


def retrieve_studies(node: PacsNode, query: StudyQuery, dest: str | Path | None = None, *,
                     study_uid: str | None = None, move_dest: str | None = None, listen_port: int = 11113,
                     log: Callable[[str], None] = print,
                     cancelled: Callable[[], bool] | None = None) -> list[Path]:
    """The local folder of every study matching `query` (or the one `study_uid`) on `node`, retrieving what is not
    there yet."""
    root = Path(dest) if dest else data_dir() / "pacs"
    folders = []
    if study_uid:
        query = StudyQuery(study_uid=study_uid)
    for study in find_studies(node, query):
        if cancelled is not None and cancelled():
            break
        uid = study["StudyInstanceUID"]
        folder = root / uid
        expected = study.get("NumberOfStudyRelatedInstances")
        have = len(list(folder.rglob("*.dcm"))) if folder.is_dir() else 0
        if not expected or have < expected:
            log(f"retrieving {study.get('PatientID', '')} {study.get('StudyDate', '')} ({uid})")
            if move_dest:
                move(node, root, uid, move_dest=move_dest, listen_port=listen_port, cancelled=cancelled)
            else:
                get(node, root, uid, cancelled=cancelled)
        folders.append(folder)
    return folders

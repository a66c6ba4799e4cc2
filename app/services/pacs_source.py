"""A PACS query as a worklist source: the matching studies are retrieved (C-GET, or C-MOVE to LungLens's own
storage SCP) into the data folder, one folder per study; a study retrieved before is not fetched again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app.pacs.nodes import PacsError, PacsNode
from app.pacs.query import StudyQuery, find_studies
from app.pacs.retrieve import get, move
from app.pacs.storage import is_uid
from viewer.io.user_dirs import data_dir


def retrieve_studies(node: PacsNode, query: StudyQuery, dest: str | Path | None = None, *,
                     study_uid: str | None = None, move_dest: str | None = None, listen_port: int = 11113,
                     log: Callable[[str], None] = print, problems: list[dict] | None = None,
                     cancelled: Callable[[], bool] | None = None) -> list[Path]:
    """The local folder of every study matching `query` (or the one `study_uid`) on `node`, retrieving what is
    not complete there yet. A study that cannot be retrieved, or comes incomplete, is reported through `log` and
    `problems` (as `{"source", "error"}`) and the others go on; the query itself failing raises PacsError."""
    root = Path(dest) if dest else data_dir() / "pacs"
    problems = problems if problems is not None else []
    folders = []
    if study_uid:
        query = StudyQuery(study_uid=study_uid)
    for study in find_studies(node, query):
        if cancelled is not None and cancelled():
            break
        uid = str(study.get("StudyInstanceUID", ""))
        label = f"{study.get('PatientID', '')} {study.get('StudyDate', '')} ({uid})"
        if not is_uid(uid):
            problems.append({"source": node.describe(), "error": f"a study with a malformed UID {uid!r}: skipped"})
            log(f"skipped a study with a malformed UID {uid!r}")
            continue
        folder = root / uid
        expected = study.get("NumberOfStudyRelatedInstances")
        have = len(list(folder.rglob("*.dcm"))) if folder.is_dir() else 0
        if have == 0 or (expected and have < expected):  # unknown count: what is there is taken as complete
            log(f"retrieving {label}")
            try:
                if move_dest:
                    result = move(node, root, uid, move_dest=move_dest, listen_port=listen_port,
                                  cancelled=cancelled)
                else:
                    result = get(node, root, uid, cancelled=cancelled)
            except PacsError as exc:
                problems.append({"source": f"{node.describe()} study {uid}", "error": str(exc)})
                log(f"{label}: {exc}")
                if not folder.is_dir():
                    continue
            else:
                if result.failed:
                    message = (f"{result.failed} instance(s) of the study were not retrieved"
                               f"{': ' + result.warnings[0] if result.warnings else ''}")
                    problems.append({"source": f"{node.describe()} study {uid}", "error": message})
                    log(f"{label}: {message}")
        folders.append(folder)
    return folders

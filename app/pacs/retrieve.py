"""Retrieval of a study or one series: C-GET (instances come back on the same association) or C-MOVE (the node
sends them to LungLens's own storage SCP, started for the transfer)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelMove

from app.pacs.association import associate, check_status
from app.pacs.nodes import PacsError, PacsNode
from app.pacs.query import PENDING
from app.pacs.storage import GET_STORAGE_LIMIT, Receiver, StorageServer, storage_contexts

_WARNING = 0xB000  # sub-operations complete, one or more failures or warnings

#: progress(done, total or None) after every instance received
RetrieveProgress = Callable[[int, int | None], None]


@dataclass
class RetrieveResult:
    files: list[Path] = field(default_factory=list)
    failed: int = 0
    warnings: list[str] = field(default_factory=list)


class Cancelled(PacsError):
    """The caller's `cancelled()` turned true; the files received so far are kept."""


def _identifier(study_uid: str, series_uid: str | None) -> Dataset:
    if not study_uid:
        raise PacsError("a study instance UID is needed (see `lunglens pacs find`)")
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
    ds.StudyInstanceUID = study_uid
    if series_uid:
        ds.SeriesInstanceUID = series_uid
    return ds


def get(node: PacsNode, out_dir: str | Path, study_uid: str, series_uid: str | None = None, *,
        progress: RetrieveProgress | None = None, cancelled: Callable[[], bool] | None = None) -> RetrieveResult:
    """C-GET the study (or one series of it) into `out_dir`/<study>/<series>/<instance>.dcm."""
    receiver = Receiver(Path(out_dir))
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)] + storage_contexts(limit=GET_STORAGE_LIMIT)
    roles = [build_role(c.abstract_syntax, scp_role=True) for c in contexts[1:]]
    with associate(node, contexts, what="C-GET", ext_neg=roles,
                   handlers=[(evt.EVT_C_STORE, receiver.handle_store)]) as assoc:
        responses = assoc.send_c_get(_identifier(study_uid, series_uid), StudyRootQueryRetrieveInformationModelGet)
        try:
            return _follow(node, "C-GET", assoc, responses, receiver, progress, cancelled)
        finally:
            receiver.tidy()


def move(node: PacsNode, out_dir: str | Path, study_uid: str, series_uid: str | None = None, *,
         move_dest: str, listen_port: int, progress: RetrieveProgress | None = None,
         cancelled: Callable[[], bool] | None = None) -> RetrieveResult:
    """C-MOVE the study (or series) to `move_dest`, LungLens's own AE title as the node knows it, received by a
    storage SCP on `listen_port` for the duration of the transfer."""
    # only the node we asked may deliver into the folder while the SCP listens
    with StorageServer(out_dir, listen_port, aet=move_dest, accept_from=[node.aet]) as server:
        with associate(node, [build_context(StudyRootQueryRetrieveInformationModelMove)], what="C-MOVE") as assoc:
            responses = assoc.send_c_move(_identifier(study_uid, series_uid), move_dest,
                                          StudyRootQueryRetrieveInformationModelMove)
            return _follow(node, "C-MOVE", assoc, responses, server.receiver, progress, cancelled)


def _follow(node: PacsNode, what: str, assoc, responses, receiver: Receiver,
            progress: RetrieveProgress | None, cancelled: Callable[[], bool] | None) -> RetrieveResult:
    result = RetrieveResult(files=receiver.files)
    final = None
    for status, _identifier_ds in responses:
        code = check_status(node, what, status)
        total = sum(int(status.get(k, 0) or 0) for k in ("NumberOfRemainingSuboperations",
                                                           "NumberOfCompletedSuboperations",
                                                           "NumberOfFailedSuboperations",
                                                           "NumberOfWarningSuboperations")) or None
        if progress is not None:
            progress(len(receiver.files), total)
        if cancelled is not None and cancelled():
            assoc.abort()
            raise Cancelled(f"{what} cancelled after {len(receiver.files)} instance(s)")
        if code not in PENDING:
            final = (code, status)
    if final is None:
        raise PacsError(f"{node.describe()}: {what} ended without a final status (association aborted?)")
    code, status = final
    # the node counts the instances we refused among its failed sub-operations: count those once
    result.failed = max(int(status.get("NumberOfFailedSuboperations", 0) or 0), len(receiver.failures))
    result.warnings = list(receiver.failures)
    if code == 0xA801:
        raise PacsError(f"{node.describe()} does not know the move destination; add LungLens's AE title with "
                        "this machine's address and the listening port to the PACS's modalities")
    if code == 0xFE00:
        raise PacsError(f"{node.describe()} cancelled the {what} after {len(receiver.files)} instance(s)")
    if code not in (0x0000, _WARNING):
        comment = status.get("ErrorComment", "")
        hint = ""
        if not receiver.files:
            hint = "; nothing was retrieved: check the UIDs with `lunglens pacs find`"
            if what == "C-MOVE":
                hint += (", and that the PACS knows the move destination (LungLens's AE title with this machine's "
                         "address and the listening port among its modalities)")
        raise PacsError(f"{node.describe()} answered {what} with status 0x{code:04X}"
                        f"{': ' + str(comment) if comment else ''}{hint}")
    if not receiver.files:
        raise PacsError(f"{node.describe()}: {what} returned no instance for this study/series (wrong UID?)")
    return result

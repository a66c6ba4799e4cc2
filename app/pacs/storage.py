"""Receiving instances (C-STORE): written byte for byte as sent, as DIR/<study>/<series>/<instance>.dcm.

Used by C-GET (the instances come back on the same association), by C-MOVE (LungLens's own storage SCP on a
configured port) and by `lunglens pacs listen`.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from app.pacs.nodes import PacsError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
INCOMING = ".incoming"  # where partial files lie, outside the series folders: a scan never takes one for a slice


def is_uid(text: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe to use as a folder or file name."""
    return bool(_UID.match(text)) and len(text) <= 64


def write_instance(root: Path, uids: tuple[str, str, str], write: Callable[[str], None]) -> Path:
    """`root`/<study>/<series>/<instance>.dcm, written by `write(temporary path)` and renamed into place once
    complete (never a half-written .dcm). ValueError for UIDs that are not UIDs."""
    if not all(is_uid(u) for u in uids):
        raise ValueError(f"bad UIDs {'/'.join(map(repr, uids))}")
    folder = root / uids[0] / uids[1]
    folder.mkdir(parents=True, exist_ok=True)
    incoming = root / INCOMING
    incoming.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", dir=incoming)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, folder / f"{uids[2]}.dcm")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / f"{uids[2]}.dcm"


def tidy(root: Path) -> None:
    """Remove the (empty) folder partial files pass through."""
    try:
        (root / INCOMING).rmdir()
    except OSError:
        pass
#: what a storage SCU is offered: uncompressed first, then the compressed syntaxes PACS store CT in
STORE_TRANSFER_SYNTAXES = ALL_TRANSFER_SYNTAXES
#: what a CT study holds besides its images, asked for first on a C-GET (an association has at most 128
#: contexts, one of them C-GET's, and pynetdicom knows 170 storage classes): dose reports, key objects,
#: presentation states, segmentations, structure sets, secondary captures, encapsulated PDF
_CT_STUDY_FIRST = (
    "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2",  # CT, Enh., Legacy
    "1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.88.59",  # X-Ray Radiation Dose SR, Key Object Sel.
    "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",  # SRs
    "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.35",  # Comprehensive 3D SR, Extensible SR
    "1.2.840.10008.5.1.4.1.1.11.1", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.481.3",  # GSPS, SEG, RT
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",  # SC
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4", "1.2.840.10008.5.1.4.1.1.104.1",  # SC, PDF
    "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.4",  # PET, MR
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1",  # MR, CR, DX
    "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.66.1", "1.2.840.10008.5.1.4.1.1.88.69",  # raw, reg., SR
)
_GET_STORAGE = list(dict.fromkeys([*_CT_STUDY_FIRST, *(c.abstract_syntax for c in AllStoragePresentationContexts)]))
GET_STORAGE_LIMIT = 127

_FAILED = 0xA700  # "Out of resources": the instance was not stored, the sender may retry


def storage_contexts(limit: int | None = None) -> list[PresentationContext]:
    """Every storage SOP class (for an SCP), or the first `limit` of those a CT study holds first (for C-GET)."""
    every = [c.abstract_syntax for c in AllStoragePresentationContexts]
    syntaxes = _GET_STORAGE[:limit] if limit is not None else every
    return [build_context(uid, STORE_TRANSFER_SYNTAXES) for uid in syntaxes]


@dataclass
class Receiver:
    """Writes every instance it is handed under `root`; counts and remembers the files it wrote."""

    root: Path
    on_file: Callable[[Path], None] | None = None
    files: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_store(self, event: Event) -> int:
        """EVT_C_STORE handler: 0x0000 once the file is complete on disk, a failure status otherwise."""
        try:
            ds = event.dataset  # decodes the identifiers only as they are read
            uids = tuple(str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
            data = event.encoded_dataset()  # the data set byte for byte as sent, with a file meta header
            path = write_instance(self.root, uids, lambda tmp: Path(tmp).write_bytes(data))
        except Exception as exc:  # noqa: BLE001 - a bad instance fails alone; the sender hears so
            with self._lock:
                self.failures.append(str(exc))
            return _FAILED
        with self._lock:
            self.files.append(path)
        if self.on_file is not None:
            self.on_file(path)
        return 0x0000

    def tidy(self) -> None:
        tidy(self.root)


class StorageServer:
    """A storage SCP on `port` (all storage SOP classes, all transfer syntaxes) writing into `root`.

    Use as a context manager, or `start()` / `stop()`.
    """

    def __init__(self, root: str | Path, port: int, aet: str = "LUNGLENS", host: str = "",
                 on_file: Callable[[Path], None] | None = None, accept_from: list[str] | None = None) -> None:
        self.receiver = Receiver(Path(root), on_file)
        self.port, self.aet, self.host = int(port), aet, host
        self.accept_from = list(accept_from or [])  # calling AE titles let in; empty: any
        self._server = None

    def start(self) -> StorageServer:
        ae = AE(ae_title=self.aet)
        ae.supported_contexts = storage_contexts()
        ae.maximum_associations = 4
        ae.require_called_aet = True  # only associations addressed to our AE title
        if self.accept_from:
            ae.require_calling_aet = self.accept_from
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self.receiver.handle_store)])
        except OSError as exc:
            raise PacsError(f"cannot listen on port {self.port} ({exc.strerror or exc}); is another program "
                            "using it?") from None
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self.receiver.tidy()

    def __enter__(self) -> StorageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

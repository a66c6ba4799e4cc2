"""C-STORE: send DICOM files (a lesion mask as DICOM SEG, measurements as SR, a series) to a configured node."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pynetdicom.presentation import build_context

from app.pacs.association import associate, check_status
from app.pacs.nodes import PacsError, PacsNode


def dicom_files(paths: list[str | Path]) -> list[Path]:
    """The files under `paths` (folders searched recursively), in name order."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise PacsError(f"{p}: no such file or folder")
    return files


def store(node: PacsNode, paths: list[str | Path], progress: Callable[[int, int], None] | None = None) -> int:
    """Send every DICOM file under `paths`; the number stored. PacsError names the first file the node refuses
    or a file that is not DICOM."""
    datasets = []
    for f in dicom_files(paths):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=False)
            sop_class, syntax = ds.SOPClassUID, ds.file_meta.TransferSyntaxUID
        except (InvalidDicomError, AttributeError, OSError) as exc:
            raise PacsError(f"{f}: not a DICOM file that can be sent ({exc})") from None
        datasets.append((f, ds, sop_class, syntax))
    if not datasets:
        raise PacsError("no files to send")
    pairs = sorted({(str(c), str(t)) for _, _, c, t in datasets})
    if len(pairs) > 128:
        raise PacsError(f"{len(pairs)} kinds of object in one batch; send at most 128 at a time")
    contexts = [build_context(c, [t]) for c, t in pairs]
    with associate(node, contexts, what="C-STORE") as assoc:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in assoc.accepted_contexts}
        refused = [(f, c, t) for f, _, c, t in datasets if (str(c), str(t)) not in accepted]
        if refused:
            f, c, t = refused[0]
            raise PacsError(f"{node.describe()} does not accept {getattr(c, 'name', c)} in {getattr(t, 'name', t)} "
                            f"({f} and {len(refused) - 1} more); nothing was sent")
        for n, (f, ds, _, _) in enumerate(datasets, start=1):
            status = check_status(node, "C-STORE", assoc.send_c_store(ds))
            if status not in (0x0000, 0xB000, 0xB007, 0xB006):
                raise PacsError(f"{node.describe()} refused {f} (status 0x{status:04X}); {n - 1} file(s) were "
                                "stored before it")
            if progress is not None:
                progress(n, len(datasets))
    return len(datasets)

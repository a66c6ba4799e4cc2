"""DICOMweb as a second transport (QIDO-RS to search, WADO-RS to retrieve) through `dicomweb-client`; the same
results as C-FIND and C-GET, for archives reached over HTTP(S)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from app.pacs.nodes import PacsError
from app.pacs.query import SERIES_KEYS, STUDY_KEYS, StudyQuery, row_of
from app.pacs.storage import tidy, write_instance

TIMEOUT_S = 30.0


def _client(url: str):
    if not re.match(r"^https?://", url):
        raise PacsError(f"{url}: a DICOMweb URL starts with http:// or https://")
    from dicomweb_client.api import DICOMwebClient

    return DICOMwebClient(url=url.rstrip("/"), timeout=TIMEOUT_S)


def _call(url: str, what: str, fn):
    import requests

    try:
        return fn()
    except requests.exceptions.ConnectionError:
        raise PacsError(f"{url}: cannot connect; is the DICOMweb service running and the URL right?") from None
    except requests.exceptions.Timeout:
        raise PacsError(f"{url}: no answer to {what} within {TIMEOUT_S:.0f} s") from None
    except requests.exceptions.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        hint = " (wrong URL: is it the DICOMweb root, e.g. http://host:8042/dicom-web?)" if code == 404 else ""
        hint = " (credentials refused)" if code in (401, 403) else hint
        raise PacsError(f"{url}: {what} failed with HTTP {code}{hint}") from None
    except requests.exceptions.RequestException as exc:
        raise PacsError(f"{url}: {what} failed ({exc})") from None


def _row(item: dict, keys: tuple[str, ...]) -> dict:
    return row_of(Dataset.from_json(item), keys)


def find_studies(url: str, query: StudyQuery) -> list[dict]:
    """QIDO-RS study search with the same keys and output as `app.pacs.query.find_studies`."""
    filters = {k: v for k, v in (("PatientID", query.patient_id), ("PatientName", query.patient_name),
                                 ("StudyDate", query.date), ("ModalitiesInStudy", query.modality),
                                 ("AccessionNumber", query.accession), ("StudyInstanceUID", query.study_uid)) if v}
    client = _client(url)
    items = _call(url, "QIDO-RS", lambda: client.search_for_studies(search_filters=filters, fields=list(STUDY_KEYS),
                                                                    get_remaining=True))
    return [_row(i, STUDY_KEYS) for i in items]


def find_series(url: str, study_uid: str) -> list[dict]:
    client = _client(url)
    items = _call(url, "QIDO-RS", lambda: client.search_for_series(study_instance_uid=study_uid,
                                                                   fields=list(SERIES_KEYS), get_remaining=True))
    rows = [{**_row(i, SERIES_KEYS), "StudyInstanceUID": study_uid} for i in items]
    return sorted(rows, key=lambda r: (r.get("SeriesNumber") is None, r.get("SeriesNumber") or 0))


def get(url: str, out_dir: str | Path, study_uid: str, series_uid: str | None = None, *,
        progress: Callable[[int, int | None], None] | None = None) -> list[Path]:
    """WADO-RS retrieval of a study or series, as stored (any transfer syntax), into
    `out_dir`/<study>/<series>/<instance>.dcm; the files written."""
    client = _client(url)
    media = (("application/dicom", "*"),)  # as the archive holds it: no transcoding, voxel-identical
    if series_uid:
        instances = _call(url, "WADO-RS", lambda: client.iter_series(study_uid, series_uid, media_types=media))
    else:
        instances = _call(url, "WADO-RS", lambda: client.iter_study(study_uid, media_types=media))
    files: list[Path] = []
    root = Path(out_dir)
    iterator = iter(instances)
    while True:
        ds = _call(url, "WADO-RS", lambda: next(iterator, None))
        if ds is None:
            break
        uids = tuple(str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))
        try:
            files.append(write_instance(root, uids, lambda tmp, ds=ds: ds.save_as(tmp, enforce_file_format=True)))
        except ValueError as exc:
            raise PacsError(f"{url}: an instance with malformed UIDs ({exc})") from None
        if progress is not None:
            progress(len(files), None)
    tidy(root)
    if not files:
        raise PacsError(f"{url}: WADO-RS returned no instance for this study/series (wrong UID?)")
    return files

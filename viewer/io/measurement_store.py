"""Measurements kept between sessions: one small JSON file per series in the user's folder.

A series is known by a key (its Series Instance UID and grid, else its source path and grid); its file holds
each view's measurements as drawn (kind, slice, handle points in the view's mm, name), so they come back when
the series is opened again, after a restart too. A file that cannot be read is reported, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from viewer.core.errors import LoadError
from viewer.io.atomic_files import write_text_atomic

#: kind, slice index, points (x, y) in the view's mm, name
Record = tuple[str, int, tuple[tuple[float, float], ...], str]
POINTS = {"ruler": 2, "ellipse": 2, "angle": 3, "axes": 4}  # an ellipse: its corner and its size
VERSION = 1


def store_path(folder: str | Path, series_key: str) -> Path:
    return Path(folder) / f"{hashlib.sha1(series_key.encode()).hexdigest()}.json"


def save_measurements(folder: str | Path, series_key: str, views: dict[str, list[Record]]) -> Path:
    """Write every view's records for `series_key` (an empty list deletes that view's); atomic."""
    data = {"version": VERSION, "series": series_key,
            "views": {view: [{"kind": k, "slice": int(i), "points": [list(map(float, p)) for p in pts], "name": n}
                             for k, i, pts, n in records] for view, records in views.items()}}
    path = store_path(folder, series_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1))
    return path


def load_measurements(folder: str | Path, series_key: str) -> dict[str, list[Record]]:
    """The records kept for `series_key` by view ({} when none were kept).

    Raises:
        LoadError: the file exists but is not a measurement file of this series (the message names it).
    """
    path = store_path(folder, series_key)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("series") != series_key:
            raise ValueError("it belongs to another series")
        out: dict[str, list[Record]] = {}
        for view, records in data["views"].items():
            out[str(view)] = []
            for r in records:
                if r["kind"] not in POINTS:
                    raise ValueError(f"unknown measurement kind {r['kind']!r}")
                points = tuple((float(x), float(y)) for x, y in r["points"])
                if len(points) != POINTS[r["kind"]] or not all(math.isfinite(v) for p in points for v in p):
                    raise ValueError(f"a {r['kind']} needs {POINTS[r['kind']]} finite points, got {r['points']}")
                out[str(view)].append((str(r["kind"]), int(r["slice"]), points, str(r.get("name", ""))))
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise LoadError(f"{path}: saved measurements unreadable ({exc})") from None


def set_aside(folder: str | Path, series_key: str) -> Path | None:
    """Move an unreadable measurement file out of the way (`<name>.unreadable`), so that new measurements do not
    overwrite what it held; returns where it went (None when there was none)."""
    path = store_path(folder, series_key)
    if not path.exists():
        return None
    aside = path.with_suffix(".unreadable")
    path.replace(aside)
    return aside

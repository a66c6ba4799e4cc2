"""Crash-recovery autosaves of label-map edits (Qt-free; the GUI saves from a timer).

One file per series, ``<root>/<key>.lunglens-recovery.npz``, with:

* ``header``: JSON (format, key, save time, shape, label counts, the label table, caller's ``meta``);
* ``labels_starts`` / ``labels_values``: the flattened uint8 label map run-length encoded;
* ``touched_starts`` / ``touched_values`` (only when a touched mask was given): the same for it.

Run-length encoding keeps a save of a 600 x 512 x 512 mostly-empty map well under a second. A save goes to a
temporary file in the same folder and is renamed, so a crash (even SIGKILL) mid-save leaves the previous
autosave intact. A file that cannot be read is reported as a RecoveryError (a ValueError), never a crash.

The root folder is ``$LUNGLENS_RECOVERY_DIR`` if set, else ``recovery`` in the per-user data folder
(`viewer.io.user_dirs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from viewer.core.volume import Volume
from viewer.io.atomic_files import atomic_write
from viewer.io.user_dirs import data_dir
from viewer.labels.table import LabelTable

FORMAT = "lunglens-recovery/1"
SUFFIX = ".lunglens-recovery.npz"
ENV_DIR = "LUNGLENS_RECOVERY_DIR"


class RecoveryError(ValueError):
    """A recovery file is unreadable or does not fit; the message names the file."""


@dataclass(frozen=True)
class RecoveryInfo:
    """What a recovery file holds, read from its header only."""

    key: str
    path: Path
    saved_at: float  # seconds since the epoch
    shape: tuple[int, int, int]
    label_count: int  # distinct non-zero values in the map
    voxel_counts: dict[int, int]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RecoveryData:
    """A loaded recovery file."""

    info: RecoveryInfo
    labels: np.ndarray  # uint8 (z, y, x)
    table: LabelTable
    touched: np.ndarray | None  # bool (z, y, x)


def default_root() -> Path:
    env = os.environ.get(ENV_DIR)
    return Path(env) if env else data_dir() / "recovery"


class RecoveryStore:
    """Autosave files in one folder, one per series key."""

    def __init__(self, root_dir: str | Path | None = None) -> None:
        self.root = Path(root_dir) if root_dir is not None else default_root()

    @staticmethod
    def key_for(volume: Volume) -> str:
        """A file-name-safe key, stable across loads of the same series.

        The SeriesInstanceUID with the grid (a series split into parts gives each part its own key); without a
        UID, the grid and a sample of the voxels.
        """
        geometry = f"{volume.shape}|{np.round(volume.spacing, 4).tolist()}|{np.round(volume.origin, 3).tolist()}"
        uid = volume.metadata.series_instance_uid
        h = hashlib.sha256(geometry.encode())
        if uid:
            h.update(uid.encode())
            return "series-" + h.hexdigest()[:32]
        flat = np.ascontiguousarray(volume.array).reshape(-1)
        step = max(1, flat.size // 65536)
        h.update(np.ascontiguousarray(flat[::step]).tobytes())
        return "volume-" + h.hexdigest()[:32]

    def path_for(self, key: str) -> Path:
        if not key or any(c in key for c in "/\\\0") or key.startswith("."):
            raise ValueError(f"invalid recovery key {key!r}")
        return self.root / f"{key}{SUFFIX}"

    def save(
        self,
        key: str,
        labels: np.ndarray,
        table: LabelTable,
        touched: np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Write the autosave of `key` atomically; `meta` must be JSON-serialisable (e.g. the CT path)."""
        path = self.path_for(key)
        labels = np.asarray(labels)
        if labels.ndim != 3 or labels.dtype != np.uint8:
            raise ValueError(f"recovery saves a 3D uint8 label map, got {labels.dtype} {labels.shape}")
        flat = labels.reshape(-1)
        starts, values = _runs(flat)
        counts = np.bincount(values, weights=np.diff(np.append(starts, flat.size)), minlength=256)
        voxel_counts = {int(v): int(counts[v]) for v in np.flatnonzero(counts) if v}
        header = {
            "format": FORMAT, "key": key, "saved_at": time.time(), "shape": list(labels.shape),
            "voxel_counts": {str(v): n for v, n in voxel_counts.items()}, "table": table.to_dict(),
            "meta": meta or {},
        }
        arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8),
                  "labels_starts": starts, "labels_values": values}
        if touched is not None:
            touched = np.asarray(touched, dtype=bool)
            if touched.shape != labels.shape:
                raise ValueError(f"touched mask shape {touched.shape} does not match the labels {labels.shape}")
            arrays["touched_starts"], arrays["touched_values"] = _runs(touched.reshape(-1).view(np.uint8))
        self.root.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)  # the runs are small already; zip deflate would cost more than it saves

        atomic_write(path, write, suffix=".tmp")  # fsynced, umask mode, stale temporaries removed
        return path

    def find(self, key: str) -> RecoveryInfo | None:
        """The autosave of `key`, or None; RecoveryError if the file is there but unreadable."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        with self._open(path) as npz:
            return self._info(path, npz)

    def entries(self) -> tuple[list[RecoveryInfo], list[str]]:
        """Every readable autosave (newest first) and a message for each unreadable one."""
        infos, problems = [], []
        for path in sorted(self.root.glob(f"*{SUFFIX}")) if self.root.is_dir() else []:
            try:
                with self._open(path) as npz:
                    infos.append(self._info(path, npz))
            except RecoveryError as exc:
                problems.append(str(exc))
        infos.sort(key=lambda i: -i.saved_at)
        return infos, problems

    def load(self, key: str, *, expected_shape: tuple[int, ...] | None = None) -> RecoveryData:
        """The label map, table and touched mask saved for `key`.

        Raises:
            RecoveryError: no file, an unreadable one, or one whose shape is not `expected_shape`.
        """
        path = self.path_for(key)
        if not path.is_file():
            raise RecoveryError(f"{path}: no recovery file")
        with self._open(path) as npz:
            info = self._info(path, npz)
            if expected_shape is not None and tuple(expected_shape) != info.shape:
                raise RecoveryError(f"{path}: saved for a {info.shape} volume, not {tuple(expected_shape)}")
            try:
                header = json.loads(bytes(npz["header"]).decode())
                table = LabelTable.from_dict(header["table"])
                size = int(np.prod(info.shape))
                labels = _expand(npz["labels_starts"], npz["labels_values"], size)
                touched = None
                if "touched_starts" in npz.files:
                    touched = _expand(npz["touched_starts"], npz["touched_values"], size) > 0
            except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
                raise RecoveryError(f"{path}: damaged recovery file: {exc}") from None
        return RecoveryData(info, labels.reshape(info.shape),
                            table, touched.reshape(info.shape) if touched is not None else None)

    def discard(self, key: str) -> None:
        """Remove the autosave of `key` and any temporary file a killed save left behind."""
        path = self.path_for(key)
        for p in [path, *self.root.glob(f".{path.name}.*.tmp")]:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def _open(path: Path) -> Iterator[Any]:
        # our own file handle: np.load leaks its handle when the zip directory is damaged
        try:
            fh = open(path, "rb")
        except OSError as exc:
            raise RecoveryError(f"{path}: cannot read the recovery file: {exc}") from None
        with fh:
            try:
                npz = np.load(fh, allow_pickle=False)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise RecoveryError(f"{path}: damaged recovery file: {exc}") from None
            with npz:
                yield npz

    @staticmethod
    def _info(path: Path, npz) -> RecoveryInfo:
        try:
            header = json.loads(bytes(npz["header"]).decode())
            if header.get("format") != FORMAT:
                raise ValueError(f"unknown format {header.get('format')!r}")
            shape = tuple(int(n) for n in header["shape"])
            if len(shape) != 3:
                raise ValueError(f"shape {shape} is not 3D")
            counts = {int(v): int(n) for v, n in header["voxel_counts"].items()}
            return RecoveryInfo(str(header["key"]), path, float(header["saved_at"]), shape,
                                len(counts), counts, dict(header.get("meta") or {}))
        except (KeyError, ValueError, TypeError, AttributeError, OSError, zipfile.BadZipFile) as exc:
            raise RecoveryError(f"{path}: damaged recovery file: {exc}") from None


def _runs(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start index and value of each run of equal values in a 1D uint8 array."""
    if flat.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    dtype = np.uint32 if flat.size < 2**32 else np.int64
    starts = np.concatenate(([0], change)).astype(dtype)
    return starts, flat[starts]


def _expand(starts: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Inverse of `_runs`; RecoveryError-worthy ValueError if the runs do not describe `size` voxels."""
    starts = np.asarray(starts, dtype=np.int64)
    if starts.shape != values.shape or (size and (starts.size == 0 or starts[0] != 0)):
        raise ValueError("run table is inconsistent")
    if starts.size and (np.any(np.diff(starts) <= 0) or starts[-1] >= size):
        raise ValueError("run starts are out of order or out of range")
    lengths = np.diff(np.append(starts, size))
    return np.repeat(np.asarray(values, np.uint8), lengths)

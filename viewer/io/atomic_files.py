"""Atomic, verified file writes: a save lands whole or leaves the previous file untouched.

A file is written to a temporary name beside its target (``.<name>.lltmp-<pid>-<token><suffix>``), checked,
fsynced, given the target's mode (a new file gets the process umask's), and renamed over the target; the
folder is fsynced after the rename. Writers that do not raise on a short write (SimpleITK prints "wrote only
0 of N bytes" and goes on) are caught by the check: `write_image_verified` reads the file back and compares
the voxels. Temporaries left by a killed process are removed by the next write beside them.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.io.nifti_raw import HEADER_BYTES, is_nifti, open_nifti, read_layout

TEMP_MARK = ".lltmp-"
_LEGACY_AGE_S = 600.0  # temporaries of older versions (mkstemp names) are removed once this old


class WriteError(OSError):
    """A file was not written completely; the message names it and says whether the disk is full.

    `problem` is the message without the file name (for a caller that names another file).
    """

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


def write_error(path: str | Path, problem: str, *, folder: str | Path | None = None) -> WriteError:
    """A WriteError for `path` that says "disk full" when its file system has (almost) no space left."""
    folder = Path(folder) if folder is not None else Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        problem = f"disk full ({free} bytes free in {folder}): {problem}"
    return WriteError(f"{path}: not saved: {problem}; the previous file is untouched", problem)


def _as_write_error(path: Path, exc: OSError) -> WriteError:
    if isinstance(exc, WriteError):
        return exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return write_error(path, "disk full" if exc.errno == errno.ENOSPC else "disk quota exceeded")
    return write_error(path, exc.strerror or str(exc))


class StagedFile:
    """A finished, verified and fsynced temporary file waiting to be renamed over its target.

    `commit()` renames it; `discard()` removes it. Several staged files can be committed in a chosen order
    (see `viewer.io.nifti_labels`), each rename atomic.
    """

    def __init__(self, target: Path, tmp: Path) -> None:
        self.target, self.tmp = target, tmp

    def commit(self) -> Path:
        try:
            os.replace(self.tmp, self.target)
        except OSError as exc:
            self.discard()
            raise _as_write_error(self.target, exc) from None
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.target.parent)
        return self.target

    def discard(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


def stage(path: str | Path, write: Callable[[str], None], *, suffix: str = "",
          verify: Callable[[str], None] | None = None, sync: bool = True) -> StagedFile:
    """Call `write(tmp)` for a temporary file beside `path`, then `verify(tmp)` (raising WriteError), and fsync
    (unless `sync` is False: a scratch file that is read and discarded, never committed).

    Any OSError (ENOSPC included) becomes a WriteError naming `path`; the temporary file is removed then.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")
    staged = StagedFile(path, tmp)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
        write(str(tmp))
        if verify is not None:
            verify(str(tmp))
        if sync:
            _fsync_file(tmp)
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))  # an overwritten file keeps its mode
        except FileNotFoundError:
            pass
    except OSError as exc:
        error = _as_write_error(path, exc)  # before the temporary goes: its size tells whether the disk is full
        staged.discard()
        raise error from None
    except BaseException:
        staged.discard()
        raise
    return staged


def atomic_write(path: str | Path, write: Callable[[str], None], *, suffix: str = "",
                 verify: Callable[[str], None] | None = None) -> Path:
    """`stage` and commit: `path` holds the new content, or (on any error) what it held before."""
    return stage(path, write, suffix=suffix, verify=verify).commit()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write, suffix=".tmp")


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(path, write, suffix=".tmp")


def image_suffix(path: str | Path) -> str:
    """The suffix SimpleITK needs to pick the format of `path` (".nii.gz" kept whole)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(path).suffix


def stage_image(path: str | Path, image: sitk.Image, array: np.ndarray, *, compress: bool = True) -> StagedFile:
    """Stage `image` (whose voxels are `array`, z-y-x) for `path`, verified: a NIfTI by its size (see
    `nifti_complete`), other formats by reading them back."""
    path = Path(path)

    def write(tmp: str) -> None:
        try:
            sitk.WriteImage(image, tmp, useCompression=compress)
        except RuntimeError as exc:
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), str(exc))
            raise write_error(path, f"the image writer failed: {first.strip()}") from None

    def verify(tmp: str) -> None:
        complete = nifti_complete(tmp, array)
        if complete is False:
            raise write_error(path, "the written file is shorter than its voxels (short write)")
        if complete:
            return
        try:
            written = sitk.ReadImage(tmp)
        except RuntimeError:
            raise write_error(path, "the written file cannot be read back (short write)") from None
        back = sitk.GetArrayViewFromImage(written)  # `written` stays referenced: the view borrows its buffer
        if back.shape != array.shape or not _same_voxels(back, array):
            raise write_error(path, "the written file does not read back as written (short write)")

    return stage(path, write, suffix=image_suffix(path), verify=verify)


def nifti_complete(path: str | Path, array: np.ndarray) -> bool | None:
    """Whether a NIfTI file just written holds all of `array`'s bytes (None: not a NIfTI file, cannot tell).

    .nii: the file size is the header's vox_offset plus the voxel bytes. .nii.gz: the gzip trailer (the
    last thing written) gives the inflated size, modulo 2^32; a file cut short ends inside the deflate
    stream, so its last four bytes match that size only by a 1 in 2^32 chance. Costs a few reads, not a
    decompression of the whole file.
    """
    if not is_nifti(path):
        return None
    try:
        with open_nifti(path) as fh:
            head = fh.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error):
        return False
    layout = read_layout(head)
    if layout is None:
        return None if len(head) >= 4 else False
    expected = layout.vox_offset + array.nbytes
    size = os.path.getsize(path)
    if not str(path).lower().endswith(".gz"):
        return size == expected
    if size < 18:
        return False
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        isize = struct.unpack("<I", fh.read(4))[0]
    return isize == expected % (1 << 32)


def _same_voxels(back: np.ndarray, array: np.ndarray) -> bool:
    if array.dtype.kind != "f":
        return bool(np.array_equal(back, array))
    finite = np.isfinite(array)
    if finite.all():
        return bool(np.array_equal(back, array))
    return bool(np.array_equal(back[finite], array[finite]))  # ITK's NIfTI reader gives NaN and inf as 0


def write_image_verified(path: str | Path, image: sitk.Image, array: np.ndarray, *, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically, refusing any short write (see `stage_image`)."""
    return stage_image(path, image, array, compress=compress).commit()


def remove_stale_temporaries(path: str | Path, *, pattern: str | None = None) -> list[Path]:
    """Remove the temporaries of `path` that no running process owns (left by a kill); returns them.

    `pattern` (a regular expression for the target's name) widens this to the temporaries of every file
    beside `path` whose name matches it, e.g. the versioned companions of a label map.
    """
    path = Path(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    target = re.compile(pattern if pattern is not None else re.escape(path.name))
    legacy = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}(\.nii\.gz|\.[A-Za-z0-9]+)$")
    now = time.time()
    for entry in entries:
        name = entry.name
        mark = name.find(TEMP_MARK)
        if name.startswith(".") and mark > 1 and target.fullmatch(name[1:mark]):
            pid = name[mark + len(TEMP_MARK):].split("-", 1)[0]
            stale = not pid.isdigit() or not _alive(int(pid))
        elif legacy.fullmatch(name):
            try:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_AGE_S
            except OSError:
                stale = False
        else:
            continue
        if stale and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Make renames in `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

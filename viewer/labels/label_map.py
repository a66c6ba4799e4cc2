"""An editable uint8 label map on a CT grid, with sparse-diff undo/redo and change listeners.

Qt-free. Every edit records only the voxels it changed (see `VoxelDiff`); a stroke groups many
edits into one undo step. `touched` marks voxels a person changed, so corrected masks can be
told apart from AI output when they feed training.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from viewer.labels.table import MAX_LABEL, RGB, LabelInfo, LabelTable

Box = tuple[int, int, int, int, int, int]  # (z0, z1, y0, y1, x0, x1), half-open
Listener = Callable[[Box], None]
DEFAULT_MAX_UNDO = 200
DEFAULT_MAX_UNDO_BYTES = 256 * 1024 * 1024
IMPORT_MODES = ("replace", "merge")


def index_dtype(size: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds flat indices 0..size-1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if size <= np.iinfo(dt).max + 1:
            return np.dtype(dt)
    return np.dtype(np.uint64)


@dataclass(frozen=True, eq=False)
class VoxelDiff:
    """The voxels one edit changed: nothing else is stored.

    `index` holds flat (C-order) indices within `box`, the bounding box of the changed voxels;
    `old`/`new` their label values; `old_touched`/`new_touched` their touched flags, bit-packed.
    """

    box: Box
    index: np.ndarray
    old: np.ndarray
    new: np.ndarray
    old_touched: np.ndarray
    new_touched: np.ndarray

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.index, self.old, self.new, self.old_touched, self.new_touched))

    @classmethod
    def from_flat(cls, shape: tuple[int, int, int], flat: np.ndarray, old: np.ndarray, new: np.ndarray,
                  old_touched: np.ndarray, new_touched: np.ndarray) -> VoxelDiff:
        """Build from sorted volume-flat indices and per-voxel values/flags (bool)."""
        zz, yy, xx = np.unravel_index(flat, shape)
        return cls._from_coords(zz, yy, xx, old, new, old_touched, new_touched)

    @classmethod
    def _from_coords(cls, zz: np.ndarray, yy: np.ndarray, xx: np.ndarray, old: np.ndarray, new: np.ndarray,
                     old_touched: np.ndarray, new_touched: np.ndarray) -> VoxelDiff:
        z0, z1 = int(zz.min()), int(zz.max()) + 1
        y0, y1 = int(yy.min()), int(yy.max()) + 1
        x0, x1 = int(xx.min()), int(xx.max()) + 1
        ny, nx = y1 - y0, x1 - x0
        dt = index_dtype((z1 - z0) * ny * nx)
        local = ((zz.astype(np.int64) - z0) * ny + (yy - y0)) * nx + (xx - x0)
        return cls((z0, z1, y0, y1, x0, x1), local.astype(dt), np.asarray(old, np.uint8),
                   np.asarray(new, np.uint8), np.packbits(old_touched), np.packbits(new_touched))

    def flat_indices(self, shape: tuple[int, int, int]) -> np.ndarray:
        """Indices of the changed voxels into the C-order flattened volume of `shape`."""
        z0, z1, y0, y1, x0, x1 = self.box
        ny, nx = y1 - y0, x1 - x0
        local = self.index.astype(np.int64)
        zz, rest = np.divmod(local, ny * nx)
        yy, xx = np.divmod(rest, nx)
        return ((zz + z0) * shape[1] + (yy + y0)) * shape[2] + (xx + x0)

    def touched_flags(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.size
        return (np.unpackbits(self.old_touched, count=n).astype(bool),
                np.unpackbits(self.new_touched, count=n).astype(bool))


RowChange = tuple[int, LabelInfo | None, LabelInfo | None]  # (value, before, after); None = absent


@dataclass
class _Step:
    name: str
    diff: VoxelDiff | None
    rows: list[RowChange]

    @property
    def nbytes(self) -> int:
        return 256 + (self.diff.nbytes if self.diff is not None else 0)


@dataclass
class _Pending:
    name: str
    diffs: list[VoxelDiff]
    rows: list[RowChange]


class LabelMap:
    """An editable uint8 label map (z, y, x) with its label table, touched mask and history.

    Args:
        array: label values, 0 = background; every other value must be in `table`. Copied unless
            `copy=False` and it already is a C-contiguous uint8 array.
        spacing: voxel size (z, y, x) in mm.
        table: the labels; default `LabelTable.default()`.
        touched: True where a person changed a voxel; default all False.
        max_undo: undo steps kept (the oldest are dropped).
        max_undo_bytes: memory cap of the history; the oldest steps are dropped to stay under it
            (a single step larger than the cap cannot be undone).

    Edit only through the methods: writing to `array` directly bypasses history and listeners.
    Undo and redo restore voxels bit-exactly, ignoring locks.
    """

    def __init__(self, array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 table: LabelTable | None = None, *, touched: np.ndarray | None = None,
                 max_undo: int = DEFAULT_MAX_UNDO, max_undo_bytes: int = DEFAULT_MAX_UNDO_BYTES,
                 copy: bool = True) -> None:
        arr = np.asarray(array)
        if arr.ndim != 3 or min(arr.shape) < 1:
            raise ValueError(f"a label map needs a non-empty 3D array (z, y, x), got shape {arr.shape}")
        if arr.dtype != bool and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"label values must be integers, got dtype {arr.dtype}")
        if arr.dtype != np.uint8 and arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_LABEL):
            raise ValueError(f"label values must be 0..{MAX_LABEL}, got {int(arr.min())}..{int(arr.max())}")
        self._array = np.array(arr, dtype=np.uint8, order="C") if copy else np.ascontiguousarray(arr, np.uint8)
        self._spacing = _check_spacing(spacing)
        self._table = table.copy() if table is not None else LabelTable.default()
        present = np.flatnonzero(np.bincount(self._array.reshape(-1), minlength=MAX_LABEL + 1))
        unknown = [int(v) for v in present if v and v not in self._table]
        if unknown:
            raise ValueError(f"label values {unknown} are not in the label table")
        if touched is None:
            self._touched = np.zeros(self._array.shape, bool)
        else:
            t = np.asarray(touched)
            if t.shape != self._array.shape or t.dtype != bool:
                raise ValueError(f"touched must be a bool array of shape {self._array.shape}, got {t.dtype} {t.shape}")
            self._touched = np.array(t, order="C") if copy else np.ascontiguousarray(t)
        if int(max_undo) < 0 or int(max_undo_bytes) < 0:
            raise ValueError("max_undo and max_undo_bytes must be >= 0")
        self.max_undo = int(max_undo)
        self.max_undo_bytes = int(max_undo_bytes)
        self._undo: deque[_Step] = deque()
        self._redo: list[_Step] = []
        self._pending: _Pending | None = None
        self._depth = 0
        self._listeners: list[Listener] = []
        self.revision = 0
        self.dirty = False

    @classmethod
    def empty(cls, shape: tuple[int, int, int], spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
              table: LabelTable | None = None, **kwargs: Any) -> LabelMap:
        """An all-background label map of `shape`."""
        dims = tuple(int(n) for n in shape)
        if len(dims) != 3 or min(dims) < 1:
            raise ValueError(f"shape must be three sizes >= 1, got {dims}")
        return cls(np.zeros(dims, np.uint8), spacing, table, copy=False, **kwargs)

    # -- state --------------------------------------------------------------------------

    @property
    def array(self) -> np.ndarray:
        return self._array

    @property
    def touched(self) -> np.ndarray:
        return self._touched

    @property
    def table(self) -> LabelTable:
        return self._table

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self._spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._array.shape

    @property
    def full_box(self) -> Box:
        nz, ny, nx = self.shape
        return (0, nz, 0, ny, 0, nx)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self._spacing)) / 1000.0

    def mark_clean(self) -> None:
        """Call after saving: clears `dirty` (the revision keeps counting)."""
        self.dirty = False

    def check_value(self, value: int, *, allow_background: bool = True, allow_locked: bool = False) -> int:
        """`value` as an int after checking it is a known label (or 0) and, unless allowed, not locked."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"a label value must be an integer, got {value!r}")
        v = int(value)
        if v == 0 and allow_background:
            return 0
        if not 1 <= v <= MAX_LABEL:
            raise ValueError(f"label value {v} is out of range 1..{MAX_LABEL}")
        if v not in self._table:
            raise ValueError(f"unknown label {v}; known labels: {self._table.values()}")
        if not allow_locked and self._table[v].locked:
            raise ValueError(f"label {v} ({self._table[v].name!r}) is locked; unlock it first")
        return v

    def editable(self, overwrite: Collection[int] | None = None) -> np.ndarray:
        """Look-up table (256 bools): which current values an edit may replace.

        `overwrite=None` allows every label except locked ones (background included); otherwise only
        the listed values (0 = background), and never locked labels.
        """
        lut = np.zeros(MAX_LABEL + 1, bool)
        if overwrite is None:
            lut[0] = True
            lut[self._table.values()] = True
        else:
            lut[[self.check_value(v, allow_locked=True) for v in overwrite]] = True
        lut[sorted(self._table.locked_values())] = False
        return lut

    def bounding_box(self, value: int) -> Box | None:
        """Bounding box of the voxels labelled `value`, or None if there are none."""
        v = self.check_value(value, allow_background=False, allow_locked=True)
        zs = np.zeros(self.shape[0], bool)
        ys = np.zeros(self.shape[1], bool)
        xs = np.zeros(self.shape[2], bool)
        for k0 in range(0, self.shape[0], 32):  # chunks keep the temporaries small
            m = self._array[k0:k0 + 32] == v
            zs[k0:k0 + 32] = m.any(axis=(1, 2))
            ys |= m.any(axis=(0, 2))
            xs |= m.any(axis=(0, 1))
        if not zs.any():
            return None
        (z,), (y,), (x,) = np.nonzero(zs), np.nonzero(ys), np.nonzero(xs)
        return int(z[0]), int(z[-1]) + 1, int(y[0]), int(y[-1]) + 1, int(x[0]), int(x[-1]) + 1

    # -- listeners ----------------------------------------------------------------------

    def on_change(self, callback: Listener) -> Listener:
        """Call `callback(box)` after every change of voxels or of the table (the whole volume then)."""
        self._listeners.append(callback)
        return callback

    def remove_listener(self, callback: Listener) -> None:
        self._listeners.remove(callback)

    def _changed(self, box: Box) -> None:
        self.revision += 1
        self.dirty = True
        for cb in list(self._listeners):
            cb(box)

    # -- strokes and history ------------------------------------------------------------

    def begin_stroke(self, name: str = "stroke") -> None:
        """Start grouping edits into one undo step (nestable; the outermost name wins)."""
        if self._depth == 0:
            self._pending = _Pending(name, [], [])
        self._depth += 1

    def end_stroke(self) -> None:
        """Close the group: its edits become one undo step (none if nothing changed)."""
        if self._depth == 0:
            raise ValueError("end_stroke() without begin_stroke()")
        self._depth -= 1
        if self._depth:
            return
        pending, self._pending = self._pending, None
        assert pending is not None
        diff = _merge(self.shape, pending.diffs)
        if diff is None and not pending.rows:
            return
        self._push(_Step(pending.name, diff, pending.rows))

    @contextmanager
    def stroke(self, name: str = "stroke") -> Iterator[LabelMap]:
        """`with labels.stroke("brush"): ...` groups every edit inside into one undo step."""
        self.begin_stroke(name)
        try:
            yield self
        finally:
            self.end_stroke()

    @property
    def in_stroke(self) -> bool:
        return self._depth > 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_names(self) -> list[str]:
        """Names of the undo steps, oldest first."""
        return [s.name for s in self._undo]

    @property
    def history_nbytes(self) -> int:
        """Memory held by the undo and redo history."""
        return sum(s.nbytes for s in self._undo) + sum(s.nbytes for s in self._redo)

    def last_diff(self) -> VoxelDiff | None:
        """The voxel diff of the newest undo step (None if there is none or it changed only the table)."""
        return self._undo[-1].diff if self._undo else None

    def clear_history(self) -> None:
        self._undo.clear()
        self._redo.clear()

    def undo(self) -> bool:
        """Revert the newest step; False if there is nothing to undo."""
        return self._step_back_or_forth(self._undo, self._redo, forward=False)

    def redo(self) -> bool:
        """Re-apply the newest undone step; False if there is nothing to redo."""
        return self._step_back_or_forth(self._redo, self._undo, forward=True)

    def _step_back_or_forth(self, source: deque[_Step] | list[_Step], target: deque[_Step] | list[_Step],
                            forward: bool) -> bool:
        if self._depth:
            raise ValueError("cannot undo or redo during a stroke; call end_stroke() first")
        if not source:
            return False
        step = source.pop()
        box = None
        if step.diff is not None:
            d = step.diff
            old_t, new_t = d.touched_flags()
            flat = d.flat_indices(self.shape)
            self._array.reshape(-1)[flat] = d.new if forward else d.old
            self._touched.reshape(-1)[flat] = new_t if forward else old_t
            box = d.box
        if step.rows:
            for value, before, after in (step.rows if forward else reversed(step.rows)):
                self._set_row(value, after if forward else before)
            box = self.full_box
        target.append(step)
        assert box is not None
        self._changed(box)
        return True

    def _push(self, step: _Step) -> None:
        self._redo.clear()
        self._undo.append(step)
        total = sum(s.nbytes for s in self._undo)
        while self._undo and (len(self._undo) > self.max_undo or total > self.max_undo_bytes):
            total -= self._undo.popleft().nbytes

    def _record(self, name: str, diff: VoxelDiff | None, row: RowChange | None = None) -> None:
        with self.stroke(name):
            p = self._pending
            assert p is not None
            if diff is not None:
                p.diffs.append(diff)
            if row is not None:
                p.rows.append(row)

    def _set_row(self, value: int, info: LabelInfo | None) -> None:
        """Undo/redo of a table row: name and colour come back; opacity, visibility and lock stay as they are."""
        if info is None:
            self._table.remove(value)
        elif value in self._table:
            self._table.update(value, name=info.name, color=info.color)
        else:
            self._table.add(info)

    # -- voxel edits ---------------------------------------------------------------------

    def write(self, box: Box, mask: np.ndarray, value: int, *, overwrite: Collection[int] | None = None,
              touched: bool = True, name: str = "edit") -> Box | None:
        """Set the voxels of `mask` (bool, the shape of `box`) to `value`, within the constraints.

        Only voxels whose current label is editable (see `editable`) change; locked labels never do.
        `touched=True` marks the changed voxels as edited by a person, False clears their mark (the
        value came from elsewhere, e.g. the AI). Returns the bounding box of what changed, or None.
        """
        value = self.check_value(value)
        return self._apply(box, mask, np.uint8(value), self.editable(overwrite), touched, name)

    def _apply(self, box: Box, mask: np.ndarray, new: np.uint8 | np.ndarray, editable: np.ndarray,
               touched: bool, name: str, notify: bool = True) -> Box | None:
        sl = self._slices(box)
        mask = np.asarray(mask)
        region = self._array[sl]
        if mask.dtype != bool or mask.shape != region.shape:
            raise ValueError(f"mask must be a bool array of shape {region.shape}, got {mask.dtype} {mask.shape}")
        cur = region
        changed = mask & editable[cur]
        changed &= cur != new
        zz, yy, xx = np.nonzero(changed)
        if len(zz) == 0:
            return None
        z0, _, y0, _, x0, _ = box
        tregion = self._touched[sl]
        old = cur[zz, yy, xx]
        new_vals = np.broadcast_to(new, cur.shape)[zz, yy, xx] if np.ndim(new) else np.full(len(zz), new, np.uint8)
        old_t = tregion[zz, yy, xx]
        new_t = np.full(len(zz), bool(touched))
        region[zz, yy, xx] = new_vals
        tregion[zz, yy, xx] = new_t
        diff = VoxelDiff._from_coords(zz + z0, yy + y0, xx + x0, old, new_vals, old_t, new_t)
        self._record(name, diff)
        if notify:
            self._changed(diff.box)
        return diff.box

    def _slices(self, box: Box) -> tuple[slice, slice, slice]:
        if len(box) != 6:
            raise ValueError(f"a box is (z0, z1, y0, y1, x0, x1), got {box!r}")
        b = [int(v) for v in box]
        for a in range(3):
            lo, hi = b[2 * a], b[2 * a + 1]
            if not 0 <= lo < hi <= self.shape[a]:
                raise ValueError(f"box {tuple(b)} is empty or outside the volume {self.shape}")
        return slice(b[0], b[1]), slice(b[2], b[3]), slice(b[4], b[5])

    def import_mask(self, mask: np.ndarray, value: int | Mapping[int, int] | None = None, *,
                    mode: str = "replace", name: str = "import") -> Box | None:
        """Start from an AI result: copy a mask into the label map as one undoable step.

        Args:
            mask: bool (then `value` is the label to set) or integer labels on the same grid.
            value: for integer masks: None keeps the values (they must be in the table), an int maps every
                non-zero value to it, a mapping {mask value: label} imports only the values it lists.
            mode: "replace": every unlocked voxel becomes the imported label or background;
                "merge": only the imported voxels change, over any unlocked label.

        Changed voxels are not marked `touched` (their mark is cleared): the values came from the AI.
        """
        if mode not in IMPORT_MODES:
            raise ValueError(f"mode must be one of {IMPORT_MODES}, got {mode!r}")
        src = np.asarray(mask)
        if src.shape != self.shape:
            raise ValueError(f"mask shape {src.shape} does not match the label map {self.shape}")
        target = np.zeros(MAX_LABEL + 1, np.uint8)  # mask value -> label
        chosen = np.zeros(MAX_LABEL + 1, bool)  # mask values that are imported
        if src.dtype == bool:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError("importing a bool mask needs the label value to set")
            src = src.view(np.uint8)
            target[1] = self.check_value(value, allow_background=False)
        elif np.issubdtype(src.dtype, np.integer):
            lo, hi = int(src.min()), int(src.max())
            if lo < 0 or hi > MAX_LABEL:
                raise ValueError(f"mask values must be 0..{MAX_LABEL}, got {lo}..{hi}")
            src = src.astype(np.uint8, copy=False)
            present = [int(v) for v in np.flatnonzero(np.bincount(src.reshape(-1))) if v]
            if value is None:
                mapping = {int(v): int(v) for v in present}
            elif isinstance(value, Mapping):
                mapping = {int(k): int(v) for k, v in value.items()}
            elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                mapping = {int(v): int(value) for v in present}
            else:
                raise ValueError(f"value must be None, a label value or a mapping, got {value!r}")
            for k, v in mapping.items():
                if not 1 <= k <= MAX_LABEL:
                    raise ValueError(f"mask value {k} in the mapping is out of range 1..{MAX_LABEL}")
                target[k] = self.check_value(v)
        else:
            raise ValueError(f"mask must be bool or integer, got dtype {src.dtype}")
        chosen[1:] = target[1:] > 0
        if isinstance(value, Mapping):
            chosen[[int(k) for k in value]] = True
        editable = self.editable(None)
        with self.stroke(name):
            changed: list[Box | None] = []
            for k0 in range(0, self.shape[0], 32):  # slabs keep the temporaries small
                k1 = min(k0 + 32, self.shape[0])
                part = src[k0:k1]
                sel = chosen[part] if mode == "merge" else np.ones(part.shape, bool)
                changed.append(self._apply((k0, k1, *self.full_box[2:]), sel, target[part], editable, False, name,
                                           notify=False))
        box = union_boxes(changed)
        if box is not None:  # one notification for the whole import
            self._changed(box)
        return box

    def snapshot(self) -> LabelMap:
        """A copy of the voxels, edited marks and table, without history or listeners: an operation
        can run on it in a worker thread and `adopt` brings its result back."""
        return LabelMap(self._array, self.spacing, self._table, touched=self._touched)

    def adopt(self, other: LabelMap, box: Box, name: str) -> Box | None:
        """Take `other`'s voxels and edited marks inside `box` as one undo step named `name`.

        `other` is a `snapshot` an operation has changed; voxels of locked labels here never change.
        Returns the bounding box of what changed, or None.
        """
        if other.shape != self.shape:
            raise ValueError(f"shape {other.shape} differs from the label map's {self.shape}")
        sl = self._slices(box)
        cur, new = self._array[sl], other.array[sl]
        tcur, tnew = self._touched[sl], other.touched[sl]
        changed = ((cur != new) | (tcur != tnew)) & self.editable(None)[cur]
        zz, yy, xx = np.nonzero(changed)
        if len(zz) == 0:
            return None
        old, new_vals = cur[zz, yy, xx], new[zz, yy, xx]
        old_t, new_t = tcur[zz, yy, xx], tnew[zz, yy, xx]
        cur[zz, yy, xx], tcur[zz, yy, xx] = new_vals, new_t
        z0, _, y0, _, x0, _ = box
        diff = VoxelDiff._from_coords(zz + z0, yy + y0, xx + x0, old, new_vals, old_t, new_t)
        self._record(name, diff)
        self._changed(diff.box)
        return diff.box

    def clear(self, name: str = "clear") -> Box | None:
        """Set every unlocked voxel to background (one undoable step)."""
        return self.import_mask(np.zeros(self.shape, np.uint8), mode="replace", name=name)

    # -- label table edits ---------------------------------------------------------------

    def add_label(self, name: str, color: RGB | None = None) -> LabelInfo:
        """Add a label with the first free value (undoable)."""
        info = self._table.new(name, color)
        self._table_changed("add label", (info.value, None, info))
        return info

    def rename_label(self, value: int, name: str) -> LabelInfo:
        return self._update(value, "rename label", name=name)

    def recolor_label(self, value: int, color: RGB) -> LabelInfo:
        return self._update(value, "recolour label", color=color)

    def set_label_display(self, value: int, *, opacity: float | None = None, visible: bool | None = None,
                          locked: bool | None = None) -> LabelInfo:
        """Change opacity, visibility or lock (not undo steps: they are view and protection state)."""
        v = self.check_value(value, allow_background=False, allow_locked=True)
        changes = {k: x for k, x in (("opacity", opacity), ("visible", visible), ("locked", locked)) if x is not None}
        info = self._table.update(v, **changes)
        self._changed(self.full_box)
        return info

    def delete_label(self, value: int) -> LabelInfo:
        """Remove a label from the table and clear its voxels, as one undoable step."""
        v = self.check_value(value, allow_background=False)
        info = self._table[v]
        with self.stroke(f"delete label {info.name}"):
            box = self.bounding_box(v)
            if box is not None:
                lut = np.zeros(MAX_LABEL + 1, bool)
                lut[v] = True
                self._apply(box, self._array[self._slices(box)] == v, np.uint8(0), lut, True, "delete label")
            self._table.remove(v)
            self._table_changed("delete label", (v, info, None))
        return info

    def _update(self, value: int, step: str, **changes: Any) -> LabelInfo:
        v = self.check_value(value, allow_background=False, allow_locked=True)
        before = self._table[v]
        after = self._table.update(v, **changes)
        self._table_changed(step, (v, before, after))
        return after

    def _table_changed(self, name: str, row: RowChange) -> None:
        self._record(name, None, row)
        self._changed(self.full_box)


def _check_spacing(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}") from None
    if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
        raise ValueError(f"spacing must be three positive numbers, got {spacing!r}")
    return sp


def _merge(shape: tuple[int, int, int], diffs: list[VoxelDiff]) -> VoxelDiff | None:
    """One diff from many, in order: per voxel the first old value and the last new value."""
    if not diffs:
        return None
    if len(diffs) == 1:
        return diffs[0]
    flat = np.concatenate([d.flat_indices(shape) for d in diffs])
    old = np.concatenate([d.old for d in diffs])
    new = np.concatenate([d.new for d in diffs])
    flags = [d.touched_flags() for d in diffs]
    old_t = np.concatenate([f[0] for f in flags])
    new_t = np.concatenate([f[1] for f in flags])
    order = np.argsort(flat, kind="stable")  # equal indices stay in edit order
    flat = flat[order]
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    ends = np.r_[starts[1:], len(flat)] - 1
    first, last = order[starts], order[ends]
    uniq = flat[starts]
    o, n, ot, nt = old[first], new[last], old_t[first], new_t[last]
    real = (o != n) | (ot != nt)
    if not real.any():
        return None
    return VoxelDiff.from_flat(shape, uniq[real], o[real], n[real], ot[real], nt[real])


def union_boxes(boxes: Collection[Box | None]) -> Box | None:
    """The bounding box of several boxes (None entries ignored); None if there are none."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    b = np.array(boxes)
    return (int(b[:, 0].min()), int(b[:, 1].max()), int(b[:, 2].min()), int(b[:, 3].max()),
            int(b[:, 4].min()), int(b[:, 5].max()))

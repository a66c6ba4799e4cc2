"""Annotation in the main window: the label map being edited, its overlay, files, autosave and prompts.

`AnnotationController` is the glue between the slice views (it is their `EditHandler`), the annotation
panel and the Qt-free model (`LabelMap`, `Annotator`, `RecoveryStore`, `viewer.io.label_maps`). Slow work
(saving, loading, autosaves, statistics) runs in workers on copies of the arrays; edits stay on the GUI
thread, where the views read them. It knows the window only as an `AnnotationHost` and tells it what to show
by signals (`status_message`).
"""

from __future__ import annotations

import datetime as _dt
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shiboken6
from PySide6 import QtCore, QtWidgets

from app.gui.analysis import MASK_LAYER
from app.gui.annotation.host import AnnotationHost
from app.gui.settings import Settings
from app.gui.workers import Worker, start_worker
from viewer.core.errors import LoadError
from viewer.core.version import lunglens_version
from viewer.core.volume import Volume
from viewer.io.label_maps import GridMapping, file_format, load_label_map, save_label_map
from viewer.io.recovery import RecoveryError, RecoveryStore
from viewer.labels.label_map import Box, LabelMap
from viewer.labels.morphology import interpolate_slices, keep_largest, remove_islands, smooth
from viewer.labels.session import BRUSH_TOOLS, Annotator, ToolSettings, interpolation_axis, step_brush_size
from viewer.labels.stats import label_stats
from viewer.labels.table import RGB, LabelTable
from viewer.state.layers import LabelLayer
from viewer.state.view_state import ViewerState

if TYPE_CHECKING:
    from viewer.gui.slice_view import SliceView

LAYER_NAME = "Annotation"
AUTOSAVE_MS = 60_000
SURFACE_DELAY_MS = 500  # the 3D surfaces follow edits this long after the last one
AI_PARTS = ("lungs + lesions", "lungs", "lesions")
Answer = str  # "save", "discard", "cancel", "restore", "keep"
PromptFn = Callable[[str, str], Answer]


class CallWorker(Worker):
    """Runs `fn()` in a worker thread; `outcome((token, ok, result or error message))` reports it."""

    outcome = QtCore.Signal(object)

    def __init__(self, token: int, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.token, self.fn = token, fn

    @QtCore.Slot()
    def run(self) -> None:
        try:
            try:
                result: Any = (self.token, True, self.fn())
            except (ValueError, OSError, LoadError, RecoveryError) as exc:
                result = (self.token, False, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must reach the user as a message, not kill the thread
                result = (self.token, False, f"unexpected error: {exc}\n{traceback.format_exc(limit=3)}")
            self._deliver(self.outcome, result)
        finally:
            self._finish()


class AnnotationController(QtCore.QObject):
    """The editable label map of the open CT and everything around it.

    Signals:
        labels_changed(): a label map was created, replaced or dropped.
        edited(): the voxels or the table changed (coalesced: at most once per turn of the event loop).
        saved(str) / save_failed(str): a save finished (the path) or failed (the message).
        loaded(str) / load_failed(str): a label map file was opened or could not be.
        autosaved(str): a recovery autosave was written (its path).
        stats_ready(object): a list of `LabelStats`.
        ai_available(bool): an AI result can (or no longer can) be imported.
        status_message(str, int): a message for the status bar and how long to show it (ms; 0: until replaced).

    `prompt_answer`, when set, answers the questions instead of a message box: it gets (kind, text) with
    kind "restore" (answers "restore", "discard", "keep") or "unsaved" ("save", "discard", "cancel", "keep").
    Without it a non-interactive host answers "keep": the recovery file is kept (and written first),
    nothing is discarded.
    """

    labels_changed = QtCore.Signal()
    edited = QtCore.Signal()
    saved = QtCore.Signal(str)
    save_failed = QtCore.Signal(str)
    loaded = QtCore.Signal(str)
    load_failed = QtCore.Signal(str)
    autosaved = QtCore.Signal(str)
    stats_ready = QtCore.Signal(object)
    operation_done = QtCore.Signal(str, object)  # (name, changed box or None) of a whole-label operation
    ai_available = QtCore.Signal(bool)
    status_message = QtCore.Signal(str, int)

    def __init__(self, state: ViewerState, app_settings: Settings, host: AnnotationHost,
                 parent: QtCore.QObject | None = None) -> None:
        """`state`: the viewer's (its volume, its layers); `app_settings`: the user's (the last folder)."""
        super().__init__(parent)
        self.state = state
        self.app_settings = app_settings
        self.host = host
        self.settings = ToolSettings()
        self.labels: LabelMap | None = None
        self.annotator: Annotator | None = None
        self.layer: LabelLayer | None = None
        self.mapping: GridMapping | None = None
        self.path: Path | None = None
        self.key: str | None = None
        self.store: RecoveryStore | None = None
        self.ai_masks: tuple[np.ndarray, np.ndarray] | None = None
        self.ai_names: tuple[str, str] = ("", "")  # the algorithms that made the AI's lungs and lesions
        self.ai_values: dict[int, str] = {}  # label values imported from the AI -> the algorithm that made them
        self.prompt_answer: PromptFn | None = None
        self._autosaved_revision = -1
        self._saving = False
        self._autosaving = False
        self._stats_running = False
        self._stats_again = False
        self._operation: str | None = None  # the whole-label operation running in a worker
        self._token = 0
        self._callbacks: dict[int, tuple[Callable[[Any], None], Callable[[str], None]]] = {}
        self._threads: list[QtCore.QThread] = []
        self._autosave_timer = QtCore.QTimer(self, interval=AUTOSAVE_MS)
        self._autosave_timer.timeout.connect(self.autosave)
        self._edited_timer = QtCore.QTimer(self, singleShot=True, interval=0)
        self._edited_timer.timeout.connect(self.edited.emit)
        self._surface_timer = QtCore.QTimer(self, singleShot=True, interval=SURFACE_DELAY_MS)
        self._surface_timer.timeout.connect(self._refresh_surfaces)

    # -- the label map ---------------------------------------------------------------------------

    @property
    def autosave_interval_ms(self) -> int:
        return self._autosave_timer.interval()

    @autosave_interval_ms.setter
    def autosave_interval_ms(self, ms: int) -> None:
        self._autosave_timer.setInterval(int(ms))

    @property
    def dirty(self) -> bool:
        return self.labels is not None and self.labels.dirty

    @property
    def interactive(self) -> bool:
        """Whether questions and dialogs may be shown (the host's say)."""
        return self.host.interactive

    def show_status(self, message: str, timeout_ms: int = 0) -> None:
        """A message for the status bar (`status_message`), for `timeout_ms` (0: until the next one)."""
        self.status_message.emit(message, timeout_ms)

    def volume_loaded(self, volume: Volume) -> None:
        """A new CT is on show (the viewer state already holds it): drop the old map, offer a recovery."""
        self._drop_labels()
        self.mapping = GridMapping.of(volume)
        self.store = RecoveryStore()
        self.key = RecoveryStore.key_for(self.state.volume)
        self.set_ai_result(None)
        self._offer_recovery()

    def ensure_labels(self) -> LabelMap | None:
        """The label map, made (empty) on first use; None without a CT."""
        if self.labels is None and self.state.volume is not None:
            vol = self.state.volume
            self.set_labels(LabelMap.empty(vol.shape, vol.spacing))
        return self.labels

    def set_labels(self, labels: LabelMap, path: Path | None = None) -> None:
        """Edit `labels` (on the viewer's canonical grid) from now on, shown as the annotation layer."""
        state = self.state
        if labels.shape != state.shape:
            raise ValueError(f"label map shape {labels.shape} does not match the CT {state.shape}")
        self._drop_labels()
        self.labels = labels
        self.path = path
        self.annotator = Annotator(labels, state.volume.array, self.settings)
        if self.settings.value not in labels.table or labels.table[self.settings.value].locked:
            free = [i.value for i in labels.table if not i.locked]
            self.settings.value = free[0] if free else self.settings.value
        table = labels.table
        self.layer = LabelLayer(LAYER_NAME, labels.array, colors=table.colors(), names=table.names(),
                                hidden_labels=table.hidden_values(), opacity=0.5)
        labels.on_change(self._on_change)
        self.layer.changed.connect(self._on_layer_display)
        state.layers.add(self.layer, state.shape)
        self._autosaved_revision = labels.revision if not labels.dirty else -1
        self._autosave_timer.start()
        self.labels_changed.emit()
        self.edited.emit()

    def _drop_labels(self) -> None:
        if self.labels is not None:
            if self.annotator is not None and self.annotator.painting:
                self.annotator.release()
            self.labels.remove_listener(self._on_change)
        if self.layer is not None:
            self.layer.changed.disconnect(self._on_layer_display)
            if LAYER_NAME in self.state.layers and self.state.layers[LAYER_NAME] is self.layer:
                self.state.layers.remove(LAYER_NAME)
        had = self.labels is not None
        self.labels = self.annotator = self.layer = None
        self.path = None
        self.ai_values = {}
        self._autosave_timer.stop()
        if had:
            self.labels_changed.emit()

    def _on_change(self, box: Box) -> None:
        """Every edit: redraw the views whose slice it touches; the rest follows, debounced."""
        if self.labels is None or self.layer is None:
            return
        if box == self.labels.full_box:  # table edits announce the whole volume
            self._sync_layer_display()
        self.host.redraw_labels(self.layer, box)
        self._edited_timer.start()
        self._surface_timer.start()

    def _sync_layer_display(self) -> None:
        table, layer = self.labels.table, self.layer
        colors, names, hidden = table.colors(), table.names(), table.hidden_values()
        if colors != layer.colors or names != layer.names or hidden != layer.hidden_labels:
            layer.update(colors=colors, names=names, hidden_labels=hidden)

    def _on_layer_display(self, layer: LabelLayer) -> None:
        """The layer panel changed a colour or a label's visibility: the label table follows."""
        if self.labels is None or layer is not self.layer:
            return
        table = self.labels.table
        for value in table.values():
            visible = value not in layer.hidden_labels
            if table[value].visible != visible:
                self.labels.set_label_display(value, visible=visible)
            color = layer.colors.get(value)
            if color is not None and tuple(color) != table[value].color:
                self.labels.recolor_label(value, tuple(color))

    def _refresh_surfaces(self) -> None:
        """The 3D view rebuilds the label surfaces once edits paused (the host: only while it is on show)."""
        self.host.refresh_label_surfaces()

    # -- edit handler (called by the slice views) --------------------------------------------------

    def stroke_begin(self, view: SliceView, voxel: tuple[int, int, int]) -> None:
        if self.ensure_labels() is None:
            return
        self.settings.tool = view.tool
        self._guard(lambda: self.annotator.press(view.orientation.value, voxel))

    def stroke_move(self, view: SliceView, voxel: tuple[int, int, int]) -> None:
        if self.annotator is not None and self.annotator.painting:
            self._guard(lambda: self.annotator.drag(voxel))

    def stroke_end(self, view: SliceView) -> None:
        if self.annotator is not None:
            self.annotator.release()

    def lasso(self, view: SliceView, points: list[tuple[float, float, float]]) -> None:
        if self.ensure_labels() is None:
            return
        self._guard(lambda: self.annotator.lasso(view.orientation.value, points))

    def outline(self, tool: str) -> tuple[float, RGB] | None:
        if tool not in BRUSH_TOOLS:
            return None
        color: RGB = (255, 255, 255)
        if tool != "eraser" and self.labels is not None and self.settings.value in self.labels.table:
            color = self.labels.table[self.settings.value].color
        return self.settings.diameter_mm, color

    def _guard(self, edit: Callable[[], Any]) -> Any:
        """Run an edit; a refused one (a locked label, a fill over its size limit, ...) is reported as a status
        message, not raised."""
        try:
            return edit()
        except ValueError as exc:
            self.show_status(str(exc), 5000)
            return None

    # -- tool settings -----------------------------------------------------------------------------

    def set_active_label(self, value: int) -> bool:
        """Paint with label `value` from now on; False when there is no such label."""
        labels = self.ensure_labels()
        if labels is None or value not in labels.table:
            return False
        self.settings.value = int(value)
        self.edited.emit()
        return True

    def set_brush_size(self, diameter_mm: float) -> None:
        self.settings.diameter_mm = float(np.clip(diameter_mm, 0.5, 200.0))
        self.edited.emit()

    def step_brush_size(self, larger: bool) -> None:
        self.set_brush_size(step_brush_size(self.settings.diameter_mm, larger))

    # -- undo, visibility, table edits, whole-label operations -------------------------------------

    def undo(self) -> bool:
        return self._history(lambda labels: labels.undo())

    def redo(self) -> bool:
        return self._history(lambda labels: labels.redo())

    def _history(self, step: Callable[[LabelMap], bool]) -> bool:
        if self.labels is None or (self.annotator is not None and self.annotator.painting):
            return False
        done = step(self.labels)
        self.edited.emit()
        return done

    def toggle_visible(self) -> None:
        if self.layer is not None:
            self.layer.update(visible=not self.layer.visible)

    def apply(self, name: str, op: Callable[[LabelMap], Any]) -> Any:
        """Run a label-map operation on the GUI thread (a busy cursor while it runs); errors become status messages."""
        labels = self.ensure_labels()
        if labels is None:
            return None
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.CursorShape.WaitCursor)
        try:
            result = self._guard(lambda: op(labels))
        finally:
            QtWidgets.QApplication.restoreOverrideCursor()
        if result is None:
            self.show_status(f"{name}: nothing changed", 4000)
        return result

    @property
    def operation_running(self) -> str | None:
        """The name of the whole-label operation running in a worker, or None."""
        return self._operation

    def apply_in_worker(self, name: str, op: Callable[[LabelMap], Box | None]) -> bool:
        """Run a whole-label operation on a snapshot in a worker; its result becomes one undo step.

        The GUI stays live meanwhile. Edits made before the result lands win: the result is then dropped
        with a message, never merged over them. `operation_done` reports the outcome. False when the
        operation could not start (no label map, another one running).
        """
        labels = self.ensure_labels()
        if labels is None:
            return False
        if self._operation is not None:
            self.show_status(f"{name}: wait for {self._operation} to finish", 4000)
            return False
        snapshot, revision = labels.snapshot(), labels.revision
        self._operation = name
        self.show_status(f"{name}…")
        QtWidgets.QApplication.setOverrideCursor(QtCore.Qt.CursorShape.BusyCursor)

        def compute() -> tuple[Box | None, LabelMap]:
            return op(snapshot), snapshot

        def done(result: tuple[Box | None, LabelMap]) -> None:
            self._operation_finished()
            box, changed = result
            if box is not None and (self.labels is not labels or labels.revision != revision or labels.in_stroke):
                message, box = f"{name}: the labels changed while it ran; nothing applied, run it again", None
            else:
                if box is not None:
                    box = labels.adopt(changed, box, changed.undo_names[-1] if changed.undo_names else name)
                message = "" if box is not None else f"{name}: nothing changed"
            self.show_status(message, 8000)
            self.operation_done.emit(name, box)

        def failed(message: str) -> None:
            self._operation_finished()
            self.show_status(f"{name}: {message.partition(chr(10))[0] or 'failed'}", 8000)
            self.operation_done.emit(name, None)

        self._run(compute, done, failed)
        return True

    def _operation_finished(self) -> None:
        self._operation = None
        QtWidgets.QApplication.restoreOverrideCursor()

    def interpolate(self) -> bool:
        axis = interpolation_axis(self.annotator.last_plane if self.annotator else "axial")
        value, overwrite = self.settings.value, self.settings.overwrite()
        return self.apply_in_worker("interpolate", lambda lm: interpolate_slices(lm, value, axis=axis,
                                                                                 overwrite=overwrite))

    def remove_islands(self, min_ml: float) -> bool:
        value = self.settings.value
        return self.apply_in_worker("remove islands", lambda lm: remove_islands(lm, value, min_ml=min_ml))

    def keep_largest(self) -> bool:
        value = self.settings.value
        return self.apply_in_worker("keep largest", lambda lm: keep_largest(lm, value))

    def smooth(self, radius_mm: float) -> bool:
        value, overwrite = self.settings.value, self.settings.overwrite()
        return self.apply_in_worker("smooth", lambda lm: smooth(lm, value, radius_mm, overwrite=overwrite))

    # -- AI results --------------------------------------------------------------------------------

    def set_ai_result(self, prediction: Any | None) -> None:
        """Remember the AI's lung and lesion masks (a `Prediction`, on the viewer's grid) for importing."""
        if prediction is None:
            self.ai_masks = None
        else:
            self.ai_masks = (np.asarray(prediction.lung_mask), np.asarray(prediction.lesion_mask))
            model = str(getattr(prediction, "model", "") or "LungLens AI")
            lesions = str(getattr(prediction, "lesion_method", "") or model)
            self.ai_names = ("LungLens lung segmentation",
                             lesions if lesions != "HU range inside the heat map" else f"{model} + HU rule")
        self.ai_available.emit(self.ai_masks is not None)

    def start_from_ai(self, part: str = "lungs + lesions", mode: str = "merge") -> Box | None:
        """Copy the AI's lungs and/or lesions into the label map as one undo step (values as the AI's labels)."""
        if self.ai_masks is None:
            self.show_status("no AI result: run AI > Analyze first", 5000)
            return None
        if part not in AI_PARTS:
            raise ValueError(f"part must be one of {AI_PARTS}, got {part!r}")
        lungs, lesions = self.ai_masks
        if part == "lungs":
            mask = lungs
        elif part == "lesions":
            mask = lesions
        else:
            mask = np.where(lesions > 0, lesions, lungs)
        labels = self.ensure_labels()
        if labels is None:
            return None
        box = self.apply("start from AI", lambda lm: lm.import_mask(mask.astype(np.uint8, copy=False), mode=mode,
                                                                     name="start from AI"))
        if box is not None:
            for value in np.flatnonzero(np.bincount(np.asarray(mask, np.uint8).ravel(), minlength=2)[1:]) + 1:
                self.ai_values[int(value)] = self.ai_names[0] if int(value) in (1, 2) else self.ai_names[1]
        layers = self.state.layers
        if MASK_LAYER in layers and layers[MASK_LAYER].visible:
            layers[MASK_LAYER].update(visible=False)  # the label map shows the same voxels now
        return box

    # -- questions ---------------------------------------------------------------------------------

    def ask(self, kind: str, title: str, text: str) -> Answer:
        """A question to the user (see the class docstring for kinds and answers)."""
        if self.prompt_answer is not None:
            return self.prompt_answer(kind, text)
        if not self.interactive:
            return "keep"
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Question, title, text,
                                    parent=self.host.dialog_parent())
        sb, role = QtWidgets.QMessageBox.StandardButton, QtWidgets.QMessageBox.ButtonRole
        if kind == "restore":
            buttons = {box.addButton("Restore", role.AcceptRole): "restore", box.addButton(sb.Discard): "discard",
                       box.addButton("Not now", role.RejectRole): "keep"}
        else:
            buttons = {box.addButton(sb.Save): "save", box.addButton(sb.Discard): "discard",
                       box.addButton(sb.Cancel): "cancel"}
        box.exec()
        return buttons.get(box.clickedButton(), "keep" if kind == "restore" else "cancel")

    def resolve_unsaved(self, then: Callable[[], None] | None = None) -> bool:
        """Before the label map goes away: True to go on now; False when cancelled or while a save runs
        (which calls `then` once it succeeded)."""
        if not self.dirty:
            return True
        answer = self.ask("unsaved", "Unsaved label map", "The label map has unsaved edits. Save them?")
        if answer == "cancel":
            return False
        if answer == "discard":
            self.discard_edits()
            return True
        if answer == "keep":
            self.autosave(blocking=True)
            return True
        self.save(then=then)
        return False

    def discard_edits(self) -> None:
        """Forget the unsaved edits: the recovery file goes, the map counts as clean."""
        if self.store is not None and self.key is not None:
            self.store.discard(self.key)
        if self.labels is not None:
            self.labels.mark_clean()
        self.edited.emit()

    # -- recovery ----------------------------------------------------------------------------------

    def _offer_recovery(self) -> None:
        if self.store is None or self.key is None:
            return
        try:
            info = self.store.find(self.key)
        except RecoveryError as exc:
            self.show_status(f"recovery file unreadable: {exc}", 10000)
            return
        if info is None:
            return
        when = _dt.datetime.fromtimestamp(info.saved_at).strftime("%Y-%m-%d %H:%M:%S")
        answer = self.ask("restore", "Unsaved edits found", f"Restore unsaved edits from {when}?")
        if answer == "discard":
            self.store.discard(self.key)
        elif answer == "restore":
            self.restore()

    def restore(self) -> bool:
        """Load this CT's recovery file into the editor (the edits stay unsaved)."""
        vol = self.state.volume
        try:
            data = self.store.load(self.key, expected_shape=vol.shape)
            labels = LabelMap(data.labels, vol.spacing, data.table, touched=data.touched, copy=False)
        except (RecoveryError, ValueError) as exc:
            self._error("Restore", f"cannot restore the unsaved edits: {exc}", self.load_failed)
            return False
        path = data.info.meta.get("label_map_path")
        self.set_labels(labels, Path(path) if path else None)
        labels.dirty = True
        self._autosaved_revision = labels.revision
        self.edited.emit()
        self.show_status("unsaved edits restored", 8000)
        return True

    def autosave(self, blocking: bool = False) -> None:
        """Write the recovery file when there are edits it lacks (in a worker unless `blocking`)."""
        labels = self.labels
        if labels is None or not labels.dirty or labels.revision == self._autosaved_revision or self.key is None:
            return
        if self._autosaving and not blocking:
            return
        store, key, revision = self.store, self.key, labels.revision
        meta = {"ct_path": self.mapping.reference.source if self.mapping else "",
                "label_map_path": str(self.path) if self.path else None}
        args = (key, labels.array.copy(), labels.table.copy(), labels.touched.copy(), meta)
        if blocking:
            try:
                self._autosave_done((revision, store.save(*args)))
            except (OSError, ValueError) as exc:
                self.show_status(f"autosave failed: {exc}", 10000)
            return
        self._autosaving = True
        self._run(lambda: (revision, store.save(*args)), self._autosave_done, self._autosave_failed)

    def _autosave_done(self, result: tuple[int, Path]) -> None:
        self._autosaving = False
        revision, path = result
        self._autosaved_revision = revision
        if self.labels is None or not self.labels.dirty:  # saved (or discarded) meanwhile: the file is stale
            if self.store is not None and self.key is not None:
                self.store.discard(self.key)
            return
        self.autosaved.emit(str(path))

    def _autosave_failed(self, message: str) -> None:
        self._autosaving = False
        self.show_status(f"autosave failed: {message}", 10000)

    # -- files -------------------------------------------------------------------------------------

    def new_label_map(self) -> None:
        if self.state.volume is None:
            self._error("New label map", "open a CT first", self.load_failed)
            return
        if not self.resolve_unsaved(then=self.new_label_map):
            return
        vol = self.state.volume
        self.set_labels(LabelMap.empty(vol.shape, vol.spacing))

    def open_dialog(self) -> None:
        if self.mapping is None:
            self._error("Open label map", "open a CT first", self.load_failed)
            return
        path, _ = QtWidgets.QFileDialog.getOpenFileName(
            self.host.dialog_parent(), "Open label map", self.app_settings.last_folder,
            "Label maps (*.nii.gz *.nii *.dcm);;All files (*)")
        if path:
            self.open(path)

    def open(self, path: str | Path) -> None:
        """Read a label map file of this CT in a worker; it replaces the current map when it arrives."""
        if self.mapping is None:
            self._error("Open label map", "open a CT first", self.load_failed)
            return
        if not self.resolve_unsaved(then=lambda: self.open(path)):
            return
        mapping, path = self.mapping, Path(path)
        self.show_status(f"reading {path}...")
        def read() -> tuple:
            notes: list[str] = []
            return (path, mapping, *load_label_map(path, mapping, warnings=notes), notes)

        self._run(read, self._opened, lambda msg: self._error("Open label map", msg, self.load_failed))

    def _opened(self, result: tuple) -> None:
        path, mapping, array, table, touched, notes = result
        if mapping is not self.mapping:
            return  # another CT was opened meanwhile
        if not self.resolve_unsaved(then=lambda: self._opened(result)):  # edits made while it was read
            return
        vol = self.state.volume
        try:
            labels = LabelMap(array, vol.spacing, table, touched=touched, copy=False)
        except ValueError as exc:
            self._error("Open label map", f"{path}: {exc}", self.load_failed)
            return
        self.set_labels(labels, path)
        message = f"opened {path}" + "".join(f"; {n}" for n in notes)
        self.show_status(message, 15000 if notes else 8000)
        self.loaded.emit(str(path))

    def save(self, then: Callable[[], None] | None = None) -> None:
        """Save to the current file, or ask for one (Save as)."""
        if self.path is None:
            self.save_as_dialog(then)
        else:
            self.save_to(self.path, then)

    def save_as_dialog(self, then: Callable[[], None] | None = None) -> None:
        if self.labels is None or self.mapping is None:
            self._error("Save label map", "there is no label map to save", self.save_failed)
            return
        if not self.interactive:
            self._error("Save label map", "no file to save to (a non-interactive window asks no file name)",
                        self.save_failed)
            return
        filters = ["NIfTI label map (*.nii.gz)"] + (["DICOM SEG (*.dcm)"] if self.mapping.is_dicom else [])
        folder = Path(self.app_settings.last_folder or ".")
        desc = self.mapping.reference.metadata.series_description or "labels"
        default = str(self.path or folder / f"{_safe_name(desc)}.labels.nii.gz")
        path, chosen = QtWidgets.QFileDialog.getSaveFileName(self.host.dialog_parent(), "Save label map", default,
                                                             ";;".join(filters))
        if not path:
            return
        if not path.lower().endswith((".nii.gz", ".nii", ".dcm")):
            path += ".dcm" if chosen.startswith("DICOM") else ".nii.gz"
        self.save_to(path, then)

    def save_to(self, path: str | Path, then: Callable[[], None] | None = None) -> None:
        """Write the label map on the CT's original grid, in a worker; on success it counts as saved."""
        labels, mapping = self.labels, self.mapping
        if labels is None or mapping is None:
            self._error("Save label map", "there is no label map to save", self.save_failed)
            return
        if self._saving:
            self.show_status("a save is still running", 5000)
            return
        path = Path(path)
        try:
            file_format(path)
        except ValueError as exc:
            self._error("Save label map", str(exc), self.save_failed)
            return
        revision = labels.revision
        array, table, touched = labels.array.copy(), labels.table.copy(), labels.touched.copy()
        algorithms = self._algorithms(array, touched)
        self._saving = True
        self.show_status(f"saving {path}...")
        self._run(lambda: save_label_map(path, array, table, mapping, touched=touched, algorithms=algorithms),
                  lambda out: self._saved(out, revision, then), self._save_error)

    def _algorithms(self, array: np.ndarray, touched: np.ndarray) -> dict[int, tuple[str, str, str]]:
        """For a DICOM SEG: the label values the AI made, AUTOMATIC where no voxel of them was touched by a
        person, SEMIAUTOMATIC where one was; the rest are MANUAL."""
        out = {}
        for value, name in self.ai_values.items():
            here = array == value
            if here.any():
                kind = "SEMIAUTOMATIC" if (touched & here).any() else "AUTOMATIC"
                out[value] = (kind, name, lunglens_version())
        return out

    def _saved(self, path: Path, revision: int, then: Callable[[], None] | None) -> None:
        self._saving = False
        if self.labels is not None:
            self.path = Path(path)
            if self.labels.revision == revision:  # no edits while it was written
                self.labels.mark_clean()
                if self.store is not None and self.key is not None:
                    self.store.discard(self.key)
        self.show_status(f"saved {path}", 8000)
        self.edited.emit()
        self.saved.emit(str(path))
        if then is not None:
            then()

    def _save_error(self, message: str) -> None:
        self._saving = False
        self._error("Save label map", f"the label map was not saved (the edits are kept): {message}",
                    self.save_failed)

    # -- statistics --------------------------------------------------------------------------------

    def request_stats(self) -> None:
        """Compute per-label statistics in a worker; `stats_ready` delivers them."""
        labels, vol = self.labels, self.state.volume
        if labels is None or vol is None:
            return
        if self._stats_running:
            self._stats_again = True
            return
        self._stats_running = True
        array, table, hu, spacing = labels.array.copy(), labels.table.copy(), vol.array, labels.spacing
        ai_lungs = self.ai_masks[0] if self.ai_masks is not None and self.ai_masks[0].shape == array.shape else None

        def compute() -> list:
            # a map without lung labels measures its share against the AI's lungs (this CT's), else none
            fallback = None if ai_lungs is None else ai_lungs > 0
            return label_stats(LabelMap(array, spacing, table, copy=False), hu, fallback_lung_mask=fallback)

        self._run(compute, self._stats_done, self._stats_failed)

    def _stats_done(self, stats: list) -> None:
        self._stats_running = False
        self.stats_ready.emit(stats)
        if self._stats_again:
            self._stats_again = False
            self.request_stats()

    def _stats_failed(self, message: str) -> None:
        self._stats_running = False
        self.show_status(f"statistics failed: {message}", 8000)

    # -- plumbing ----------------------------------------------------------------------------------

    def run_in_worker(self, fn: Callable[[], Any], done: Callable[[Any], None],
                      failed: Callable[[str], None]) -> None:
        """Run `fn` (a save, an export) in a worker; `done(result)` or `failed(message)` on the GUI thread."""
        self._run(fn, done, failed)

    def _run(self, fn: Callable[[], Any], done: Callable[[Any], None], failed: Callable[[str], None]) -> None:
        """Run `fn` in a worker; `done(result)` or `failed(message)` is called on the GUI thread."""
        self._token += 1
        self._callbacks[self._token] = (done, failed)
        worker = CallWorker(self._token, fn)
        worker.outcome.connect(self._on_outcome)  # a bound slot of this QObject: queued into the GUI thread
        self._threads = [t for t in self._threads if shiboken6.isValid(t)]
        self._threads.append(start_worker(worker, self))

    @QtCore.Slot(object)
    def _on_outcome(self, outcome: tuple[int, bool, Any]) -> None:
        token, ok, payload = outcome
        done, failed = self._callbacks.pop(token)
        (done if ok else failed)(payload)

    def _error(self, title: str, message: str, signal: QtCore.SignalInstance) -> None:
        """A failure: status message, signal (tests, scripts) and, for a person, a message box."""
        self.show_status(message.splitlines()[0], 15000)
        signal.emit(message)
        if self.interactive:
            QtWidgets.QMessageBox.warning(self.host.dialog_parent(), title, message)

    def shutdown(self, timeout_s: float = 60.0) -> None:
        """Stop the timers and wait for running workers (before the window goes)."""
        for timer in (self._autosave_timer, self._edited_timer, self._surface_timer):
            timer.stop()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(shiboken6.isValid(t) and t.isRunning() for t in self._threads):
            # a worker's thread quits through a queued call into this thread: keep the events flowing, and
            # sleep (not QThread.wait, which holds the GIL the worker needs)
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
            time.sleep(0.01)


def _safe_name(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_.")
    return keep or "labels"


def table_rows(table: LabelTable) -> list[tuple[int, str, RGB, bool, bool]]:
    """(value, name, colour, visible, locked) of every label, by value."""
    return [(i.value, i.name, i.color, i.visible, i.locked) for i in table]

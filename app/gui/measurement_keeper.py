"""Measurements kept between sessions, for one series on show in some slice views (the main window's three, or
the comparison's one).

On opening a series (`arrive`) the kept measurements come back into the views that have none, by plane; every
change is written 0.4 s later (debounced, `flush` writes at once). Planes no view shows keep what they had, so a
single comparison view never erases the other planes. With no folder, the planes are still kept in memory while
the series is on show (a screenshot run writes nothing). An unreadable file is set aside, never overwritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PySide6 import QtCore

from viewer.core.errors import LoadError
from viewer.core.volume import Volume
from viewer.gui.slice_view import SliceView, series_key
from viewer.io.measurement_store import load_measurements, save_measurements, set_aside


class MeasurementKeeper(QtCore.QObject):
    """Keeps the measurements of the views `views()` returns in the per-series store under `folder`."""

    def __init__(self, views: Callable[[], Iterable[SliceView]], folder: Path | None,
                 notify: Callable[[str], None], parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self._views, self.folder, self._notify = views, folder, notify
        self._key: str | None = None  # the series on show (None: nothing to keep)
        self._planes: dict[str, list] = {}  # its records by plane, as the store keeps them
        self._quiet = 0
        self._timer = QtCore.QTimer(self, singleShot=True, interval=400)
        self._timer.timeout.connect(self.flush)

    def watch(self, view: SliceView) -> None:
        """Save after `view`'s measurements change."""
        view.measurements_changed.connect(self.changed)

    def changed(self) -> None:
        if not self._quiet and self._key is not None:
            self._timer.start()

    @contextmanager
    def quiet(self) -> Iterator[None]:
        """Changes inside are not saves (the views putting a series' measurements aside or drawing kept ones)."""
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1

    def flush(self) -> None:
        """Take the views' measurements now and write them (when a folder is set)."""
        self._timer.stop()
        if self._key is None:
            return
        self._planes.update({v.orientation.value: v.measurement_records() for v in self._views()})
        if self.folder is not None:
            try:
                save_measurements(self.folder, self._key, self._planes)
            except OSError as exc:
                self._notify(f"measurements not saved: {exc}")

    def leave(self) -> None:
        """The series is going: write what is pending; nothing is kept until the next `arrive`."""
        self.flush()
        self._key, self._planes = None, {}

    def arrive(self, volume: Volume) -> None:
        """`volume` is on show: bring its kept measurements back into the views that have none."""
        self._key, self._planes = series_key(volume), {}
        if self.folder is not None:
            try:
                self._planes = load_measurements(self.folder, self._key)
            except LoadError as exc:
                aside = set_aside(self.folder, self._key)
                self._notify(f"{exc}; not restored" + (f", kept as {aside}" if aside else ""))
        for view in self._views():
            self.restore_into(view)

    def restore_into(self, view: SliceView) -> None:
        """Draw the kept measurements of `view`'s plane, unless it shows some already."""
        if not view.measurements and self._planes.get(view.orientation.value):
            with self.quiet():
                view.restore_measurements(self._planes[view.orientation.value])

"""Prior comparison: a second series beside the main view, linked to the main series by patient position.

The comparison has its own `ViewerState` (its volume, crosshair, measurements) and one `SliceView` of the main
view's plane; a `CursorLink` keeps its crosshair, window and slab on the main series', and the two views keep
the same scale (mm per screen pixel), so that a lesion's size compares at a glance. Its measurements are kept
by plane in the same per-series store as the main series' (a `MeasurementKeeper`).
"""

from __future__ import annotations

from app.gui.measurement_keeper import MeasurementKeeper
from viewer.core.volume import Volume
from viewer.gui.slice_view import SliceView
from viewer.state.slicing import Orientation
from viewer.state.sync import CursorLink
from viewer.state.view_state import ViewerState


class Comparison:
    """The comparison series on show: `state`, `view` (None until `make_view`) and `link` (None while unlinked)."""

    def __init__(self, main: ViewerState, keeper: MeasurementKeeper) -> None:
        """`keeper` keeps the measurements of `view` (it asks the caller for the view on show)."""
        self.main = main
        self.state = ViewerState(window=main.window)
        self.view: SliceView | None = None
        self.link: CursorLink | None = None
        self._main_view: SliceView | None = None
        self._busy = False
        self.keeper = keeper

    def show(self, volume: Volume, linked: bool) -> None:
        """Show `volume`, linked to the main series (by the volumes' centres across frames of reference)."""
        self.keeper.leave()
        self.set_linked(False)
        with self.keeper.quiet():
            self.state.set_volume(volume)
        self.keeper.arrive(self.state.volume)
        if linked:
            self.link = CursorLink(self.main, self.state)

    def set_linked(self, on: bool) -> None:
        """Link again (taking the offset from the two crosshairs as they are now) or unlink."""
        if on and self.link is None:
            self.link = CursorLink(self.main, self.state, keep_alignment=True)
        elif on and self.link is not None:
            self.link.relink()
        elif self.link is not None:
            self.link.unlink()
            self.link = None

    def realign(self) -> None:
        """A new main series: align the comparison with it by the volumes' centres (or their shared frame)."""
        if self.link is not None:
            self.link.relink(initial=True)

    def make_view(self, orientation: Orientation, main_view: SliceView) -> SliceView | None:
        """A new view of `orientation` beside `main_view`; returns the view it replaces (for the caller to take
        out of its layout), or None."""
        old = self.view
        self.keeper.flush()  # the plane going away keeps its measurements
        self._unfollow()
        if old is not None:
            old.measurements_changed.disconnect(self.keeper.changed)
            old.detach()
        self.view = SliceView(self.state, orientation)
        self.keeper.restore_into(self.view)
        self.keeper.watch(self.view)
        self._main_view = main_view
        main_view.viewbox.sigRangeChanged.connect(self._from_main)
        self.view.viewbox.sigRangeChanged.connect(self._from_view)
        return old

    def close(self) -> SliceView | None:
        """Unlink; returns the view to take out of the layout."""
        self.keeper.leave()
        self.set_linked(False)
        self._unfollow()
        view, self.view = self.view, None
        if view is not None:
            view.detach()
        return view

    # -- the same scale in both views ---------------------------------------------------------

    def _unfollow(self) -> None:
        if self._main_view is not None:
            self._main_view.viewbox.sigRangeChanged.disconnect(self._from_main)
        if self.view is not None:
            self.view.viewbox.sigRangeChanged.disconnect(self._from_view)
        self._main_view = None

    def _from_main(self, *_args) -> None:
        if self.view is not None and self._main_view is not None:
            self._match_scale(self._main_view, self.view)

    def _from_view(self, *_args) -> None:
        if self.view is None or self._main_view is None:
            return
        if self.view.zooming:  # the user zoomed the comparison: the main view follows
            self._match_scale(self.view, self._main_view)
        else:  # fitted to its own image, or resized: it takes the main view's scale again
            self._match_scale(self._main_view, self.view)

    def _match_scale(self, source: SliceView, target: SliceView) -> None:
        """Zoom `target` about its centre to `source`'s mm per screen pixel."""
        if self._busy or source.viewbox.width() < 2 or target.viewbox.width() < 2:
            return
        (x0, x1), _ = source.viewbox.viewRange()
        mm_per_px = (x1 - x0) / source.viewbox.width()
        (tx0, tx1), (ty0, ty1) = target.viewbox.viewRange()
        if abs((tx1 - tx0) / target.viewbox.width() - mm_per_px) < 1e-6 * max(mm_per_px, 1e-9):
            return
        cx, cy = (tx0 + tx1) / 2, (ty0 + ty1) / 2
        half_w, half_h = mm_per_px * target.viewbox.width() / 2, mm_per_px * target.viewbox.height() / 2
        self._busy = True
        try:
            target.viewbox.setRange(xRange=(cx - half_w, cx + half_w), yRange=(cy - half_h, cy + half_h),
                                    padding=0)
        finally:
            self._busy = False

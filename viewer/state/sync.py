"""Two viewer states kept in step: the prior-comparison link of PACS viewers.

Moving the crosshair in either state moves the other's to the same patient position, through LPS. Series of
one frame of reference (one scanner session) share coordinates, so the link is absolute. A prior study was
scanned with the patient elsewhere on the table: its link keeps the offset found when it was made (the
volumes' centres at first), and re-linking after scrolling one series alone re-anchors it, as Weasis and
Horos do. The window, the slab and the oblique planes follow too (both volumes are canonical, so a plane's
turn means the same in both).
"""

from __future__ import annotations

import numpy as np

from viewer.core.volume import Volume
from viewer.state.view_state import ViewerState


class CursorLink:
    """Keeps `b`'s crosshair (and optionally window and slab) on `a`'s patient position, and back.

    `offset_mm` is LPS(a) - LPS(b) of one anatomical point: taken from the volumes' centres, or with
    `keep_alignment` from where the two crosshairs are now; `relink` takes it again. Call `unlink` before dropping
    either state.
    """

    def __init__(self, a: ViewerState, b: ViewerState, window: bool = True, slab: bool = True,
                 keep_alignment: bool = False) -> None:
        self.a, self.b = a, b
        self.window, self.slab = window, slab
        self.offset_mm = np.zeros(3)
        self._busy = False
        self._connected = False
        self.relink(initial=not keep_alignment)

    @property
    def absolute(self) -> bool:
        """Whether both volumes share a frame of reference (then the offset is zero)."""
        fa = self.a.volume.metadata.frame_of_reference_uid if self.a.volume is not None else ""
        fb = self.b.volume.metadata.frame_of_reference_uid if self.b.volume is not None else ""
        return bool(fa) and fa == fb

    def relink(self, initial: bool = False) -> None:
        """(Re)connect the states and take the offset: zero for a shared frame of reference; else the volumes'
        centres (`initial`) or the two crosshairs as they are now. `b` then follows `a`."""
        va, vb = self.a.volume, self.b.volume
        if va is None or vb is None:
            self.offset_mm = np.zeros(3)
        elif self.absolute:
            self.offset_mm = np.zeros(3)
        elif initial:
            self.offset_mm = _centre(va) - _centre(vb)
        else:
            self.offset_mm = va.index_to_lps(self.a.point) - vb.index_to_lps(self.b.point)
        if not self._connected:
            self.a.cursor_changed.connect(self._from_a)
            self.b.cursor_changed.connect(self._from_b)
            self.a.window_changed.connect(self._window_from_a)
            self.b.window_changed.connect(self._window_from_b)
            self.a.slab_changed.connect(self._slab_from_a)
            self.b.slab_changed.connect(self._slab_from_b)
            self.a.planes_changed.connect(self._planes_from_a)
            self.b.planes_changed.connect(self._planes_from_b)
            self._connected = True
        self._from_a(self.a.cursor)
        if self.window:
            self._window_from_a(self.a.window)
        if self.slab:
            self._slab_from_a((self.a.slab_mm, self.a.projection))
        self._planes_from_a(None)

    def unlink(self) -> None:
        """Stop following (both ways)."""
        if self._connected:
            self.a.cursor_changed.disconnect(self._from_a)
            self.b.cursor_changed.disconnect(self._from_b)
            self.a.window_changed.disconnect(self._window_from_a)
            self.b.window_changed.disconnect(self._window_from_b)
            self.a.slab_changed.disconnect(self._slab_from_a)
            self.b.slab_changed.disconnect(self._slab_from_b)
            self.a.planes_changed.disconnect(self._planes_from_a)
            self.b.planes_changed.disconnect(self._planes_from_b)
            self._connected = False

    @property
    def linked(self) -> bool:
        return self._connected

    def voxel_in_b(self, voxel_a) -> np.ndarray:
        """The (fractional) voxel of `b` at the patient position of `a`'s voxel `voxel_a`."""
        va, vb = self._volumes()
        return vb.lps_to_index(va.index_to_lps(voxel_a) - self.offset_mm)

    def voxel_in_a(self, voxel_b) -> np.ndarray:
        va, vb = self._volumes()
        return va.lps_to_index(vb.index_to_lps(voxel_b) + self.offset_mm)

    def _volumes(self) -> tuple[Volume, Volume]:
        if self.a.volume is None or self.b.volume is None:
            raise ValueError("both linked states need a volume")
        return self.a.volume, self.b.volume

    # -- followers ----------------------------------------------------------------------------

    def _guarded(self, act) -> None:
        if self._busy or self.a.volume is None or self.b.volume is None:
            return
        self._busy = True
        try:
            act()
        finally:
            self._busy = False

    def _from_a(self, _cursor) -> None:
        self._guarded(lambda: self.b.set_cursor(self.voxel_in_b(self.a.point)))  # fractions kept

    def _from_b(self, _cursor) -> None:
        self._guarded(lambda: self.a.set_cursor(self.voxel_in_a(self.b.point)))

    def _window_from_a(self, window) -> None:
        if self.window:
            self._guarded(lambda: self.b.set_window(window))

    def _window_from_b(self, window) -> None:
        if self.window:
            self._guarded(lambda: self.a.set_window(window))

    def _slab_from_a(self, slab) -> None:
        if self.slab:
            self._guarded(lambda: self.b.set_slab(*slab))

    def _slab_from_b(self, slab) -> None:
        if self.slab:
            self._guarded(lambda: self.a.set_slab(*slab))

    def _planes_from_a(self, _none) -> None:
        self._guarded(lambda: self.b.set_planes(self.a.turns))

    def _planes_from_b(self, _none) -> None:
        self._guarded(lambda: self.a.set_planes(self.b.turns))


def _centre(volume) -> np.ndarray:
    return volume.index_to_lps([(n - 1) / 2 for n in volume.shape])

"""What the viewer shows, without Qt: the volume, the linked cursor, the window and the overlays.

Every view reads this state and subscribes to its events; input handlers only call
its methods (the napari pattern). Tests drive it directly.
"""

from __future__ import annotations

import numpy as np

from viewer.core.events import Event
from viewer.core.reorient import to_canonical
from viewer.core.volume import Volume
from viewer.core.windowing import PRESETS, Window
from viewer.state.layers import LayerList
from viewer.state.slicing import PROJECTIONS, Orientation, clamp_voxel, slice_count


class ViewerState:
    """The shared state of all views of one volume.

    Events: `cursor_changed(voxel)`, `window_changed(window)`, `volume_changed(volume)`, `slab_changed((mm,
    projection))`;
    overlays announce themselves through `layers.changed` / `layers.layer_changed`.
    """

    def __init__(self, volume: Volume | None = None, window: Window | None = None) -> None:
        self.cursor_changed = Event()
        self.window_changed = Event()
        self.volume_changed = Event()
        self.slab_changed = Event()
        self.slab_mm = 0.0  # thick-slab display: 0 shows single slices
        self.projection = "mip"  # one of `slicing.PROJECTIONS`
        self.layers = LayerList()
        self.window = window or PRESETS["lung"]
        self.volume: Volume | None = None
        self.cursor: tuple[int, int, int] = (0, 0, 0)
        if volume is not None:
            self.set_volume(volume)

    # -- volume -----------------------------------------------------------------------------

    def set_volume(self, volume: Volume) -> None:
        """Show `volume` (reoriented to canonical S/P/L axes); clears the overlays."""
        self.volume = to_canonical(volume)
        self.layers.clear()
        self.cursor = tuple(n // 2 for n in self.volume.shape)  # type: ignore[assignment]
        self.volume_changed.emit(self.volume)
        self.cursor_changed.emit(self.cursor)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape if self.volume is not None else (0, 0, 0)

    # -- cursor -----------------------------------------------------------------------------

    def set_cursor(self, voxel) -> None:
        """Move the linked crosshair to voxel (k, j, i) (clamped into the volume)."""
        if self.volume is None:
            return
        new = clamp_voxel(self.shape, voxel)
        if new != self.cursor:
            self.cursor = new
            self.cursor_changed.emit(new)

    def slice_index(self, orientation: Orientation) -> int:
        return self.cursor[orientation.axis]

    def step(self, orientation: Orientation, delta: int) -> None:
        """Move `delta` slices through the view of `orientation`."""
        cur = list(self.cursor)
        cur[orientation.axis] += delta
        self.set_cursor(cur)

    def set_slice(self, orientation: Orientation, index: int) -> None:
        cur = list(self.cursor)
        cur[orientation.axis] = int(np.clip(index, 0, slice_count(self.shape, orientation) - 1))
        self.set_cursor(cur)

    # -- slab -------------------------------------------------------------------------------

    def set_slab(self, thickness_mm: float, projection: str | None = None) -> None:
        """Show every view as a slab `thickness_mm` thick (0: single slices) projected by `projection`.

        Raises:
            ValueError: a negative or non-finite thickness, or an unknown projection.
        """
        projection = projection or self.projection
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
        if not np.isfinite(thickness_mm) or thickness_mm < 0:
            raise ValueError(f"slab thickness must be >= 0 mm, got {thickness_mm}")
        if (thickness_mm, projection) != (self.slab_mm, self.projection):
            self.slab_mm, self.projection = float(thickness_mm), projection
            self.slab_changed.emit((self.slab_mm, self.projection))

    # -- window -----------------------------------------------------------------------------

    def set_window(self, window: Window) -> None:
        if window != self.window:
            self.window = window
            self.window_changed.emit(window)

    def apply_preset(self, name: str, presets: dict[str, Window] | None = None) -> None:
        table = presets if presets is not None else PRESETS
        if name not in table:
            raise KeyError(f"no window preset {name!r}; presets: {', '.join(table)}")
        self.set_window(table[name])

    # -- read-outs --------------------------------------------------------------------------

    def hu_at(self, voxel) -> float | None:
        if self.volume is None:
            return None
        k, j, i = (int(round(v)) for v in voxel)
        if not all(0 <= v < n for v, n in zip((k, j, i), self.shape)):
            return None
        return float(self.volume.array[k, j, i])

    def lps_at(self, voxel) -> np.ndarray | None:
        return None if self.volume is None else self.volume.index_to_lps(voxel)

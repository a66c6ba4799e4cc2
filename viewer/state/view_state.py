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
from viewer.state.oblique import BASES, PlaneGrid, in_plane_turn, step_mm
from viewer.state.slicing import PROJECTIONS, Orientation, clamp_voxel, slice_count


class ViewerState:
    """The shared state of all views of one volume.

    Events: `cursor_changed(voxel)`, `window_changed(window)`, `volume_changed(volume)`, `slab_changed((mm,
    projection))`, `planes_changed(None)` (oblique planes turned or reset);
    overlays announce themselves through `layers.changed` / `layers.layer_changed`.

    The crosshair is `point`, a fractional voxel (an oblique plane moves it by fractions), and `cursor`, the
    voxel it lies in. Each view's plane is turned by `turns[orientation]` (identity: orthogonal).
    """

    def __init__(self, volume: Volume | None = None, window: Window | None = None) -> None:
        self.cursor_changed = Event()
        self.window_changed = Event()
        self.volume_changed = Event()
        self.slab_changed = Event()
        self.planes_changed = Event()
        self.turns: dict[Orientation, np.ndarray] = {o: np.eye(3) for o in Orientation}
        self._turned: frozenset[Orientation] = frozenset()  # the views whose `turns` are not the identity
        self.point = np.zeros(3)
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
        self.point = np.array(self.cursor, float)
        self.turns, self._turned = {o: np.eye(3) for o in Orientation}, frozenset()
        self.volume_changed.emit(self.volume)
        self.cursor_changed.emit(self.cursor)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.volume.shape if self.volume is not None else (0, 0, 0)

    # -- cursor -----------------------------------------------------------------------------

    def set_cursor(self, voxel) -> None:
        """Move the linked crosshair to voxel (k, j, i), fractions kept in `point` (clamped into the volume)."""
        if self.volume is None:
            return
        point = np.clip(np.asarray(voxel, float), 0, np.asarray(self.shape) - 1)
        new = clamp_voxel(self.shape, point)
        if new != self.cursor or not np.array_equal(point, self.point):
            self.cursor, self.point = new, point
            self.cursor_changed.emit(new)

    def slice_index(self, orientation: Orientation) -> int:
        return self.cursor[orientation.axis]

    def step(self, orientation: Orientation, delta: int) -> None:
        """Move `delta` slices through the view of `orientation` (along its normal when it is oblique)."""
        if self.volume is not None and self.is_oblique(orientation):
            normal = self.turns[orientation] @ BASES[orientation][2]
            spacing = np.asarray(self.volume.spacing)
            world = self.point * spacing + delta * step_mm(normal, self.volume.spacing) * normal
            self.set_cursor(world / spacing)
            return
        cur = self.point.copy()  # the other axes keep their fractions: turned planes must not shift
        cur[orientation.axis] = self.cursor[orientation.axis] + delta
        self.set_cursor(cur)

    def set_slice(self, orientation: Orientation, index: int) -> None:
        cur = self.point.copy()
        cur[orientation.axis] = int(np.clip(index, 0, slice_count(self.shape, orientation) - 1))
        self.set_cursor(cur)

    # -- oblique planes ------------------------------------------------------------------------

    def is_oblique(self, orientation: Orientation) -> bool:
        """Whether the view of `orientation` shows a turned (oblique) plane."""
        return orientation in self._turned  # asked several times per slice change: kept, not recomputed

    @property
    def oblique(self) -> bool:
        """Whether any plane is turned (the crosshair lines then show the turned planes)."""
        return bool(self._turned)

    def rotate_planes(self, about: Orientation, screen_angle: float) -> None:
        """Turn the other two views' planes about the normal of `about`'s view, through the crosshair, by
        `screen_angle` radians as seen on `about`'s screen (clockwise: rows run down): the crosshair lines in that
        view turn with the mouse, and the other views show the oblique planes."""
        if self.volume is None or screen_angle == 0:
            return
        turn = in_plane_turn(about, self.turns[about], screen_angle)
        self.set_planes({o: t if o is about else turn @ t for o, t in self.turns.items()})

    def reset_planes(self) -> None:
        """Back to the orthogonal axial, coronal and sagittal planes (the crosshair stays)."""
        self.set_planes({o: np.eye(3) for o in Orientation})

    def set_planes(self, turns: dict[Orientation, np.ndarray]) -> None:
        """Turn each view's plane by `turns[orientation]` (copied); announced when anything changes."""
        if all(np.array_equal(turns[o], self.turns[o]) for o in Orientation):
            return
        self.turns = {o: np.array(turns[o], float) for o in Orientation}
        self._turned = frozenset(o for o in Orientation if not np.allclose(self.turns[o], np.eye(3), atol=1e-9))
        self.planes_changed.emit(None)

    def plane_grid(self, orientation: Orientation) -> PlaneGrid:
        """The sample grid of `orientation`'s plane through the crosshair."""
        if self.volume is None:
            raise ValueError("no volume")
        return PlaneGrid(self.shape, self.volume.spacing, orientation, self.turns[orientation], self.point)

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

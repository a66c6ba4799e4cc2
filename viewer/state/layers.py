"""Overlay layers: label masks and heat maps on the CT grid, rendered per slice as RGBA."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from viewer.core.events import Event
from viewer.labels.colors import DEFAULT_LABEL_COLORS, DEFAULT_LABEL_NAMES, RGB, fallback_color
from viewer.state.slicing import Orientation, extract

# control points (position, r, g, b) of the heat-map colour maps
_COLORMAPS: dict[str, list[tuple[float, int, int, int]]] = {
    "jet": [(0.0, 0, 0, 143), (0.125, 0, 0, 255), (0.375, 0, 255, 255), (0.625, 255, 255, 0),
            (0.875, 255, 0, 0), (1.0, 128, 0, 0)],
    "hot": [(0.0, 10, 0, 0), (0.375, 255, 0, 0), (0.75, 255, 255, 0), (1.0, 255, 255, 255)],
    "inferno": [(0.0, 0, 0, 4), (0.25, 87, 16, 110), (0.5, 188, 55, 84), (0.75, 249, 142, 9),
                (1.0, 252, 255, 164)],
}
COLORMAPS = tuple(_COLORMAPS)


def colormap_table(name: str, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 colours of a named colour map."""
    if name not in _COLORMAPS:
        raise ValueError(f"unknown colour map {name!r}; choose from {', '.join(_COLORMAPS)}")
    pts = np.array(_COLORMAPS[name], dtype=float)
    x = np.linspace(0, 1, n)
    return np.stack([np.interp(x, pts[:, 0], pts[:, c]) for c in (1, 2, 3)], axis=1).round().astype(np.uint8)


@dataclass(eq=False)
class LabelLayer:
    """An integer label map on the CT grid, drawn with a colour per label value."""

    name: str
    data: np.ndarray
    colors: dict[int, RGB] = field(default_factory=lambda: dict(DEFAULT_LABEL_COLORS))
    names: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_LABEL_NAMES))
    opacity: float = 0.5
    visible: bool = True
    hidden_labels: set[int] = field(default_factory=set)
    label_opacity: dict[int, float] = field(default_factory=dict)  # per label, times `opacity` (default 1)
    outline: bool = False  # draw each label's outline only (its boundary pixels in the slice), fully opaque
    changed: Event = field(default_factory=Event, repr=False)

    def __post_init__(self) -> None:
        if self.data.dtype == bool:
            self.data = self.data.view(np.uint8)
        if self.data.dtype.kind not in "ui":
            raise ValueError(f"label data must be integers, got {self.data.dtype}")
        self._lut: np.ndarray | None = None

    def lut(self) -> np.ndarray:
        """(N, 4) uint8 RGBA per label value; 0 and hidden labels transparent."""
        if self._lut is None:
            top = max(255, *self.colors)  # sized by dtype and colour table, never by scanning the volume
            lut = np.zeros((top + 1, 4), np.uint8)
            base = 1.0 if self.outline else float(np.clip(self.opacity, 0, 1))
            for value in range(1, top + 1):
                if value in self.hidden_labels:
                    continue
                lut[value, :3] = self.colors.get(value, fallback_color(value))
                lut[value, 3] = int(round(base * float(np.clip(self.label_opacity.get(value, 1.0), 0, 1)) * 255))
            self._lut = lut
        return self._lut

    def update(self, **changes) -> None:
        """Change display properties (opacity, visible, colors, hidden_labels) and announce it."""
        for key, value in changes.items():
            if key not in ("opacity", "visible", "colors", "hidden_labels", "name", "names", "label_opacity",
                           "outline"):
                raise AttributeError(f"LabelLayer has no display property {key!r}")
            setattr(self, key, value)
        self._lut = None
        self.changed.emit(self)

    def data_changed(self) -> None:
        """Call after editing `data` in place."""
        self._lut = None
        self.changed.emit(self)

    def rgba(self, orientation: Orientation, index: int) -> np.ndarray:
        """(rows, columns, 4) uint8 RGBA of one slice: one 4-byte look-up per pixel (several times faster
        than indexing the (N, 4) table, which is what keeps a brush dab's redraw short)."""
        return self.colorize(extract(self.data, orientation, index))

    def colorize(self, values: np.ndarray) -> np.ndarray:
        """(rows, columns, 4) uint8 RGBA of a 2D image of label values (a slice, or an oblique plane's samples)."""
        lut32 = np.ascontiguousarray(self.lut()).view(np.uint32).reshape(-1)
        if values.dtype != np.uint8 and int(values.max(initial=0)) >= len(lut32):
            values = np.minimum(values, len(lut32) - 1)
        if self.outline:
            values = np.where(label_edges(values), values, 0)
        return np.take(lut32, values).view(np.uint8).reshape(*values.shape, 4)


def label_edges(values: np.ndarray) -> np.ndarray:
    """Pixels of a 2D label image whose 4-neighbour (or the image border) has another value: each label's
    outline, one pixel wide, inside the label."""
    v = np.asarray(values)
    edge = np.zeros(v.shape, bool)
    edge[1:, :] |= v[1:, :] != v[:-1, :]
    edge[:-1, :] |= v[:-1, :] != v[1:, :]
    edge[:, 1:] |= v[:, 1:] != v[:, :-1]
    edge[:, :-1] |= v[:, :-1] != v[:, 1:]
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    return edge & (v != 0)


@dataclass(eq=False)
class HeatmapLayer:
    """A scalar map on the CT grid (CAM, probability) drawn through a colour map above a threshold."""

    name: str
    data: np.ndarray
    colormap: str = "jet"
    opacity: float = 0.45
    threshold: float = 0.2
    vmin: float = 0.0
    vmax: float = 1.0
    visible: bool = True
    changed: Event = field(default_factory=Event, repr=False)

    def __post_init__(self) -> None:
        colormap_table(self.colormap)
        if self.data.dtype.kind not in "fiu":
            raise ValueError(f"heat-map data must be numeric, got {self.data.dtype}")
        self._lut: np.ndarray | None = None

    def update(self, **changes) -> None:
        for key, value in changes.items():
            if key not in ("opacity", "visible", "colormap", "threshold", "vmin", "vmax", "name"):
                raise AttributeError(f"HeatmapLayer has no display property {key!r}")
            setattr(self, key, value)
        colormap_table(self.colormap)
        self._lut = None
        self.changed.emit(self)

    def data_changed(self) -> None:
        self.changed.emit(self)

    def lut(self) -> np.ndarray:
        """(256, 4) RGBA per quantised value; entries below the threshold are transparent."""
        if self._lut is None:
            lut = np.zeros((256, 4), np.uint8)
            lut[:, :3] = colormap_table(self.colormap)
            levels = self.vmin + (self.vmax - self.vmin) * (np.arange(256) + 0.5) / 256
            lut[:, 3] = np.where(levels >= self.threshold, int(round(np.clip(self.opacity, 0, 1) * 255)), 0)
            self._lut = lut
        return self._lut

    def rgba(self, orientation: Orientation, index: int) -> np.ndarray:
        return self.colorize(extract(self.data, orientation, index))

    def colorize(self, values: np.ndarray) -> np.ndarray:
        """(rows, columns, 4) uint8 RGBA of a 2D image of map values."""
        scale = 256.0 / max(self.vmax - self.vmin, 1e-12)
        idx = np.clip((values - np.float32(self.vmin)) * np.float32(scale), 0, 255)
        return self.lut()[np.nan_to_num(idx, nan=0).astype(np.uint8)]


Layer = LabelLayer | HeatmapLayer


class LayerList:
    """The overlay layers of a viewer, bottom to top, with change events."""

    def __init__(self) -> None:
        self._layers: list[Layer] = []
        self.changed = Event()  # (layer_list) on add/remove/reorder
        self.layer_changed = Event()  # (layer) when a layer's data or display changes

    def __iter__(self):
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, key: int | str) -> Layer:
        if isinstance(key, str):
            for layer in self._layers:
                if layer.name == key:
                    return layer
            raise KeyError(key)
        return self._layers[key]

    def __contains__(self, name: str) -> bool:
        return any(layer.name == name for layer in self._layers)

    def add(self, layer: Layer, shape: tuple[int, int, int] | None = None) -> Layer:
        """Add (or replace, by name) a layer; `shape` checks it lies on the volume grid."""
        if shape is not None and tuple(layer.data.shape) != tuple(shape):
            raise ValueError(f"layer {layer.name!r} has shape {layer.data.shape}, the volume {shape}")
        if layer.name in self:
            self.remove(layer.name)
        layer.changed.connect(self.layer_changed.emit)
        self._layers.append(layer)
        self.changed.emit(self)
        return layer

    def remove(self, name: str) -> None:
        layer = self[name]
        layer.changed.disconnect(self.layer_changed.emit)
        self._layers.remove(layer)
        self.changed.emit(self)

    def clear(self) -> None:
        for layer in list(self._layers):
            layer.changed.disconnect(self.layer_changed.emit)
        self._layers.clear()
        self.changed.emit(self)

"""Window/level: presets and the grey-level look-up that maps HU to display values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window: HU `center` (level) and `width`."""

    center: float
    width: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.center) or not np.isfinite(self.width):
            raise ValueError(f"window must be finite, got {self.center}/{self.width}")
        object.__setattr__(self, "width", max(1.0, float(self.width)))
        object.__setattr__(self, "center", float(self.center))

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2

    def adjusted(self, d_center: float, d_width: float) -> Window:
        return Window(self.center + d_center, self.width + d_width)


#: built-in presets (name -> window), in menu order
PRESETS: dict[str, Window] = {
    "lung": Window(-600, 1500),
    "mediastinum": Window(40, 400),
    "bone": Window(400, 1800),
    "soft tissue": Window(50, 350),
}


class GreyLUT:
    """HU -> uint8 grey through a window, as one table look-up (fast for int16 slices)."""

    _OFFSET = 32768

    def __init__(self, window: Window) -> None:
        self.window = window
        hu = np.arange(-self._OFFSET, self._OFFSET, dtype=np.float32)
        self._table = np.clip((hu - window.low) / window.width * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if values.dtype == np.int16:
            # int16 bits XOR 0x8000, read as uint16, is value + 32768: an index with no widening copy
            return self._table[values.view(np.uint16) ^ np.uint16(0x8000)]
        v = np.asarray(values, dtype=np.float32)
        out = np.clip((v - self.window.low) / self.window.width * 255.0 + 0.5, 0, 255)
        return np.nan_to_num(out, nan=0).astype(np.uint8)

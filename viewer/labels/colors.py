"""Default names and colours of label values, shared by the label table and the overlay layers."""

from __future__ import annotations

import colorsys

RGB = tuple[int, int, int]

#: default colours of label values (the annotation label table uses the same)
DEFAULT_LABEL_COLORS: dict[int, RGB] = {
    1: (80, 160, 255),   # lung left
    2: (60, 200, 140),   # lung right
    3: (255, 200, 0),    # ground-glass opacity
    4: (255, 60, 40),    # consolidation
    5: (200, 90, 255),   # other lesion
}

DEFAULT_LABEL_NAMES: dict[int, str] = {
    1: "lung left", 2: "lung right", 3: "ground-glass opacity", 4: "consolidation", 5: "other lesion",
}


def fallback_color(value: int) -> RGB:
    """The default colour of a label value: the viewer's colours for 1-5, distinct hues beyond."""
    if value in DEFAULT_LABEL_COLORS:
        return DEFAULT_LABEL_COLORS[value]
    # golden-angle hues: neighbouring values get clearly different colours
    r, g, b = colorsys.hsv_to_rgb((value * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)

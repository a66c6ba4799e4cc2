"""The image files that `predict` and `segment-lesions` are given, checked the same way."""

from __future__ import annotations

import os
from pathlib import Path


def image_inputs(inputs: list[str]) -> tuple[list[Path], str]:
    """(the image files among `inputs`, folders searched recursively, ""), or ([], why) when an input does not
    exist or no image is found."""
    from inference.transforms.images import find_images

    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        return [], f"{missing[0]}: no such file or folder"
    paths = find_images(list(inputs))
    return (paths, "") if paths else ([], "no images found (PNG, JPG, BMP or TIFF)")

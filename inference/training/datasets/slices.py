"""Slice-image training sets laid out like COVID-CT: the images and labels of one split.

Layout: one folder per class `CT_<CLASS>/` with the images, and split lists
`Data-split/<CLASS>/<split>CT_<CLASS>.txt` holding one file name per line
(`split` is train, val or test). File names are used exactly as listed (they may
contain '%'; nothing is URL-decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SliceSplit:
    paths: tuple[Path, ...]
    labels: np.ndarray  # int, index into classes


def read_split(root: str | Path, split: str, classes: tuple[str, ...]) -> SliceSplit:
    """The images and labels of one split of a COVID-CT-style folder."""
    root = Path(root)
    paths, labels = [], []
    for index, cls in enumerate(classes):
        listing = root / "Data-split" / cls / f"{split}CT_{cls}.txt"
        if not listing.is_file():
            raise FileNotFoundError(
                f"{listing}: split list missing (expected Data-split/<CLASS>/<split>CT_<CLASS>.txt)")
        for name in listing.read_text().splitlines():
            name = name.strip()
            if not name:
                continue
            path = root / f"CT_{cls}" / name
            if not path.is_file():
                raise FileNotFoundError(f"{path}: listed in {listing.name} but missing")
            paths.append(path)
            labels.append(index)
    return SliceSplit(tuple(paths), np.asarray(labels, dtype=np.int64))


def read_grey_split(root: str | Path, split: str, classes: tuple[str, ...] = ("NonCOVID", "COVID"),
                    positive: str = "COVID") -> list[tuple[np.ndarray, bool]]:
    """Every image of one split as (grey image in [0, 1] cropped to its content, is `positive`), for
    self-training: figures often carry black margins that a CT crop would not have.

    Raises:
        FileNotFoundError: a split list or a listed image is missing.
        inference.transforms.images.ImageError: an image cannot be read (the message names it).
    """
    from inference.transforms.images import load_grey

    split_ = read_split(root, split, classes)
    return [(content_crop(load_grey(p)), classes[int(k)] == positive) for p, k in zip(split_.paths, split_.labels)]


def content_crop(image: np.ndarray, level: float = 0.04, min_share: float = 0.25) -> np.ndarray:
    """The bounding box of the pixels brighter than `level`; the whole image when that box would be smaller
    than `min_share` of it (a dark image, not a margin)."""
    rows, cols = np.flatnonzero((image > level).any(axis=1)), np.flatnonzero((image > level).any(axis=0))
    if len(rows) == 0:
        return image
    box = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return box if box.size >= min_share * image.size else image

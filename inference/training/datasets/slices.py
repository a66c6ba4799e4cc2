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

"""2D slice images (PNG/JPG, any size or mode): reading one as grey values, finding them in folders.

The training sets laid out like COVID-CT are read by `inference.training.datasets.slices`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from inference.core.types import InferenceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ImageError(InferenceError):
    """An image cannot be read; the message names the file."""


def load_grey(path: str | Path) -> np.ndarray:
    """An image as float32 grey values in [0, 1], whatever its mode (L, RGB, RGBA, P, I;16, F).

    Raises:
        ImageError: not a regular file, unreadable, truncated, not an image, or larger than PIL's
            decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`); the message names the file and the reason.
    """
    if not os.path.isfile(path):  # a folder, or a FIFO/device whose open() would block
        raise ImageError(f"{path}: not a regular file")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its pixel limit and twice it: refuse those too, before decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return _grey(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{path}: image too large: {exc}") from None
    except MemoryError:
        raise ImageError(f"{path}: image too large: out of memory while decoding it") from None
    except Exception as exc:  # noqa: BLE001 - PIL's decoders raise many kinds (SyntaxError, struct.error, ...)
        raise ImageError(f"{path}: cannot read image: {str(exc) or type(exc).__name__}") from None


def _grey(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        finite = np.isfinite(arr)
        if not finite.all():
            arr = np.where(finite, arr, np.float32(arr[finite].min() if finite.any() else 0.0))
        span = max(float(arr.max() - arr.min()), 1.0)
        return (arr - arr.min()) / span
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0


def find_images(paths: list[str | Path]) -> list[Path]:
    """Image files among `paths`, folders searched recursively (sorted), in argument order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out

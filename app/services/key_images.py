"""Key images of a screened case: the axial levels with the most lesion (else the highest heat), drawn as the
CT in the lung window with the heat map and the lesion outline; for reports and worklist thumbnails."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from inference.screening.steps import per_slice_count
from viewer.io.atomic_files import write_bytes_atomic

LUNG_WINDOW = (-600.0, 1500.0)  # centre, width
HEAT_ALPHA = 0.45  # the heat map's opacity at its maximum
HEAT_FLOOR = 0.2  # heat below this is not drawn, so the CT stays readable where the model is indifferent
OUTLINE_RGB = (255, 255, 0)  # lesion outline: yellow on grey and on the heat map's blues and reds
MIN_GAP_MM = 15.0  # key levels at least this far apart, so they show different parts of the lungs


def key_levels(lesions: np.ndarray, heatmap: np.ndarray, lungs: np.ndarray, spacing_z: float,
               count: int = 3) -> list[int]:
    """Up to `count` axial slices (canonical indices) ranked by lesion area, else heat inside the lungs, else lung
    area, at least `MIN_GAP_MM` apart; slices without lung are never chosen."""
    lung_area = per_slice_count(lungs)
    score = per_slice_count(lesions).astype(float)
    if not score.any():
        score = np.where(lungs > 0, heatmap, 0.0).sum(axis=(1, 2))
    if not score.any():  # no lesion and no heat (a clear negative): the levels with the most lung
        score = lung_area.astype(float)
    order = [int(k) for k in np.argsort(-score, kind="stable") if lung_area[k] > 0]
    chosen: list[int] = []
    for k in order:
        if all(abs(k - c) * spacing_z >= MIN_GAP_MM for c in chosen):
            chosen.append(k)
        if len(chosen) == count:
            break
    return chosen


def render_slice(hu: np.ndarray, heatmap: np.ndarray | None, lesions: np.ndarray | None,
                 pixel_aspect: float = 1.0) -> np.ndarray:
    """One axial slice (y, x) as RGB uint8, patient's right on the image's left (radiological convention,
    as canonical LPS arrays lie). `pixel_aspect` = row spacing / column spacing stretches rows to square mm."""
    centre, width = LUNG_WINDOW
    grey = np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if heatmap is not None:
        from matplotlib import colormaps

        heat = np.clip(heatmap, 0.0, 1.0)
        colours = colormaps["jet"](heat)[..., :3]
        alpha = (HEAT_ALPHA * np.clip((heat - HEAT_FLOOR) / (1 - HEAT_FLOOR), 0.0, 1.0))[..., None]
        rgb = rgb * (1 - alpha) + colours * alpha
    out = (rgb * 255).round().astype(np.uint8)
    if lesions is not None and lesions.any():
        inside = lesions > 0
        edge = inside & ~ndimage.binary_erosion(inside)
        out[edge] = OUTLINE_RGB
    if abs(pixel_aspect - 1.0) > 0.01:
        h, w = out.shape[:2]
        out = np.asarray(Image.fromarray(out).resize((w, max(1, round(h * pixel_aspect))), Image.BILINEAR))
    return out


def write_key_images(folder: Path, hu: np.ndarray, spacing: tuple[float, float, float], heatmap: np.ndarray,
                     lesions: np.ndarray, lungs: np.ndarray, count: int = 3) -> list[dict]:
    """PNG files `key_<index>.png` in `folder` for the key levels; their index, file and lesion area (mm^2)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for k in key_levels(lesions, heatmap, lungs, spacing[0], count):
        image = render_slice(hu[k], heatmap[k], lesions[k], spacing[1] / spacing[2])
        name = f"key_{k:04d}.png"
        png = io.BytesIO()
        Image.fromarray(image).save(png, format="PNG", compress_level=1)  # a key image is written once, read rarely
        write_bytes_atomic(folder / name, png.getvalue())
        entries.append({"index": k, "file": name,
                        "lesion_mm2": round(float((lesions[k] > 0).sum() * spacing[1] * spacing[2]), 1)})
    return entries

"""A synthetic labelled CT-volume set for DeCoVNet, written in `inference.volume_data`'s layout.

Each case is a phantom with its own anatomy (seed), noise, slice count and thickness, and pixel
size. COVID cases carry 1-3 ground-glass opacities and 0-2 consolidations (at least one lesion
placed); NonCOVID cases are clean or carry 1-3 solid nodules (a non-COVID finding). Every case gets
`ct.nii.gz`, `lungs.nii.gz` (1 left, 2 right, lesions included), `label.txt` and `lesions.json`
(every placed lesion with its kind and voxel box); the root gets `cases.csv` and `dataset.json`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from inference.volume_data import CLASSES, CT_FILE, LABEL_FILE, LESIONS_FILE, LUNGS_FILE
from viewer.io import write_volume
from viewer.phantom import Phantom, PhantomConfig, make_phantom


@dataclass(frozen=True)
class PhantomSetConfig:
    """Ranges the cases are drawn from (uniformly, per case, from `seed`)."""

    cases: int = 24
    positive_fraction: float = 0.5
    seed: int = 0
    depth: tuple[int, int] = (48, 96)  # slices
    size: int = 128  # rows = columns
    slice_mm: tuple[float, float] = (2.5, 6.0)
    pixel_mm: tuple[float, float] = (2.4, 3.0)
    noise_sd: tuple[float, float] = (6.0, 24.0)
    ggo: tuple[int, int] = (1, 3)  # COVID cases
    consolidation: tuple[int, int] = (0, 2)
    nodules: tuple[int, int] = (1, 3)  # the NonCOVID cases that are not clean
    clean_fraction: float = 0.5  # NonCOVID cases without any lesion


def case_config(cfg: PhantomSetConfig, index: int, positive: bool) -> PhantomConfig:
    """The phantom of case `index`: anatomy, sampling, noise and lesion load drawn from `cfg`'s ranges."""
    rng = np.random.default_rng([cfg.seed, index])
    nz = int(rng.integers(cfg.depth[0], cfg.depth[1] + 1))
    dz, dxy = rng.uniform(*cfg.slice_mm), rng.uniform(*cfg.pixel_mm)
    n_ggo = n_cons = n_nod = 0
    if positive:
        n_ggo = int(rng.integers(cfg.ggo[0], cfg.ggo[1] + 1))
        n_cons = int(rng.integers(cfg.consolidation[0], cfg.consolidation[1] + 1))
    elif rng.uniform() >= cfg.clean_fraction:
        n_nod = int(rng.integers(cfg.nodules[0], cfg.nodules[1] + 1))
    return PhantomConfig(shape=(nz, cfg.size, cfg.size), spacing=(round(dz, 2), round(dxy, 2), round(dxy, 2)),
                         n_ggo=n_ggo, n_consolidation=n_cons, n_nodules=n_nod,
                         noise_sd=round(float(rng.uniform(*cfg.noise_sd)), 1), seed=cfg.seed * 10_000 + index)


def write_phantom_dataset(out_dir: str | Path, config: PhantomSetConfig | None = None,
                          log: Callable[[str], None] | None = None) -> list[dict]:
    """Write the set to `out_dir`; returns one row per case (name, label, shape, spacing, lesions)."""
    cfg = config or PhantomSetConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_pos = int(round(cfg.cases * cfg.positive_fraction))
    positives = np.zeros(cfg.cases, bool)
    positives[np.random.default_rng([cfg.seed, 99]).permutation(cfg.cases)[:n_pos]] = True
    rows = []
    for i, positive in enumerate(positives):
        phantom = make_case(cfg, i, bool(positive))
        name = f"case{i:03d}"
        rows.append(_write_case(out / name, name, phantom, CLASSES[int(positive)]))
        if log is not None:
            log(f"{name}: {rows[-1]['label']}, {rows[-1]['shape']}, {len(phantom.lesions)} lesion(s)")
    with open(out / "cases.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("case", "label"))
        writer.writerows((r["case"], r["label"]) for r in rows)
    (out / "dataset.json").write_text(json.dumps({
        "name": "LungLens phantom volumes",
        "description": "synthetic chest CTs (viewer.phantom): COVID = ground-glass opacities and consolidations, "
                       "NonCOVID = clean lungs or solid nodules",
        "generator": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "cases": rows,
    }, indent=2))
    return rows


def make_case(cfg: PhantomSetConfig, index: int, positive: bool) -> Phantom:
    """The phantom of case `index` (another anatomy when a COVID case got no COVID-like lesion placed)."""
    pc = case_config(cfg, index, positive)
    for attempt in range(10):
        phantom = make_phantom(pc, seed=pc.seed + attempt * 1_000_000) if attempt else make_phantom(pc)
        if not positive or any(les.kind in ("ggo", "consolidation") for les in phantom.lesions):
            return phantom
    raise RuntimeError(f"case {index}: no COVID-like lesion could be placed in 10 anatomies")


def _write_case(folder: Path, name: str, phantom: Phantom, label: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    vol = phantom.volume
    write_volume(vol, folder / CT_FILE)
    lungs = np.zeros(vol.shape, np.uint8)
    lungs[phantom.masks["lung_left"]] = 1
    lungs[phantom.masks["lung_right"]] = 2
    write_volume(vol.with_array(lungs), folder / LUNGS_FILE)
    (folder / LABEL_FILE).write_text(label + "\n")
    lesions = [{"kind": les.kind, "side": les.side, "volume_ml": round(les.volume_ml, 3),
                "bbox": [list(b) for b in les.bbox]} for les in phantom.lesions]
    (folder / LESIONS_FILE).write_text(json.dumps({"lesions": lesions}, indent=2))
    return {"case": name, "label": label, "shape": list(vol.shape), "spacing": list(vol.spacing),
            "noise_sd": phantom.config.noise_sd, "lesions": [les["kind"] for les in lesions]}

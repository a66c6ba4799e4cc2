"""Evaluation: the lung U-Net against the threshold method, Dice against phantom ground truth.

    python -m tests.benchmarks.eval_lung_unet [--seeds 6] [--volumes DIR] [--card resources/models/lung-unet.card.json]

Held-out phantoms (seeds from 20000, never used for training) in four kinds: clean lungs, the
generator's own lesions (2 GGO + 3 consolidations of 9-18 mm), LARGE consolidations at the lung
border (two dense -50..+50 HU bumpy ellipsoids of 25-40 mm radius per lung, centred just inside the
pleura and clipped to the ground-truth lung: `add_border_consolidation`; the generator's defaults are
not changed) and lobar-size ones (one of 45-60 mm radius per lung). With `--volumes`, also every case
folder of a set in `inference.training.datasets.volumes`'s layout with a ground-truth `lungs.nii.gz` (e.g. a held-out
phantom set). Prints a table and, with `--card`, stores it under "evaluation" in the model card (JSON).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from inference.lungs.threshold import LungMasks, segment_lungs
from inference.lungs.unet import segment_lungs_unet
from viewer.synthetic.phantom import Phantom, PhantomConfig, make_phantom

SEED0 = 20_000
LARGE_MM = (25.0, 40.0)  # radius of the large border consolidations, 2 per lung
LOBAR_MM = (45.0, 60.0)  # ... of the lobar-size ones, 1 per lung


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def add_border_consolidation(hu: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float],
                             rng: np.random.Generator, radius_mm: float = 35.0, angle_deg: float | None = None,
                             z_fraction: float | None = None) -> np.ndarray:
    """Paint a dense (-50..+50 HU) bumpy ellipsoid touching the pleura into `hu`, inside `lung` only.

    The centre lies `0.3 * radius` inside the lung's outline on an axial slice at `z_fraction` of the
    lung's height, in the direction `angle_deg` from the lung's centre (0 = lateral, 90 = posterior).
    Returns the painted voxels (all inside `lung`).
    """
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    zf = rng.uniform(0.2, 0.6) if z_fraction is None else z_fraction
    k = int(zs[0] + zf * (zs[-1] - zs[0]))
    ys, xs = np.nonzero(lung[k])
    cy, cx = ys.mean(), xs.mean()
    lateral = 1.0 if cx >= hu.shape[2] / 2 else -1.0  # the patient's left is +x
    ang = np.radians(rng.uniform(-30.0, 100.0) if angle_deg is None else angle_deg)
    d = np.array([np.sin(ang), lateral * np.cos(ang)])  # (y, x) direction, mm-agnostic
    proj = ((ys - cy) * spacing[1]) * d[0] + ((xs - cx) * spacing[2]) * d[1]
    j = int(np.argmax(proj))
    centre_mm = np.array([k * spacing[0], ys[j] * spacing[1], xs[j] * spacing[2]])
    centre_mm[1:] -= 0.3 * radius_mm * d
    semi = radius_mm * rng.uniform(0.8, 1.2, 3)
    lo = np.maximum(0, np.floor((centre_mm - 1.3 * semi) / np.array(spacing)).astype(int))
    hi = np.minimum(hu.shape, np.ceil((centre_mm + 1.3 * semi) / np.array(spacing)).astype(int) + 1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.meshgrid(*[np.arange(a, b) * s for a, b, s in zip(lo, hi, spacing)], indexing="ij")
    rho = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre_mm, semi)))
    bumps = sum(0.08 * np.sin(g / rng.uniform(6, 12) + rng.uniform(0, 2 * np.pi)) for g in grid)
    region = np.zeros(lung.shape, bool)
    region[box] = (rho + bumps < 1.0) & lung[box]
    level = rng.uniform(-50.0, 50.0)
    values = level + 15.0 * rng.standard_normal(int(region.sum()))
    hu[region] = np.clip(values, -50.0, 50.0).astype(hu.dtype)
    return region


def border_consolidation_phantom(seed: int, shape=(96, 192, 192), spacing=(3.0, 1.8, 1.8), per_lung: int = 2,
                                 radius_mm: tuple[float, float] = LARGE_MM) -> tuple[Phantom, np.ndarray, np.ndarray]:
    """A clean phantom with `per_lung` border consolidations per lung: (phantom, hu, lesion mask).

    Several per lung are spread from 15 % to 65 % of the lung's height; a single one lies at 25-50 %.
    """
    ph = make_phantom(PhantomConfig(shape=shape, spacing=spacing, n_ggo=0, n_consolidation=0, seed=seed))
    hu = ph.volume.array.copy()
    rng = np.random.default_rng([seed, 5])
    lesion = np.zeros(hu.shape, bool)
    for name in ("lung_left", "lung_right"):
        for i in range(per_lung):
            zf = 0.15 + 0.5 * i / (per_lung - 1) if per_lung > 1 else rng.uniform(0.25, 0.5)
            lesion |= add_border_consolidation(hu, ph.masks[name], spacing, rng, radius_mm=rng.uniform(*radius_mm),
                                               z_fraction=zf)
    return ph, hu, lesion


def scores(masks: LungMasks, left: np.ndarray, right: np.ndarray, lesion: np.ndarray | None) -> dict[str, float]:
    out = {"left": dice(masks.left, left), "right": dice(masks.right, right), "both": dice(masks.lungs, left | right)}
    if lesion is not None and lesion.any():
        out["lesion_inside"] = float((masks.lungs & lesion).sum() / lesion.sum())
    return out


def evaluate_case(hu, spacing, left, right, lesion=None) -> dict[str, dict[str, float]]:
    res = {}
    for method, fn in (("unet", segment_lungs_unet), ("threshold", segment_lungs)):
        t0 = time.perf_counter()
        res[method] = scores(fn(hu, spacing), left, right, lesion)
        res[method]["seconds"] = time.perf_counter() - t0
    return res


def _mean(rows: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for method in rows[0]:
        keys = rows[0][method].keys()
        out[method] = {k: round(float(np.mean([r[method][k] for r in rows])), 4) for k in keys}
        out[method]["min_both"] = round(float(min(r[method]["both"] for r in rows)), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6, help="phantoms per kind")
    ap.add_argument("--volumes", help="a case-folder set with lungs.nii.gz ground truth")
    ap.add_argument("--card", help="a model card (JSON) to store the table in")
    args = ap.parse_args()

    kinds: dict[str, list] = {"clean": [], "generator lesions": [], "large border consolidations": [],
                              "lobar-size border consolidations": []}
    for i in range(args.seeds):
        seed = SEED0 + i
        ph = make_phantom(PhantomConfig(n_ggo=0, n_consolidation=0, seed=seed))
        kinds["clean"].append(evaluate_case(ph.volume.array, ph.volume.spacing, ph.masks["lung_left"],
                                            ph.masks["lung_right"]))
        ph = make_phantom(PhantomConfig(n_ggo=2, n_consolidation=3, seed=seed))
        les = ph.masks["ggo"] | ph.masks["consolidation"]
        kinds["generator lesions"].append(evaluate_case(ph.volume.array, ph.volume.spacing, ph.masks["lung_left"],
                                                        ph.masks["lung_right"], les))
        for kind, per_lung, radius in (("large border consolidations", 2, LARGE_MM), ("lobar-size border "
                                                                                     "consolidations", 1, LOBAR_MM)):
            ph, hu, les = border_consolidation_phantom(seed, per_lung=per_lung, radius_mm=radius)
            kinds[kind].append(evaluate_case(hu, ph.volume.spacing, ph.masks["lung_left"], ph.masks["lung_right"],
                                             les))
        print(f"seed {seed}: " + "; ".join(f"{k} U-Net {v[-1]['unet']['both']:.4f} / threshold "
                                           f"{v[-1]['threshold']['both']:.4f}" for k, v in kinds.items()), flush=True)
    if args.volumes:
        from inference.training.datasets.volumes import LUNGS_FILE, find_cases, read_nifti

        for case in find_cases(args.volumes):
            hu, spacing, _ = case.load()
            gt, _ = read_nifti(case.folder / LUNGS_FILE)
            kind = f"{Path(args.volumes).name}: {'COVID' if case.label else 'NonCOVID'}"
            kinds.setdefault(kind, []).append(evaluate_case(hu, spacing, gt == 1, gt == 2))
    table = {k: {"cases": len(v), **_mean(v)} for k, v in kinds.items() if v}
    print(f"\n{'kind':44} {'cases':>5}  {'U-Net L/R/both':>24}  {'threshold L/R/both':>24}  lesion inside U/T")
    for k, t in table.items():
        u, th = t["unet"], t["threshold"]
        inside = f"{u['lesion_inside']:.3f}/{th['lesion_inside']:.3f}" if "lesion_inside" in u else "-"
        print(f"{k:44} {t['cases']:5d}  {u['left']:.4f}/{u['right']:.4f}/{u['both']:.4f}  "
              f"{th['left']:.4f}/{th['right']:.4f}/{th['both']:.4f}  {inside}")
    if args.card:
        path = Path(args.card)
        card = json.loads(path.read_text())
        card["evaluation"] = {
            "what": "Dice against ground-truth lung masks of held-out phantoms (seeds from 20000; 96x192x192 at "
                    "3.0/1.8/1.8 mm), per kind the mean over cases, U-Net vs the threshold method in the same run; "
                    "large border consolidations = 2 dense (-50..+50 HU) ellipsoids of 25-40 mm radius per lung "
                    "touching the pleura, lobar-size = 1 of 45-60 mm per lung (tests/benchmarks/eval_lung_unet.py)",
            "results": table,
        }
        path.write_text(json.dumps(card, indent=2))
        print(f"stored in {path}")


if __name__ == "__main__":
    main()

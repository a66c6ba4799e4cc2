"""Lesions of the phantom: peripheral GGOs and consolidations (COVID-like) and solid nodules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from viewer.synthetic.anatomy import Anatomy
from viewer.synthetic.geometry import Grid, sstep
from viewer.synthetic.texture import eval_field, smooth_field
from viewer.synthetic.tissues import CONSOLIDATION_HU_RANGE, GGO_HU_RANGE, NODULE_HU_RANGE

if TYPE_CHECKING:
    from viewer.synthetic.phantom import PhantomConfig

LESION_KINDS: tuple[str, ...] = ("ggo", "consolidation", "nodule")
_MASK_OF_KIND = {"ggo": "ggo", "consolidation": "consolidation", "nodule": "other_lesion"}


@dataclass(frozen=True)
class Lesion:
    """One placed lesion; `bbox` and `volume_ml` describe its voxels in the final masks."""

    kind: str  # "ggo" | "consolidation" | "nodule"
    center_lps: tuple[float, float, float]  # centroid of its voxels, LPS mm
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (z0,z1),(y0,y1),(x0,x1), half-open
    side: str  # "left" | "right"
    volume_ml: float


@dataclass
class LesionPlan:
    kind: str
    center: np.ndarray  # world (x, y, z)
    semi: np.ndarray  # (x, y, z) semi-axes, mm
    side: int
    shape_field: tuple
    hu_field: tuple
    hu_level: float


def plan_lesions(an: Anatomy, cfg: PhantomConfig) -> list[LesionPlan]:
    rng = np.random.default_rng([cfg.seed, 2])
    plans: list[LesionPlan] = []
    half_fov = 0.5 * np.array(cfg.shape[::-1]) * np.array(cfg.spacing[::-1])  # (x, y, z) mm

    def clear_of_others(c: np.ndarray, rad: float) -> bool:
        in_view = np.all(np.abs(c) < half_fov - 0.5 * rad)
        return bool(in_view) and all(np.linalg.norm(c - q.center) > rad + q.semi.max() + 4.0 for q in plans)

    kinds = ["ggo"] * cfg.n_ggo + ["consolidation"] * cfg.n_consolidation + ["nodule"] * cfg.n_nodules
    for kind in kinds:
        if kind == "nodule":
            rad = rng.uniform(2.5, 12.5)
            semi = np.full(3, rad)
        elif kind == "ggo":
            rad = rng.uniform(11.0, 22.0)
            semi = rad * rng.uniform(0.8, 1.2, 3)
        else:
            rad = rng.uniform(9.0, 18.0)
            semi = rad * rng.uniform(0.8, 1.2, 3)
        shape_field = smooth_field(rng)
        hu_field = smooth_field(rng, lam=(5.0, 14.0))
        if kind == "ggo":
            level = rng.uniform(-560.0, -380.0)
        elif kind == "consolidation":
            level = rng.uniform(-35.0, 25.0)
        else:
            level = rng.uniform(28.0, 52.0)
        first_side = 1 if rng.uniform() < 0.45 else -1
        center = None
        for attempt in range(200):
            side = first_side if attempt < 100 else -first_side
            if kind == "nodule":
                xyf = side * rng.uniform(20, 125), rng.uniform(-80, 85), rng.uniform(0.1, 0.92)
                c = np.array(an.to_world(*xyf))
                sd, s = an.lung_sd_points(c[None])
                if sd[0] > rad + 4.0 and s[0] == side and clear_of_others(c, rad):
                    center = c
                    break
                continue
            # peripheral, subpleural: march from the middle of the hemithorax to the pleura
            f = 0.1 + 0.72 * rng.beta(1.3, 1.8)
            phi = np.radians(rng.uniform(-80.0, 120.0))
            theta = phi if side > 0 else np.pi - phi
            start = np.array(an.to_world(side * 68.0, 15.0, f))
            direction = np.array([np.cos(theta), np.sin(theta), 0.0])
            steps = np.arange(0.0, 170.0, 1.0)
            pts = start[None] + steps[:, None] * direction[None]
            sd, s = an.lung_sd_points(pts)
            inside = (sd > 0) & (s == side)
            if not inside[0]:
                continue
            exit_i = int(np.argmin(inside)) if not inside.all() else len(steps)
            if exit_i < 8:
                continue
            c = pts[exit_i - 1] - direction * (rad * rng.uniform(0.25, 0.65))
            sd_c, s_c = an.lung_sd_points(c[None])
            if sd_c[0] > 2.0 and s_c[0] == side and clear_of_others(c, rad):
                center = c
                break
        if center is None:
            continue
        plans.append(LesionPlan(kind, center, semi, side, shape_field, hu_field, level))
    return plans


def stamp_lesions(plans: list[LesionPlan], grid: Grid, hu: np.ndarray,
                   masks: dict[str, np.ndarray]) -> list[Lesion]:
    """Write the lesions into `hu` inside their lung, fill the lesion masks and describe what was drawn.

    A GGO only raises voxels below its own HU (vessels stay visible and stay out of its mask); a
    consolidation or nodule replaces every lung voxel of its shape. Later lesions override earlier ones.
    """
    for name in ("ggo", "consolidation", "other_lesion"):
        masks[name] = np.zeros(grid.shape, bool)
    if not plans:
        return []
    ids = np.zeros(grid.shape, np.uint8 if len(plans) < 255 else np.uint16)
    boxes = []
    for n, pl in enumerate(plans, start=1):
        ext = pl.semi * (1.45 if pl.kind != "nodule" else 1.05) + 1.0
        zr = grid.index_range(0, pl.center[2] - ext[2], pl.center[2] + ext[2])
        yr = grid.index_range(1, pl.center[1] - ext[1], pl.center[1] + ext[1])
        xr = grid.index_range(2, pl.center[0] - ext[0], pl.center[0] + ext[0])
        box = (slice(*zr), slice(*yr), slice(*xr))
        boxes.append(box)
        if min(zr[1] - zr[0], yr[1] - yr[0], xr[1] - xr[0]) <= 0:
            continue
        dz = (grid.zs[box[0]] - pl.center[2]).astype(np.float32)[:, None, None]
        dy = (grid.ys[box[1]] - pl.center[1]).astype(np.float32)[None, :, None]
        dx = (grid.xs[box[2]] - pl.center[0]).astype(np.float32)[None, None, :]
        rho = np.sqrt((dx / pl.semi[0]) ** 2 + (dy / pl.semi[1]) ** 2 + (dz / pl.semi[2]) ** 2)
        lung = masks["lung_left" if pl.side > 0 else "lung_right"][box]
        var = eval_field(pl.hu_field, dz, dy, dx)
        cur = hu[box]
        if pl.kind == "nodule":
            shape = (rho < 1.0) & lung
            val = np.clip(pl.hu_level + 5.0 * var, *NODULE_HU_RANGE)
            sel = shape
        else:
            bumps = np.clip(eval_field(pl.shape_field, dz, dy, dx), -1.6, 1.6)  # stays inside the box
            f = 1.0 - rho + 0.28 * bumps * np.minimum(rho, 1.0)
            shape = (f > 0) & lung
            if pl.kind == "ggo":
                val = GGO_HU_RANGE[0] + 30.0 + (pl.hu_level - GGO_HU_RANGE[0] - 30.0) * sstep(0.0, 0.45, f)
                val = np.clip(val + 35.0 * var, GGO_HU_RANGE[0] + 5.0, GGO_HU_RANGE[1] - 5.0)
                sel = shape & (cur < val)  # vessels denser than the opacity stay visible
            else:
                val = np.clip(pl.hu_level + 18.0 * var, CONSOLIDATION_HU_RANGE[0] + 5.0,
                              CONSOLIDATION_HU_RANGE[1] - 5.0)
                sel = shape
        cur[sel] = val[sel]
        ids[box][sel] = n
    lesions: list[Lesion] = []
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    for n, (pl, box) in enumerate(zip(plans, boxes), start=1):
        local = ids[box] == n
        count = int(local.sum())
        if count == 0:
            continue
        masks[_MASK_OF_KIND[pl.kind]][box] |= local
        kk, jj, ii = np.nonzero(local)
        off = [b.start for b in box]
        bbox = tuple((int(a.min()) + o, int(a.max()) + 1 + o) for a, o in zip((kk, jj, ii), off))
        centroid_idx = np.array([kk.mean() + off[0], jj.mean() + off[1], ii.mean() + off[2]])
        center = (grid.origin[0] + centroid_idx[2] * grid.spacing[2],
                  grid.origin[1] + centroid_idx[1] * grid.spacing[1],
                  grid.origin[2] + centroid_idx[0] * grid.spacing[0])
        lesions.append(Lesion(pl.kind, tuple(float(c) for c in center), bbox,  # type: ignore[arg-type]
                              "left" if pl.side > 0 else "right", count * voxel_ml))
    return lesions

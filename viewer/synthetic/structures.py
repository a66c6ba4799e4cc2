"""Stamping the mediastinal tubes, the airway, the bones and the pulmonary vessel trees."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from viewer.synthetic.anatomy import Anatomy
from viewer.synthetic.geometry import Grid, apply_by_slice, splat_capsules
from viewer.synthetic.tissues import (
    HU_AIR,
    HU_AIRWAY_WALL,
    HU_CARTILAGE,
    HU_CORTICAL,
    HU_MED_FAT,
    HU_MUSCLE,
    HU_RIB_MARROW,
    HU_VESSEL,
)
from viewer.synthetic.vessel_trees import grow_trees

if TYPE_CHECKING:
    from viewer.synthetic.phantom import PhantomConfig


def _keep_largest_component(mask: np.ndarray, hu: np.ndarray, fill: float) -> None:
    """Drop all but the largest (6-connected) component of `mask` (in place), painting the rest `fill`."""
    zz = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(zz) == 0:
        return
    box = (slice(int(zz[0]), int(zz[-1]) + 1),)
    lab, n = ndimage.label(mask[box])
    if n <= 1:
        return
    objects = ndimage.find_objects(lab)
    sizes = [int(np.count_nonzero(lab[sl] == i)) for i, sl in enumerate(objects, start=1)]
    keep = int(np.argmax(sizes)) + 1
    sub_mask, sub_hu = mask[box], hu[box]
    for i, sl in enumerate(objects, start=1):
        if i != keep:
            drop = lab[sl] == i
            sub_mask[sl][drop] = False
            sub_hu[sl][drop] = fill


def stamp_structures(an: Anatomy, grid: Grid, cfg: PhantomConfig, hu: np.ndarray,
                      masks: dict[str, np.ndarray]) -> None:
    scratch = np.zeros(grid.shape, np.uint8)
    lung_l, lung_r, airway = masks["lung_left"], masks["lung_right"], masks["airway"]

    def carve(idx, region, fill: float) -> None:
        was = lung_l[idx] | lung_r[idx]
        was &= region
        lung_l[idx] &= ~region
        lung_r[idx] &= ~region
        hu[idx][was] = fill

    # mediastinal vessels and oesophagus
    for caps_t, value in an.tubes["vessels"]:
        box = splat_capsules(scratch, an.to_world_caps(caps_t), grid, 3.0, 8.0)

        def vessel(k, idx, touched, depth, value=value):
            carve(idx, touched & (depth > -2.5), HU_MED_FAT)
            inside = touched & (depth > 0) & (hu[idx] < 150.0)
            hu[idx][inside] = value

        apply_by_slice(scratch, box, 3.0, 8.0, vessel)

    # trachea and main bronchi: lumen (the airway mask) and wall
    box = splat_capsules(scratch, an.tube_caps["airway"], grid, 3.2, 8.0)

    def air(k, idx, touched, depth):
        carve(idx, touched & (depth > -3.0), HU_MED_FAT)
        wall = touched & (depth > -1.8) & (depth <= 0) & (hu[idx] < 150.0)
        hu[idx][wall] = HU_AIRWAY_WALL
        lumen = touched & (depth > 0) & masks["body"][idx]
        hu[idx][lumen] = HU_AIR
        airway[idx] |= lumen

    apply_by_slice(scratch, box, 3.2, 8.0, air)

    # ribs, clavicles, costal cartilage
    bone_caps, cart_caps = an.rib_caps()
    for caps, cortical in ((bone_caps, True), (cart_caps, False)):
        box = splat_capsules(scratch, caps, grid, 2.0, 6.0)

        def bone(k, idx, touched, depth, cortical=cortical):
            inbody = masks["body"][idx]
            carve(idx, touched & (depth > -1.5) & inbody, HU_MUSCLE)
            inside = touched & (depth > 0) & inbody
            if cortical:
                hu[idx][inside] = np.where(depth[inside] < 1.4, HU_CORTICAL, HU_RIB_MARROW)
            else:
                inside &= hu[idx] < 150.0
                hu[idx][inside] = HU_CARTILAGE

        apply_by_slice(scratch, box, 2.0, 6.0, bone)

    # lung pockets cut off by the tubes and bones are mediastinal fat, not lung
    for lung in (lung_l, lung_r):
        _keep_largest_component(lung, hu, HU_MED_FAT)

    # pulmonary vessel trees, partial-volume blended into the lungs only
    segs = grow_trees(an, np.random.default_rng([cfg.seed, 1]), cfg.vessel_min_radius_mm)
    h = float(np.prod(grid.spacing)) ** (1.0 / 3.0)
    box = splat_capsules(scratch, segs, grid, 0.5 * h, 0.5 * h)

    def vessels(k, idx, touched, depth):
        lung = touched & (lung_l[idx] | lung_r[idx])
        cover = np.clip(0.5 + depth[lung] / h, 0.0, 1.0)
        cur = hu[idx][lung]
        hu[idx][lung] = cur + cover * (HU_VESSEL - cur)

    apply_by_slice(scratch, box, 0.5 * h, 0.5 * h, vessels)

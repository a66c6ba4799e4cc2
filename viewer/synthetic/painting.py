"""The slice-by-slice base painting: body wall, mediastinum, spine, sternum, scapulae, heart, lungs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from viewer.synthetic.anatomy import HEART_CHAMBERS, N_BINS, Y_CANAL, Y_CAVITY, Y_STERNUM, Y_VERTEBRA, Anatomy
from viewer.synthetic.geometry import Grid
from viewer.synthetic.texture import Texture
from viewer.synthetic.tissues import (
    HU_AIR,
    HU_BLOOD,
    HU_CORD,
    HU_CORTICAL,
    HU_CSF,
    HU_DISC,
    HU_FAT,
    HU_LIVER,
    HU_MED_FAT,
    HU_MUSCLE,
    HU_MYOCARDIUM,
    HU_POSTERIOR_ELEMENTS,
    HU_RIB_MARROW,
    HU_SKIN,
    HU_SPLEEN,
    HU_STOMACH,
    HU_VERTEBRA,
    HU_VERTEBRA_CORTEX,
)

if TYPE_CHECKING:
    from viewer.synthetic.phantom import PhantomConfig


def paint_slices(an: Anatomy, grid: Grid, cfg: PhantomConfig, hu: np.ndarray,
                  masks: dict[str, np.ndarray]) -> None:
    nz, ny, nx = grid.shape
    xt = (grid.xs / an.sx)[None, :].repeat(ny, 0)
    yt = (grid.ys / an.sy)[:, None].repeat(nx, 1)
    th_b = np.arctan2(yt, xt)
    rho_b = np.hypot(xt, yt).astype(np.float32)
    th_c = np.arctan2(yt - Y_CAVITY, xt)
    th_c_mirror = np.arctan2(yt - Y_CAVITY, np.abs(xt))  # angle as seen on the patient's left
    rho_c = np.hypot(xt, yt - Y_CAVITY).astype(np.float32)
    bins = -np.pi + (np.arange(N_BINS) + 0.5) * (2 * np.pi / N_BINS)
    tb = np.minimum(((th_b + np.pi) / (2 * np.pi) * N_BINS).astype(np.int32), N_BINS - 1)
    tc = np.minimum(((th_c + np.pi) / (2 * np.pi) * N_BINS).astype(np.int32), N_BINS - 1)
    fat_t = an.fat_thickness(th_b).astype(np.float32)
    static_sd = np.minimum(an.band_sd(xt, yt), an.spine_sd(xt, yt)).astype(np.float32)
    zd = an.diaphragm_z(xt, yt).astype(np.float32)
    apex_d = an.apex_dist(xt, yt).astype(np.float32)
    left = xt > 0
    lung_base = (-875.0 + 45.0 * np.clip((yt + 80.0) / 165.0, 0.0, 1.0)).astype(np.float32)
    liver = xt < 18.0 - 0.3 * yt + 6.0 * np.sin(yt / 23.0)
    spleen = (xt - 70.0) ** 2 / 45.0**2 + (yt - 45.0) ** 2 / 60.0**2 < 1.0
    organ = np.where(liver, HU_LIVER, np.where(spleen, HU_SPLEEN, HU_STOMACH)).astype(np.float32)
    # spine (static in-plane shapes)
    vb_e = (xt / 21.0) ** 2 + ((yt - Y_VERTEBRA) / 17.0) ** 2
    vb = vb_e < 1.0
    vb_in = (xt / 19.3) ** 2 + ((yt - Y_VERTEBRA) / 15.3) ** 2 < 1.0
    rc = np.hypot(xt, yt - Y_CANAL)
    canal = rc < 8.5
    cord = rc < 5.0
    post = ((rc >= 8.5) & (rc < 14.0) & (yt > Y_CANAL - 10)) | ((np.abs(xt) > 6.5) & (np.abs(xt) < 13.0)
                                                                 & (yt > Y_VERTEBRA + 10) & (yt < Y_CANAL))
    post |= (np.abs(xt) < 3.5) & (yt > Y_CANAL + 10) & (yt < Y_CANAL + 27)
    transverse = (np.abs(yt - Y_CANAL) < 4.5) & (np.abs(xt) > 12.0) & (np.abs(xt) < 36.0)
    spine_zone = an.spine_sd(xt, yt) < 0
    # sternum
    st_y = (yt - Y_STERNUM) / 6.5
    st_y_in = (yt - Y_STERNUM) / 4.9
    # heart window
    hx = (an.heart_c[0] - an.heart_ext[0] - 2) * an.sx, (an.heart_c[0] + an.heart_ext[0] + 2) * an.sx
    hy = (an.heart_c[1] - an.heart_ext[1] - 2) * an.sy, (an.heart_c[1] + an.heart_ext[1] + 2) * an.sy
    hwin = (slice(*grid.index_range(1, *hy)), slice(*grid.index_range(2, *hx)))
    tex = Texture(np.random.default_rng([cfg.seed, 3]), grid)
    lung_l, lung_r, body_m = masks["lung_left"], masks["lung_right"], masks["body"]

    for k, z in enumerate(grid.zs):
        f = float(an.f_of(z))
        sl = hu[k]
        d_body = an.body_r(bins, f).astype(np.float32)[tb] - rho_b
        d_cav = an.cavity_r(bins, f).astype(np.float32)[tc] - rho_c
        body = d_body > 0
        body_m[k] = body
        sl.fill(HU_AIR)
        sl[body] = HU_FAT
        sl[body & (d_body < 2.0)] = HU_SKIN
        sl[d_body > fat_t] = HU_MUSCLE
        cav = d_cav > 0
        sl[cav] = HU_MED_FAT
        abd = cav & (z < zd)
        sl[abd] = organ[abd]
        # spine
        sl[spine_zone & cav & (yt > Y_VERTEBRA + 8.0)] = HU_MUSCLE
        phase = ((z - an.zb) / an.rib_period + an.vert_phase) % 1.0
        if phase < 0.2:
            sl[vb] = HU_DISC
        else:
            sl[vb] = HU_VERTEBRA_CORTEX
            sl[vb_in] = HU_VERTEBRA
        sl[post] = HU_POSTERIOR_ELEMENTS
        if 0.35 < phase < 0.75:
            sl[transverse] = HU_POSTERIOR_ELEMENTS
        sl[canal] = HU_CSF
        sl[cord] = HU_CORD
        # scapulae: thin curved plates behind the ribs, widening upward from the inferior angle
        if 0.5 < f < 1.02:
            th_lat = np.radians(56.0 - 44.0 * min((f - 0.5) / 0.45, 1.0) ** 0.7)
            ang = th_c_mirror
            out_d = -d_cav
            plate = (ang > th_lat) & (ang < np.radians(56.0)) & (out_d > 13.0) & (out_d < 15.5)
            border = (ang > th_lat) & (ang < th_lat + np.radians(5.0)) & (out_d > 12.0) & (out_d < 19.0)
            sl[(plate | border) & body & (d_body > fat_t)] = HU_CORTICAL * 0.8
        # sternum: manubrium, body, xiphoid
        if 0.24 < f < 0.88:
            half = 24.0 if f > 0.76 else (15.0 if f > 0.30 else 8.0)
            st = (xt / half) ** 2 + st_y**2 < 1.0
            sl[st] = HU_CORTICAL * 0.8
            sl[(xt / (half - 1.6)) ** 2 + st_y_in**2 < 1.0] = HU_RIB_MARROW
        # lungs
        sd = np.minimum(d_cav, static_sd)
        np.minimum(sd, z - zd, out=sd)
        np.minimum(sd, an.apex_radius(f) - apex_d, out=sd)
        # heart
        if abs(z - an.heart_c[2]) < an.heart_ext[2] + 2:
            a = an.heart_coords(xt[hwin], yt[hwin], z)
            q2 = a[0] ** 2 + a[1] ** 2 + a[2] ** 2
            sw = sl[hwin]
            heart = (q2 < 1.0) & cav[hwin] & (z > zd[hwin])
            chambers = np.zeros_like(heart)
            for (c0, c1, c2), (s0, s1, s2) in HEART_CHAMBERS:
                chambers |= ((a[0] - c0) / s0) ** 2 + ((a[1] - c1) / s1) ** 2 + ((a[2] - c2) / s2) ** 2 < 1.0
            patchy = 0.5 + 0.5 * np.sin(3.0 * np.arctan2(a[1], a[2]) + 2.0 * a[0])
            fat = (q2 > 0.80 + 0.18 * patchy) | ((np.abs(a[0] + 0.3) < 0.05) & (q2 > 0.72))
            sw[heart] = HU_MYOCARDIUM
            sw[heart & chambers & (q2 < 0.8)] = HU_BLOOD
            sw[heart & fat] = HU_MED_FAT
            sdw = sd[hwin]
            np.minimum(sdw, an.heart_sd(a).astype(np.float32) - 3.0, out=sdw)
        lung = sd > 0
        lung_l[k] = lung & left
        lung_r[k] = lung & ~left
        if lung.any():
            sl[lung] = lung_base[lung] + np.float32(cfg.texture_hu) * tex.plane(z)[lung]

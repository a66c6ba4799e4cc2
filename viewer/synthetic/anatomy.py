"""The phantom's anatomy as analytic shapes.

Template in-plane millimetres (scaled by (sx, sy) per seed), z in world millimetres: body and
thoracic cavity outlines, mediastinal band, spine, diaphragm, lung apices, heart, mediastinal
tubes (vessels, oesophagus, airway), ribs and cartilages, and the lungs' signed depth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from viewer.synthetic.geometry import Grid, capsules_sd_points, fourier, polyline_caps, sstep, superellipse_r, unit
from viewer.synthetic.tissues import HU_AIR, HU_MUSCLE, HU_VESSEL

if TYPE_CHECKING:
    from viewer.synthetic.phantom import PhantomConfig

Y_CAVITY = 3.0  # centre of the thoracic cavity outline (template mm)
Y_VERTEBRA = 56.0  # centre of the vertebral bodies
Y_CANAL = 86.0
Y_STERNUM = -88.0
N_BINS = 4096  # angular look-up tables of the radial outlines
# heart chambers (LV, RV, LA, RA): centre and semi-axes in the heart's normalised frame
HEART_CHAMBERS = (
    ((0.15, 0.22, -0.05), (0.5, 0.32, 0.36)),
    ((0.0, -0.42, -0.05), (0.5, 0.2, 0.4)),
    ((-0.6, 0.42, 0.3), (0.28, 0.28, 0.28)),
    ((-0.5, -0.28, -0.2), (0.3, 0.3, 0.3)),
)


class Anatomy:
    """One seed's anatomy: jittered sizes, outlines, heart frame and tube capsules, queried by position."""

    def __init__(self, cfg: PhantomConfig, grid: Grid) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        j = cfg.anatomy_jitter

        def u() -> float:
            return float(rng.uniform(-1.0, 1.0))

        self.sx = 1.0 + j * u()
        self.sy = 1.0 + j * u()
        lz = grid.shape[0] * grid.spacing[0]
        self.H = float(np.clip(0.86 * lz, 150.0, 310.0)) * (1.0 + 0.6 * j * u())
        self.zb = -0.5 * self.H + 0.15 * j * self.H * u()
        self.fat0 = 13.0 * (1.0 + 5.0 * j * u())
        self.dome_r = 0.23 + 0.5 * j * u()
        self.dome_l = self.dome_r - 0.04 + 0.25 * j * u()
        self.heart_scale = 1.0 + j * u()
        self.heart_shift = np.array([4.0 * u(), 3.0 * u()]) * j / 0.04
        self.body_coef = rng.uniform(-1, 1, (3, 2)) * 0.3 * j
        self.cav_coef = rng.uniform(-1, 1, (3, 2)) * 0.2 * j
        self.vert_phase = float(rng.uniform(0, 1))
        self.rib_period = 0.098 * self.H
        self._heart_setup()
        self.tubes = self._tube_table()
        self.tube_caps = {
            k: np.concatenate([self.to_world_caps(c) for c, _ in v]) for k, v in self.tubes.items()
        }
        carve = []
        for name, margin in (("vessels", 2.5), ("airway", 3.0)):
            c = self.tube_caps[name].copy()
            c[:, 6:8] += margin
            carve.append(c)
        self.carve_caps = np.concatenate(carve)

    # -- coordinates ------------------------------------------------------------------------

    def z_of(self, f):
        return self.zb + np.asarray(f) * self.H

    def f_of(self, z):
        return (np.asarray(z) - self.zb) / self.H

    def to_world_caps(self, caps: np.ndarray) -> np.ndarray:
        out = caps.copy()
        out[:, [0, 3]] *= self.sx
        out[:, [1, 4]] *= self.sy
        return out

    def to_world(self, x, y, f) -> tuple[float, float, float]:
        return float(x * self.sx), float(y * self.sy), float(self.z_of(f))

    # -- outlines ---------------------------------------------------------------------------

    def body_r(self, theta, f):
        shrink = sstep(0.8, 1.15, f)
        a = 160.0 * (1.0 - 0.07 * shrink)
        b = 118.0 * (1.0 - 0.05 * shrink)
        return superellipse_r(theta, a, b, 2.1, 3.2) * fourier(theta, self.body_coef)

    def cavity_r(self, theta, f):
        shrink = sstep(0.55, 1.08, f)
        a = 127.0 * (1.0 - 0.40 * shrink)
        b = 84.0 * (1.0 - 0.22 * shrink)
        return superellipse_r(theta, a, b, 2.0, 2.4) * fourier(theta, self.cav_coef)

    def fat_thickness(self, theta):
        return self.fat0 * (1.0 + 0.35 * np.cos(2.0 * theta))

    @staticmethod
    def band_sd(xt, yt):
        """Signed distance (positive outside) of the central mediastinal band."""
        hw = 5.0 + 19.0 * sstep(-60.0, -25.0, yt)
        return np.abs(xt) - hw

    @staticmethod
    def spine_sd(xt, yt):
        """Signed distance (positive outside) of the vertebra and the paravertebral soft tissue."""
        e = np.sqrt((xt / 26.0) ** 2 + ((yt - Y_VERTEBRA) / 22.0) ** 2)
        sd_e = (e - 1.0) * 22.0
        # rounded rectangle |x| < 27, y > 62 (corner radius 10) behind the vertebral body
        qx = np.abs(xt) - 17.0
        qy = (Y_VERTEBRA + 16.0) - yt
        sd_r = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - 10.0
        return np.minimum(sd_e, sd_r)

    def diaphragm_z(self, xt, yt):
        h = self.H
        domes = []
        for side, height in ((-1.0, self.dome_r), (1.0, self.dome_l)):
            rho2 = ((xt - side * 62.0) / 70.0) ** 2 + ((yt - 5.0) / 85.0) ** 2
            domes.append(height * h * np.clip(1.0 - rho2, 0.0, 1.0) ** 0.7)
        central = 0.16 * h * np.clip(1.0 - (xt / 55.0) ** 2 - ((yt + 10.0) / 80.0) ** 2, 0.0, 1.0) ** 0.5
        top = np.maximum(np.maximum(domes[0], domes[1]), central)
        return self.zb + top + 0.08 * h * sstep(0.0, -80.0, yt)

    def apex_radius(self, f):
        """Radius of the lung apex dome at height f (mm; <= 0 above the apex)."""
        depth = np.clip((1.0 - np.asarray(f, dtype=np.float64)) * self.H, 0.0, 400.0)
        return np.where(depth > 0, np.sqrt(40.0 * depth) + 0.35 * depth, -1.0)

    @staticmethod
    def apex_dist(xt, yt):
        return np.hypot(np.abs(xt) - 48.0, yt - 12.0)

    # -- heart ------------------------------------------------------------------------------

    def _heart_setup(self) -> None:
        s = self.heart_scale
        u1 = unit(np.array([0.78, -0.45, -0.43]))
        u2 = unit(np.cross([0.0, 0.0, 1.0], u1))
        u3 = np.cross(u1, u2)
        self.heart_semi = np.array([60.0, 46.0, 42.0]) * s
        self.heart_axes = np.stack([u1, u2, u3])
        self.heart_m = self.heart_axes / self.heart_semi[:, None]  # template (x, y, z) -> normalised
        zc = self.zb + 0.165 * self.H + 46.0 * s
        self.heart_c = np.array([16.0 + self.heart_shift[0], -26.0 + self.heart_shift[1], zc])
        self.heart_ext = np.sqrt(((self.heart_axes * self.heart_semi[:, None]) ** 2).sum(0))  # half extents

    def heart_coords(self, xt, yt, z):
        """Coordinates in the heart's frame, normalised by its semi-axes (inside: sum of squares < 1)."""
        d = (np.asarray(xt) - self.heart_c[0], np.asarray(yt) - self.heart_c[1],
             np.asarray(z) - self.heart_c[2])
        m = self.heart_m
        return [m[i, 0] * d[0] + m[i, 1] * d[1] + m[i, 2] * d[2] for i in range(3)]

    def heart_sd(self, a) -> np.ndarray:
        return (np.sqrt(a[0] ** 2 + a[1] ** 2 + a[2] ** 2) - 1.0) * 42.0 * self.heart_scale

    # -- tubes ------------------------------------------------------------------------------

    def _tube_table(self) -> dict[str, list[tuple[np.ndarray, float]]]:
        """Template capsules (x, y, z) of the mediastinal tubes, by rendering group."""
        z = self.z_of
        top, bottom = 1.8, -0.8
        lh = self.heart_axes.T @ (np.array([-0.6, 0.45, 0.35]) * self.heart_semi)  # left atrium offset
        la = (self.heart_c[0] + lh[0], self.heart_c[1] + lh[1], float(self.f_of(self.heart_c[2] + lh[2])))

        def line(pts, r):
            return polyline_caps([(x, y, z(f)) for x, y, f in pts], r)

        vessels = [
            # ascending aorta, arch and descending aorta
            (line([(-6, -26, 0.50), (-10, -26, 0.62), (-14, -22, 0.72), (-4, -26, 0.77), (16, -16, 0.79),
                   (28, 2, 0.78), (28, 20, 0.765), (26, 30, 0.74)], [14, 14.5, 14.5, 13.5, 13, 12.5, 12, 12]),
             HU_VESSEL),
            (line([(26, 30, 0.74), (25, 32, 0.40), (20, 32, 0.05), (8, 32, bottom)], 12.0), HU_VESSEL),
            # arch branches: brachiocephalic, left common carotid, left subclavian
            (line([(-6, -22, 0.78), (-16, -16, 0.90), (-24, -10, top)], 6.0), HU_VESSEL),
            (line([(8, -18, 0.80), (12, -12, 0.92), (14, -8, top)], 4.5), HU_VESSEL),
            (line([(22, -6, 0.80), (30, 2, 0.92), (48, 4, top)], 5.0), HU_VESSEL),
            # superior vena cava and brachiocephalic veins
            (line([(-36, -22, top), (-36, -22, 0.78), (-34, -16, 0.55), (-28, -8, 0.48)], 9.0), HU_VESSEL),
            (line([(44, -44, 0.90), (10, -38, 0.84), (-34, -26, 0.79)], 6.0), HU_VESSEL),
            # pulmonary trunk and arteries
            (line([(14, -46, 0.50), (16, -30, 0.57), (18, -14, 0.615)], [13, 13.5, 13]), HU_VESSEL),
            (line([(18, -14, 0.615), (0, 0, 0.59), (-36, 0, 0.572), (-56, 4, 0.55)], [10, 9.5, 9, 8]),
             HU_VESSEL),
            (line([(18, -14, 0.615), (36, -2, 0.625), (52, 10, 0.605), (58, 14, 0.59)], [10, 9.5, 8.5, 8]),
             HU_VESSEL),
            # pulmonary veins into the left atrium
            (line([la, (-48, -6, 0.50)], [9, 6.5]), HU_VESSEL),
            (line([la, (-46, 18, 0.42)], [9, 6.5]), HU_VESSEL),
            (line([la, (46, -4, 0.52)], [9, 6.5]), HU_VESSEL),
            (line([la, (44, 20, 0.43)], [9, 6.5]), HU_VESSEL),
            # inferior vena cava and oesophagus
            (line([(-30, 0, 0.40), (-24, 8, 0.10), (-20, 12, bottom)], 11.0), HU_VESSEL),
            (line([(5, 30, top), (5, 30, 0.6), (10, 28, 0.2), (30, 10, -0.1)], 6.5), HU_MUSCLE),
        ]
        airway = [
            (line([(0, 4, top), (0, 6, 0.80), (0, 14, 0.63)], 9.0), HU_AIR),
            (line([(0, 14, 0.63), (-24, 18, 0.58), (-36, 22, 0.535)], [7.0, 6.5, 6.0]), HU_AIR),
            (line([(-24, 18, 0.58), (-42, 16, 0.595)], [5.5, 5.0]), HU_AIR),
            (line([(0, 14, 0.63), (44, 22, 0.555)], [6.5, 6.0]), HU_AIR),
        ]
        return {"vessels": vessels, "airway": airway}

    def hilum_roots(self) -> dict[str, list[tuple[np.ndarray, np.ndarray, float]]]:
        """Roots (world point, direction, radius) of the pulmonary vessel trees of each lung."""
        def root(x, y, f, d, r):
            return np.array(self.to_world(x, y, f)), unit(np.array(d, dtype=np.float64)), r

        # (hilar point, direction, radius) for the right lung; the left lung mirrors it (x -> -x)
        table = [
            ((-56, 4, 0.55), (-0.25, 0.1, 1.0), 3.6),  # apical upper lobe artery
            ((-56, 4, 0.55), (-0.5, 0.6, 0.6), 3.4),  # posterior upper lobe
            ((-56, 4, 0.55), (-0.5, -0.6, 0.5), 3.4),  # anterior upper lobe
            ((-56, 4, 0.55), (-0.55, -0.7, -0.35), 3.6),  # middle lobe / lingula
            ((-56, 4, 0.55), (-0.4, 0.85, 0.0), 3.4),  # superior segment of the lower lobe
            ((-56, 4, 0.55), (-0.35, 0.45, -0.85), 4.4),  # posterior basal
            ((-56, 4, 0.55), (-0.6, -0.1, -0.8), 3.6),  # anterolateral basal
            ((-48, -6, 0.50), (-0.55, -0.35, 0.5), 4.0),  # superior pulmonary vein
            ((-46, 18, 0.42), (-0.5, 0.4, -0.6), 4.2),  # inferior pulmonary vein
            ((-46, 18, 0.42), (-0.7, 0.2, 0.1), 3.4),
        ]
        right = [root(x, y, f, dv, r) for (x, y, f), dv, r in table]
        left_pts = {(-56, 4, 0.55): (58, 14, 0.59), (-48, -6, 0.50): (46, -4, 0.52),
                    (-46, 18, 0.42): (44, 20, 0.43)}
        left = [root(*left_pts[pt], (-dv[0], dv[1], dv[2]), r * 0.96) for pt, dv, r in table]
        return {"left": left, "right": right}

    def rib_caps(self) -> tuple[np.ndarray, np.ndarray]:
        """World capsules of the ribs and clavicles (bone) and of the costal cartilages."""
        bone, cart = [], []
        h = self.H
        for side in (1.0, -1.0):
            for i in range(12):
                z_post = self.z_of(1.03) - i * self.rib_period
                drop = h * (0.36 + 0.01 * i)
                th_p = np.radians(62.0)
                th_a = np.radians([-62, -62, -62, -62, -60, -56, -52, -40, -28, -15, 5, 25][i])
                th = np.linspace(th_p, th_a, 30)
                s = (th_p - th) / (th_p - th_a)
                zz = z_post - drop * s**1.25
                r = self.cavity_r(th, self.f_of(zz)) + 1.5 + 4.3
                x = r * np.cos(th)
                y = Y_CAVITY + r * np.sin(th)
                pts = [(21.0, Y_VERTEBRA + 10, z_post + 5.0), (32.0, Y_CANAL - 2.0, z_post + 2.0)]
                pts += list(zip(x, y, zz))
                pts = [(side * px, py, pz) for px, py, pz in pts]
                bone.append(polyline_caps(pts, 4.3))
                if i < 7:
                    f_end = float(self.f_of(zz[-1]))
                    half = 24.0 if f_end > 0.76 else 15.0
                    z_st = zz[-1] + (0.015 * h * (i - 2) if i > 2 else 0.0)
                    thm = 0.5 * (th_a + np.radians(-90.0))
                    rm = float(self.cavity_r(thm, f_end)) + 6.0
                    mid = (side * rm * np.cos(thm), Y_CAVITY + rm * np.sin(thm), 0.5 * (zz[-1] + z_st))
                    cart.append(polyline_caps([pts[-1], mid, (side * (half - 2.0), Y_STERNUM, z_st)], 4.0))
            clav = [(side * 20, -100, self.z_of(0.90)), (side * 70, -92, self.z_of(0.93)),
                    (side * 120, -70, self.z_of(0.96)), (side * 148, -46, self.z_of(0.98))]
            bone.append(polyline_caps(clav, 6.5))
        return self.to_world_caps(np.concatenate(bone)), self.to_world_caps(np.concatenate(cart))

    # -- the lungs, analytically --------------------------------------------------------------

    def lung_sd_points(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Approximate signed depth (mm, > 0 inside) in the lungs of world points (N, 3); side +1 = left."""
        xt, yt, z = p[:, 0] / self.sx, p[:, 1] / self.sy, p[:, 2]
        f = self.f_of(z)
        th = np.arctan2(yt - Y_CAVITY, xt)
        sd = self.cavity_r(th, f) - np.hypot(xt, yt - Y_CAVITY)
        sd = np.minimum(sd, self.band_sd(xt, yt))
        sd = np.minimum(sd, self.spine_sd(xt, yt))
        sd = np.minimum(sd, z - self.diaphragm_z(xt, yt))
        sd = np.minimum(sd, self.apex_radius(f) - self.apex_dist(xt, yt))
        sd = np.minimum(sd, self.heart_sd(self.heart_coords(xt, yt, z)) - 3.0)
        sd = np.minimum(sd, capsules_sd_points(p, self.carve_caps))
        return sd, np.where(xt > 0, 1, -1)

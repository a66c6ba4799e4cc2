"""A deterministic synthetic chest-CT phantom with ground-truth masks.

The test suite and the demo study use it instead of patient data. Everything is
defined in millimetres in patient LPS space (x = patient left, y = posterior,
z = superior), so one seed gives the same anatomy at any spacing; only the
sampling differs. In-plane the field of view is centred on x = y = 0 and the
slices are centred on z = 0; the thorax is scaled along z to the covered range
(lungs from the costophrenic recesses to the apices, with a margin).

Anatomy: body outline with skin, subcutaneous fat and muscle; ribs with costal
cartilage, clavicles, sternum, spine (vertebral bodies, discs, canal, posterior
elements); heart with chambers and epicardial fat; aorta, arch branches, SVC,
pulmonary trunk and arteries, pulmonary veins, oesophagus; trachea and main
bronchi; both lungs (domed diaphragm, cardiac notch, gravity gradient and a mild
texture) with recursive pulmonary vessel trees (partial-volume rendered); liver,
spleen and stomach below the diaphragm. Optional lesions: peripheral subpleural
ground-glass opacities and consolidations (COVID-like) and solid nodules.

Pure numpy/scipy; the heavy work is done slice by slice or in small bounding
boxes, so a 300 x 512 x 512 volume takes seconds and about 1 GB of memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from viewer.core.volume import AXIAL_DIRECTION, SeriesMetadata, Volume

LABELS: dict[str, int] = {"lung_left": 1, "lung_right": 2, "ggo": 3, "consolidation": 4, "other_lesion": 5}
MASK_NAMES: tuple[str, ...] = (
    "lung_left", "lung_right", "ggo", "consolidation", "other_lesion", "airway", "body"
)
LESION_KINDS: tuple[str, ...] = ("ggo", "consolidation", "nodule")
_MASK_OF_KIND = {"ggo": "ggo", "consolidation": "consolidation", "nodule": "other_lesion"}

# Hounsfield units of the tissues (before noise).
HU_AIR = -1000.0
HU_FAT = -100.0
HU_MED_FAT = -92.0
HU_SKIN = 20.0
HU_MUSCLE = 45.0
HU_BLOOD = 36.0
HU_MYOCARDIUM = 52.0
HU_VESSEL = 40.0
HU_AIRWAY_WALL = 30.0
HU_LIVER = 58.0
HU_SPLEEN = 48.0
HU_STOMACH = 28.0
HU_CORTICAL = 850.0
HU_RIB_MARROW = 260.0
HU_VERTEBRA_CORTEX = 700.0
HU_VERTEBRA = 300.0
HU_POSTERIOR_ELEMENTS = 500.0
HU_DISC = 85.0
HU_CSF = 12.0
HU_CORD = 32.0
HU_CARTILAGE = 130.0
GGO_HU_RANGE = (-750.0, -300.0)
CONSOLIDATION_HU_RANGE = (-100.0, 50.0)
NODULE_HU_RANGE = (20.0, 60.0)

_Y_CAVITY = 3.0  # centre of the thoracic cavity outline (template mm)
_Y_VERTEBRA = 56.0  # centre of the vertebral bodies
_Y_CANAL = 86.0
_Y_STERNUM = -88.0
_N_BINS = 4096  # angular look-up tables of the radial outlines
# heart chambers (LV, RV, LA, RA): centre and semi-axes in the heart's normalised frame
_HEART_CHAMBERS = (
    ((0.15, 0.22, -0.05), (0.5, 0.32, 0.36)),
    ((0.0, -0.42, -0.05), (0.5, 0.2, 0.4)),
    ((-0.6, 0.42, 0.3), (0.28, 0.28, 0.28)),
    ((-0.5, -0.28, -0.2), (0.3, 0.3, 0.3)),
)


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; equal configs give bit-identical phantoms."""

    shape: tuple[int, int, int] = (96, 192, 192)  # (z, y, x) voxels
    spacing: tuple[float, float, float] = (3.0, 1.8, 1.8)  # (z, y, x) mm
    n_ggo: int = 2  # COVID-like ground-glass opacities
    n_consolidation: int = 1  # COVID-like consolidations
    n_nodules: int = 0  # non-COVID finding: solid round nodules (label other_lesion)
    noise_sd: float = 12.0  # Gaussian noise in HU
    seed: int = 0
    anatomy_jitter: float = 0.04  # relative size variation of the anatomy between seeds
    vessel_min_radius_mm: float = 0.6  # pulmonary vessel trees stop branching below this radius
    texture_hu: float = 14.0  # amplitude of the smooth lung parenchyma texture

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        if len(shape) != 3 or min(shape) < 4:
            raise ValueError(f"shape must be three sizes >= 4, got {self.shape}")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        if min(self.n_ggo, self.n_consolidation, self.n_nodules) < 0:
            raise ValueError("lesion counts must be >= 0")
        if self.noise_sd < 0 or self.seed < 0 or self.vessel_min_radius_mm <= 0 or self.anatomy_jitter < 0:
            raise ValueError("noise_sd, seed and anatomy_jitter must be >= 0 and vessel_min_radius_mm > 0")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)


@dataclass(frozen=True)
class Lesion:
    """One placed lesion; `bbox` and `volume_ml` describe its voxels in the final masks."""

    kind: str  # "ggo" | "consolidation" | "nodule"
    center_lps: tuple[float, float, float]  # centroid of its voxels, LPS mm
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (z0,z1),(y0,y1),(x0,x1), half-open
    side: str  # "left" | "right"
    volume_ml: float


@dataclass
class Phantom:
    """The CT, its ground-truth masks and the lesion list."""

    volume: Volume  # int16 HU
    masks: dict[str, np.ndarray]  # bool, same shape as the volume; keys MASK_NAMES
    lesions: list[Lesion]
    config: PhantomConfig

    def label_map(self) -> np.ndarray:
        """uint8 labels (see LABELS); lesion labels override the lung labels."""
        lab = np.zeros(self.volume.shape, np.uint8)
        for name in ("lung_left", "lung_right", "ggo", "consolidation", "other_lesion"):
            lab[self.masks[name]] = LABELS[name]
        return lab

    def write_masks_nifti(self, out_dir: str | Path) -> dict[str, Path]:
        """Write each mask and the label map ("labels") as .nii.gz on the CT geometry."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {name: self.masks[name].astype(np.uint8) for name in MASK_NAMES}
        arrays["labels"] = self.label_map()
        paths: dict[str, Path] = {}
        for name, arr in arrays.items():
            path = out / f"{name}.nii.gz"
            sitk.WriteImage(self.volume.with_array(arr).to_sitk(), str(path), True)
            paths[name] = path
        return paths


# ----------------------------------------------------------------------------------------------
# small helpers


def _sstep(e0: float, e1: float, x):
    """Smoothstep from 0 at e0 to 1 at e1 (e1 < e0 gives a decreasing step)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _superellipse_r(theta, a, b, p_ant: float, p_post: float):
    """Polar radius of a superellipse, blunter posteriorly (sin(theta) > 0 is posterior)."""
    c = np.abs(np.cos(theta)) / a
    s = np.abs(np.sin(theta)) / b
    p = np.where(np.sin(theta) > 0, p_post, p_ant)
    return (c**p + s**p) ** (-1.0 / p)


def _fourier(theta, coef: np.ndarray):
    """1 + small low-order harmonics (k = 2, 3, ...)."""
    out = np.ones_like(np.asarray(theta, dtype=np.float64))
    for k, (a, b) in enumerate(coef, start=2):
        out = out + a * np.cos(k * theta) + b * np.sin(k * theta)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _uid(*parts: object) -> str:
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return "2.25." + str(int(digest[:30], 16))


@dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # (z, y, x)
    origin: tuple[float, float, float]  # LPS (x, y, z) of voxel [0, 0, 0]

    @property
    def zs(self) -> np.ndarray:
        return self.origin[2] + np.arange(self.shape[0]) * self.spacing[0]

    @property
    def ys(self) -> np.ndarray:
        return self.origin[1] + np.arange(self.shape[1]) * self.spacing[1]

    @property
    def xs(self) -> np.ndarray:
        return self.origin[0] + np.arange(self.shape[2]) * self.spacing[2]

    def index_range(self, axis: int, lo_mm: float, hi_mm: float) -> tuple[int, int]:
        """Half-open index range of the voxels of `axis` (0=z, 1=y, 2=x) whose centres may lie in [lo, hi]."""
        o = self.origin[2 - axis]
        s = self.spacing[axis]
        i0 = int(np.floor((lo_mm - o) / s))
        i1 = int(np.ceil((hi_mm - o) / s)) + 1
        return max(i0, 0), min(i1, self.shape[axis])


def _capsules_sd_points(p: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Min over capsules of (distance to axis - radius) for points (N, 3); caps (C, 8)."""
    if len(caps) == 0:
        return np.full(len(p), np.inf)
    d = caps[:, 3:6] - caps[:, 0:3]
    dd = np.maximum((d * d).sum(1), 1e-9)
    w = [p[:, i, None] - caps[None, :, i] for i in range(3)]  # (N, C) per axis
    t = np.clip((w[0] * d[:, 0] + w[1] * d[:, 1] + w[2] * d[:, 2]) / dd, 0.0, 1.0)
    dist2 = (w[0] - t * d[:, 0]) ** 2 + (w[1] - t * d[:, 1]) ** 2 + (w[2] - t * d[:, 2]) ** 2
    return (np.sqrt(dist2) - (caps[:, 6] + t * (caps[:, 7] - caps[:, 6]))).min(axis=1)


def _polyline_caps(points: list[tuple[float, float, float]], radii, grow: float = 0.0) -> np.ndarray:
    """Capsules (x0,y0,z0,x1,y1,z1,r0,r1) along a polyline; radii is one value or one per point."""
    pts = np.asarray(points, dtype=np.float64)
    r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),)) + grow
    return np.concatenate([pts[:-1], pts[1:], r[:-1, None], r[1:, None]], axis=1)


# ----------------------------------------------------------------------------------------------
# rasterising unions of capsules into a uint8 scratch volume


def _splat_capsules(scratch: np.ndarray, caps: np.ndarray, grid: _Grid, lo: float, hi: float,
                    max_elems: int = 1 << 21) -> tuple[slice, slice, slice] | None:
    """Store max over capsules of the signed depth (radius - distance), clipped to [-lo, hi] mm.

    The depth is encoded in uint8 as 1..255 (0 = farther than `lo` outside every capsule).
    Returns the bounding box of what was written (or None).
    """
    if len(caps) == 0:
        return None
    nz, ny, nx = grid.shape
    sp = np.asarray(grid.spacing)
    org = np.array([grid.origin[2], grid.origin[1], grid.origin[0]])
    p0 = caps[:, [2, 1, 0]]  # (z, y, x) order from here on
    p1 = caps[:, [5, 4, 3]]
    rmax = np.maximum(caps[:, 6], caps[:, 7]) + lo
    lo_i = np.floor((np.minimum(p0, p1) - rmax[:, None] - org) / sp).astype(np.int64)
    hi_i = np.ceil((np.maximum(p0, p1) + rmax[:, None] - org) / sp).astype(np.int64) + 1
    lo_i = np.maximum(lo_i, 0)
    hi_i = np.minimum(hi_i, np.array([nz, ny, nx]))
    keep = np.all(hi_i > lo_i, axis=1)
    if not keep.any():
        return None
    p0, p1, lo_i, hi_i = p0[keep], p1[keep], lo_i[keep], hi_i[keep]
    r0, r1 = caps[keep, 6], caps[keep, 7]
    dims = hi_i - lo_i
    order = np.argsort(np.prod(dims, axis=1), kind="stable")
    scale = 254.0 / (lo + hi)
    flat = scratch.reshape(-1)
    start = 0
    n = len(order)
    while start < n:
        stop = start + 1
        kmax = dims[order[start]].copy()
        while stop < n:
            cand = np.maximum(kmax, dims[order[stop]])
            if (stop - start + 1) * int(np.prod(cand)) > max_elems:
                break
            kmax = cand
            stop += 1
        idx = order[start:stop]
        s = len(idx)
        axes = []
        for ax in range(3):
            k = lo_i[idx, ax][:, None] + np.arange(kmax[ax])[None, :]
            valid = k < hi_i[idx, ax][:, None]
            k = np.minimum(k, [nz, ny, nx][ax] - 1)
            w = (org[ax] + k * sp[ax] - p0[idx, ax][:, None]).astype(np.float32)
            shape = [s, 1, 1, 1]
            shape[ax + 1] = int(kmax[ax])
            axes.append((k.reshape(shape), valid.reshape(shape), w.reshape(shape)))
        d = (p1[idx] - p0[idx]).astype(np.float32)
        dd = np.maximum((d * d).sum(1), 1e-9)
        dz, dy, dx = (d[:, i].reshape(s, 1, 1, 1) for i in range(3))
        wz, wy, wx = axes[0][2], axes[1][2], axes[2][2]
        t = np.clip((wz * dz + wy * dy + wx * dx) / dd.reshape(s, 1, 1, 1), 0.0, 1.0)
        dist = np.sqrt((wz - t * dz) ** 2 + (wy - t * dy) ** 2 + (wx - t * dx) ** 2)
        ra = r0[idx].astype(np.float32).reshape(s, 1, 1, 1)
        rb = r1[idx].astype(np.float32).reshape(s, 1, 1, 1)
        depth = ra + t * (rb - ra) - dist
        q = np.clip(np.rint((depth + lo) * scale) + 1.0, 0, 255).astype(np.uint8)
        if s == 1:
            z0, y0, x0 = lo_i[idx[0]]
            z1, y1, x1 = hi_i[idx[0]]
            region = scratch[z0:z1, y0:y1, x0:x1]
            np.maximum(region, q[0, : z1 - z0, : y1 - y0, : x1 - x0], out=region)
        else:
            valid = axes[0][1] & axes[1][1] & axes[2][1] & (q > 0)
            lin = (axes[0][0] * ny + axes[1][0]) * nx + axes[2][0]
            lin = np.broadcast_to(lin, q.shape)[valid]
            np.maximum.at(flat, lin, q[valid])
        start = stop
    z0, y0, x0 = lo_i.min(axis=0)
    z1, y1, x1 = hi_i.max(axis=0)
    return slice(int(z0), int(z1)), slice(int(y0), int(y1)), slice(int(x0), int(x1))


def _decode(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (q.astype(np.float32) - 1.0) * np.float32((lo + hi) / 254.0) - np.float32(lo)


# ----------------------------------------------------------------------------------------------
# the anatomy (template in-plane millimetres, scaled by (sx, sy); z in world millimetres)


class _Anatomy:
    def __init__(self, cfg: PhantomConfig, grid: _Grid) -> None:
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
        shrink = _sstep(0.8, 1.15, f)
        a = 160.0 * (1.0 - 0.07 * shrink)
        b = 118.0 * (1.0 - 0.05 * shrink)
        return _superellipse_r(theta, a, b, 2.1, 3.2) * _fourier(theta, self.body_coef)

    def cavity_r(self, theta, f):
        shrink = _sstep(0.55, 1.08, f)
        a = 127.0 * (1.0 - 0.40 * shrink)
        b = 84.0 * (1.0 - 0.22 * shrink)
        return _superellipse_r(theta, a, b, 2.0, 2.4) * _fourier(theta, self.cav_coef)

    def fat_thickness(self, theta):
        return self.fat0 * (1.0 + 0.35 * np.cos(2.0 * theta))

    @staticmethod
    def band_sd(xt, yt):
        """Signed distance (positive outside) of the central mediastinal band."""
        hw = 5.0 + 19.0 * _sstep(-60.0, -25.0, yt)
        return np.abs(xt) - hw

    @staticmethod
    def spine_sd(xt, yt):
        """Signed distance (positive outside) of the vertebra and the paravertebral soft tissue."""
        e = np.sqrt((xt / 26.0) ** 2 + ((yt - _Y_VERTEBRA) / 22.0) ** 2)
        sd_e = (e - 1.0) * 22.0
        # rounded rectangle |x| < 27, y > 62 (corner radius 10) behind the vertebral body
        qx = np.abs(xt) - 17.0
        qy = (_Y_VERTEBRA + 16.0) - yt
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
        return self.zb + top + 0.08 * h * _sstep(0.0, -80.0, yt)

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
        u1 = _unit(np.array([0.78, -0.45, -0.43]))
        u2 = _unit(np.cross([0.0, 0.0, 1.0], u1))
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
            return _polyline_caps([(x, y, z(f)) for x, y, f in pts], r)

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
            return np.array(self.to_world(x, y, f)), _unit(np.array(d, dtype=np.float64)), r

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
                y = _Y_CAVITY + r * np.sin(th)
                pts = [(21.0, _Y_VERTEBRA + 10, z_post + 5.0), (32.0, _Y_CANAL - 2.0, z_post + 2.0)]
                pts += list(zip(x, y, zz))
                pts = [(side * px, py, pz) for px, py, pz in pts]
                bone.append(_polyline_caps(pts, 4.3))
                if i < 7:
                    f_end = float(self.f_of(zz[-1]))
                    half = 24.0 if f_end > 0.76 else 15.0
                    z_st = zz[-1] + (0.015 * h * (i - 2) if i > 2 else 0.0)
                    thm = 0.5 * (th_a + np.radians(-90.0))
                    rm = float(self.cavity_r(thm, f_end)) + 6.0
                    mid = (side * rm * np.cos(thm), _Y_CAVITY + rm * np.sin(thm), 0.5 * (zz[-1] + z_st))
                    cart.append(_polyline_caps([pts[-1], mid, (side * (half - 2.0), _Y_STERNUM, z_st)], 4.0))
            clav = [(side * 20, -100, self.z_of(0.90)), (side * 70, -92, self.z_of(0.93)),
                    (side * 120, -70, self.z_of(0.96)), (side * 148, -46, self.z_of(0.98))]
            bone.append(_polyline_caps(clav, 6.5))
        return self.to_world_caps(np.concatenate(bone)), self.to_world_caps(np.concatenate(cart))

    # -- the lungs, analytically --------------------------------------------------------------

    def lung_sd_points(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Approximate signed depth (mm, > 0 inside) in the lungs of world points (N, 3); side +1 = left."""
        xt, yt, z = p[:, 0] / self.sx, p[:, 1] / self.sy, p[:, 2]
        f = self.f_of(z)
        th = np.arctan2(yt - _Y_CAVITY, xt)
        sd = self.cavity_r(th, f) - np.hypot(xt, yt - _Y_CAVITY)
        sd = np.minimum(sd, self.band_sd(xt, yt))
        sd = np.minimum(sd, self.spine_sd(xt, yt))
        sd = np.minimum(sd, z - self.diaphragm_z(xt, yt))
        sd = np.minimum(sd, self.apex_radius(f) - self.apex_dist(xt, yt))
        sd = np.minimum(sd, self.heart_sd(self.heart_coords(xt, yt, z)) - 3.0)
        sd = np.minimum(sd, _capsules_sd_points(p, self.carve_caps))
        return sd, np.where(xt > 0, 1, -1)


# ----------------------------------------------------------------------------------------------
# vessel trees


class _Occupancy:
    """Coarse counts of vessel points (8 mm cells) that steer new branches toward empty lung."""

    def __init__(self, cell: float = 8.0) -> None:
        self.cell = cell
        self.lo = np.array([-220.0, -220.0, -400.0])
        self.n = np.ceil(-2 * self.lo / cell).astype(int)
        self.grid = np.zeros(tuple(self.n), np.float32)

    def _index(self, p: np.ndarray) -> tuple[np.ndarray, ...]:
        i = np.clip(((p - self.lo) / self.cell).astype(int), 0, self.n - 1)
        return i[..., 0], i[..., 1], i[..., 2]

    def at(self, p: np.ndarray) -> np.ndarray:
        return self.grid[self._index(p)]

    def add(self, p: np.ndarray, w: float = 1.0) -> None:
        np.add.at(self.grid, self._index(p), np.float32(w))


def _grow_trees(an: _Anatomy, rng: np.random.Generator, r_min: float, max_segments: int = 8000,
                n_candidates: int = 6) -> np.ndarray:
    """Recursive pulmonary vessel trees from the hilar roots; world capsules (N, 8).

    Each branch bifurcates by Murray's law (r^3 = r1^3 + r2^3) into a major and a minor child; every
    child direction is the best of a few random candidates that stay inside the lung (by the analytic
    lung depth) and lead into the least occupied part of it.
    """
    segs: list[np.ndarray] = []
    occ = _Occupancy()
    spread = np.linspace(0.0, 0.9, n_candidates)
    for side, roots in an.hilum_roots().items():
        sign = 1 if side == "left" else -1
        p = np.array([r[0] for r in roots])
        d = np.array([r[1] for r in roots])
        r = np.array([r[2] for r in roots])
        is_root = np.ones(len(p), bool)
        depth = np.full(len(p), 40.0)
        remaining = r * rng.uniform(5.0, 9.0, len(p)) + 1.5
        count = 0
        while len(p) and count < max_segments:
            n = len(p)
            length = np.minimum(remaining, np.maximum(0.6 * depth, 2.0))
            w = rng.normal(size=(n, n_candidates, 3))
            w -= (w * d[:, None]).sum(-1, keepdims=True) * d[:, None]
            cand = _unit(d[:, None] + spread[None, :, None] * _unit(w))  # (n, K, 3)
            lk = length[:, None] * (1.0 - 0.4 * spread[None, :] / spread[-1])
            e = p[:, None] + cand * lk[..., None]
            m = p[:, None] + cand * (0.5 * lk[..., None])
            sd_e, side_e = an.lung_sd_points(e.reshape(-1, 3))
            sd_m, _ = an.lung_sd_points(m.reshape(-1, 3))
            sd_e, side_e, sd_m = sd_e.reshape(n, -1), side_e.reshape(n, -1), sd_m.reshape(n, -1)
            good = (sd_e > 2.5 * r[:, None] + 0.5) & (side_e == sign) & ((sd_m > 0) | is_root[:, None])
            ahead = e + cand * (2.0 * lk[..., None] + 6.0)
            score = occ.at(e) + occ.at(ahead) + 0.3 * spread[None, :] + rng.uniform(0, 0.2, (n, n_candidates))
            score = np.where(good, score, np.inf)
            best = np.argmin(score, axis=1)
            ok = np.isfinite(score[np.arange(n), best])
            if not ok.any():
                break
            rows = np.flatnonzero(ok)
            best = best[ok]
            p, r = p[ok], r[ok]
            dirs = cand[rows, best]
            end = e[rows, best]
            end_depth = sd_e[rows, best]
            remaining = remaining[ok] - lk[rows, best]
            go_on = (remaining > 1.0) & (r < 2.0)  # a small branch shortened near the pleura goes on
            segs.append(np.concatenate([p, end, r[:, None], np.where(go_on, r, 0.97 * r)[:, None]], axis=1))
            occ.add(end)
            occ.add(0.5 * (p + end))
            count += len(p)
            cont = (end[go_on], dirs[go_on], r[go_on], end_depth[go_on], remaining[go_on])
            p, r, dirs, end, end_depth = p[~go_on], r[~go_on], dirs[~go_on], end[~go_on], end_depth[~go_on]
            # bifurcate with a major and a minor child
            n = len(p)
            alpha = rng.uniform(0.78, 0.93, n)
            beta = np.cbrt(1.0 - alpha**3)
            th1 = np.radians(rng.uniform(8.0, 25.0, n))
            th2 = np.radians(rng.uniform(30.0, 65.0, n))
            w = rng.normal(size=(n, 3))
            w = _unit(w - (w * dirs).sum(1, keepdims=True) * dirs)
            c1 = _unit(np.cos(th1)[:, None] * dirs + np.sin(th1)[:, None] * w)
            c2 = _unit(np.cos(th2)[:, None] * dirs - np.sin(th2)[:, None] * w)
            cr = np.concatenate([r * alpha, r * beta])
            keep = cr >= r_min
            p = np.concatenate([cont[0], np.concatenate([end, end])[keep]])
            d = np.concatenate([cont[1], np.concatenate([c1, c2])[keep]])
            r = np.concatenate([cont[2], cr[keep]])
            depth = np.concatenate([cont[3], np.concatenate([end_depth, end_depth])[keep]])
            remaining = np.concatenate([cont[4], cr[keep] * rng.uniform(5.0, 9.0, int(keep.sum())) + 1.5])
            is_root = np.zeros(len(p), bool)
    return np.concatenate(segs) if segs else np.zeros((0, 8))


# ----------------------------------------------------------------------------------------------
# lesions


def _smooth_field(rng: np.random.Generator, n: int = 8, lam: tuple[float, float] = (8.0, 22.0)):
    """Parameters of a smooth random field (unit SD): a sum of random plane waves (mm)."""
    k = _unit(rng.normal(size=(n, 3))) * (2 * np.pi / rng.uniform(lam[0], lam[1], n))[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.0, n)
    return k, phase, amp / np.sqrt((amp**2).sum() / 2.0)


def _eval_field(field, dz, dy, dx) -> np.ndarray:
    k, phase, amp = field
    out = np.zeros(np.broadcast_shapes(dz.shape, dy.shape, dx.shape), np.float32)
    for i in range(len(amp)):
        wave = np.sin(k[i, 0] * dx + k[i, 1] * dy + k[i, 2] * dz + phase[i])
        out += np.float32(amp[i]) * wave.astype(np.float32)
    return out


@dataclass
class _LesionPlan:
    kind: str
    center: np.ndarray  # world (x, y, z)
    semi: np.ndarray  # (x, y, z) semi-axes, mm
    side: int
    shape_field: tuple
    hu_field: tuple
    hu_level: float


def _plan_lesions(an: _Anatomy, cfg: PhantomConfig) -> list[_LesionPlan]:
    rng = np.random.default_rng([cfg.seed, 2])
    plans: list[_LesionPlan] = []
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
        shape_field = _smooth_field(rng)
        hu_field = _smooth_field(rng, lam=(5.0, 14.0))
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
        plans.append(_LesionPlan(kind, center, semi, side, shape_field, hu_field, level))
    return plans


def _stamp_lesions(plans: list[_LesionPlan], grid: _Grid, hu: np.ndarray,
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
        var = _eval_field(pl.hu_field, dz, dy, dx)
        cur = hu[box]
        if pl.kind == "nodule":
            shape = (rho < 1.0) & lung
            val = np.clip(pl.hu_level + 5.0 * var, *NODULE_HU_RANGE)
            sel = shape
        else:
            bumps = np.clip(_eval_field(pl.shape_field, dz, dy, dx), -1.6, 1.6)  # stays inside the box
            f = 1.0 - rho + 0.28 * bumps * np.minimum(rho, 1.0)
            shape = (f > 0) & lung
            if pl.kind == "ggo":
                val = GGO_HU_RANGE[0] + 30.0 + (pl.hu_level - GGO_HU_RANGE[0] - 30.0) * _sstep(0.0, 0.45, f)
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


# ----------------------------------------------------------------------------------------------
# the slice-by-slice base painting


class _Texture:
    """A smooth random field (unit SD) on a coarse 6 mm lattice, interpolated slice by slice."""

    def __init__(self, rng: np.random.Generator, grid: _Grid, g: float = 6.0) -> None:
        half_z = 0.5 * grid.shape[0] * grid.spacing[0] + 2 * g
        self.g = g
        self.z0, self.xy0 = -half_z, -192.0
        nzc = int(np.ceil(2 * half_z / g)) + 2
        nxy = int(np.ceil(384.0 / g)) + 2
        c = ndimage.gaussian_filter(rng.standard_normal((nzc, nxy, nxy)), 1.0, mode="wrap")
        self.c = (c / c.std()).astype(np.float32)
        self.iy, self.wy = self._weights(grid.ys, nxy)
        self.ix, self.wx = self._weights(grid.xs, nxy)

    def _weights(self, coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        u = np.clip((coords - self.xy0) / self.g, 0, n - 1.001)
        i0 = np.floor(u).astype(int)
        return i0, (u - i0).astype(np.float32)

    def plane(self, z: float) -> np.ndarray:
        """The field on slice z (trilinear; elementwise only, so identical on every machine)."""
        u = float(np.clip((z - self.z0) / self.g, 0, self.c.shape[0] - 1.001))
        i0 = int(u)
        w = np.float32(u - i0)
        p = (1 - w) * self.c[i0] + w * self.c[i0 + 1]
        wy = self.wy[:, None]
        rows = (1 - wy) * p[self.iy] + wy * p[self.iy + 1]
        return (1 - self.wx) * rows[:, self.ix] + self.wx * rows[:, self.ix + 1]


def _paint_slices(an: _Anatomy, grid: _Grid, cfg: PhantomConfig, hu: np.ndarray,
                  masks: dict[str, np.ndarray]) -> None:
    nz, ny, nx = grid.shape
    xt = (grid.xs / an.sx)[None, :].repeat(ny, 0)
    yt = (grid.ys / an.sy)[:, None].repeat(nx, 1)
    th_b = np.arctan2(yt, xt)
    rho_b = np.hypot(xt, yt).astype(np.float32)
    th_c = np.arctan2(yt - _Y_CAVITY, xt)
    th_c_mirror = np.arctan2(yt - _Y_CAVITY, np.abs(xt))  # angle as seen on the patient's left
    rho_c = np.hypot(xt, yt - _Y_CAVITY).astype(np.float32)
    bins = -np.pi + (np.arange(_N_BINS) + 0.5) * (2 * np.pi / _N_BINS)
    tb = np.minimum(((th_b + np.pi) / (2 * np.pi) * _N_BINS).astype(np.int32), _N_BINS - 1)
    tc = np.minimum(((th_c + np.pi) / (2 * np.pi) * _N_BINS).astype(np.int32), _N_BINS - 1)
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
    vb_e = (xt / 21.0) ** 2 + ((yt - _Y_VERTEBRA) / 17.0) ** 2
    vb = vb_e < 1.0
    vb_in = (xt / 19.3) ** 2 + ((yt - _Y_VERTEBRA) / 15.3) ** 2 < 1.0
    rc = np.hypot(xt, yt - _Y_CANAL)
    canal = rc < 8.5
    cord = rc < 5.0
    post = ((rc >= 8.5) & (rc < 14.0) & (yt > _Y_CANAL - 10)) | ((np.abs(xt) > 6.5) & (np.abs(xt) < 13.0)
                                                                 & (yt > _Y_VERTEBRA + 10) & (yt < _Y_CANAL))
    post |= (np.abs(xt) < 3.5) & (yt > _Y_CANAL + 10) & (yt < _Y_CANAL + 27)
    transverse = (np.abs(yt - _Y_CANAL) < 4.5) & (np.abs(xt) > 12.0) & (np.abs(xt) < 36.0)
    spine_zone = an.spine_sd(xt, yt) < 0
    # sternum
    st_y = (yt - _Y_STERNUM) / 6.5
    st_y_in = (yt - _Y_STERNUM) / 4.9
    # heart window
    hx = (an.heart_c[0] - an.heart_ext[0] - 2) * an.sx, (an.heart_c[0] + an.heart_ext[0] + 2) * an.sx
    hy = (an.heart_c[1] - an.heart_ext[1] - 2) * an.sy, (an.heart_c[1] + an.heart_ext[1] + 2) * an.sy
    hwin = (slice(*grid.index_range(1, *hy)), slice(*grid.index_range(2, *hx)))
    tex = _Texture(np.random.default_rng([cfg.seed, 3]), grid)
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
        sl[spine_zone & cav & (yt > _Y_VERTEBRA + 8.0)] = HU_MUSCLE
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
            for (c0, c1, c2), (s0, s1, s2) in _HEART_CHAMBERS:
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


# ----------------------------------------------------------------------------------------------
# stamping the tubes, bones and vessel trees


def _apply_by_slice(scratch: np.ndarray, box, lo: float, hi: float, fn) -> None:
    if box is None:
        return
    zs, ys, xs = box
    for k in range(zs.start, zs.stop):
        q = scratch[k, ys, xs]
        if not q.any():
            continue
        fn(k, (k, ys, xs), q > 0, _decode(q, lo, hi))
    scratch[box] = 0


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


def _stamp_structures(an: _Anatomy, grid: _Grid, cfg: PhantomConfig, hu: np.ndarray,
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
        box = _splat_capsules(scratch, an.to_world_caps(caps_t), grid, 3.0, 8.0)

        def vessel(k, idx, touched, depth, value=value):
            carve(idx, touched & (depth > -2.5), HU_MED_FAT)
            inside = touched & (depth > 0) & (hu[idx] < 150.0)
            hu[idx][inside] = value

        _apply_by_slice(scratch, box, 3.0, 8.0, vessel)

    # trachea and main bronchi: lumen (the airway mask) and wall
    box = _splat_capsules(scratch, an.tube_caps["airway"], grid, 3.2, 8.0)

    def air(k, idx, touched, depth):
        carve(idx, touched & (depth > -3.0), HU_MED_FAT)
        wall = touched & (depth > -1.8) & (depth <= 0) & (hu[idx] < 150.0)
        hu[idx][wall] = HU_AIRWAY_WALL
        lumen = touched & (depth > 0) & masks["body"][idx]
        hu[idx][lumen] = HU_AIR
        airway[idx] |= lumen

    _apply_by_slice(scratch, box, 3.2, 8.0, air)

    # ribs, clavicles, costal cartilage
    bone_caps, cart_caps = an.rib_caps()
    for caps, cortical in ((bone_caps, True), (cart_caps, False)):
        box = _splat_capsules(scratch, caps, grid, 2.0, 6.0)

        def bone(k, idx, touched, depth, cortical=cortical):
            inbody = masks["body"][idx]
            carve(idx, touched & (depth > -1.5) & inbody, HU_MUSCLE)
            inside = touched & (depth > 0) & inbody
            if cortical:
                hu[idx][inside] = np.where(depth[inside] < 1.4, HU_CORTICAL, HU_RIB_MARROW)
            else:
                inside &= hu[idx] < 150.0
                hu[idx][inside] = HU_CARTILAGE

        _apply_by_slice(scratch, box, 2.0, 6.0, bone)

    # lung pockets cut off by the tubes and bones are mediastinal fat, not lung
    for lung in (lung_l, lung_r):
        _keep_largest_component(lung, hu, HU_MED_FAT)

    # pulmonary vessel trees, partial-volume blended into the lungs only
    segs = _grow_trees(an, np.random.default_rng([cfg.seed, 1]), cfg.vessel_min_radius_mm)
    h = float(np.prod(grid.spacing)) ** (1.0 / 3.0)
    box = _splat_capsules(scratch, segs, grid, 0.5 * h, 0.5 * h)

    def vessels(k, idx, touched, depth):
        lung = touched & (lung_l[idx] | lung_r[idx])
        cover = np.clip(0.5 + depth[lung] / h, 0.0, 1.0)
        cur = hu[idx][lung]
        hu[idx][lung] = cur + cover * (HU_VESSEL - cur)

    _apply_by_slice(scratch, box, 0.5 * h, 0.5 * h, vessels)


# ----------------------------------------------------------------------------------------------
# public entry point


def make_phantom(config: PhantomConfig | None = None, **overrides) -> Phantom:
    """Generate the phantom for `config` (defaults: PhantomConfig()) with fields overridden by keyword."""
    cfg = config if config is not None else PhantomConfig()
    if overrides:
        cfg = replace(cfg, **overrides)
    nz, ny, nx = cfg.shape
    sz, sy, sx = cfg.spacing
    origin = (-(nx - 1) * sx / 2.0, -(ny - 1) * sy / 2.0, -(nz - 1) * sz / 2.0)
    grid = _Grid(cfg.shape, cfg.spacing, origin)
    an = _Anatomy(cfg, grid)

    hu = np.empty(cfg.shape, np.float32)
    masks = {name: np.zeros(cfg.shape, bool) for name in ("lung_left", "lung_right", "airway", "body")}
    _paint_slices(an, grid, cfg, hu, masks)
    _stamp_structures(an, grid, cfg, hu, masks)
    lesions = _stamp_lesions(_plan_lesions(an, cfg), grid, hu, masks)

    out = np.empty(cfg.shape, np.int16)
    noise_rng = np.random.default_rng([cfg.seed, 4])
    for k in range(nz):
        sl = hu[k]
        if cfg.noise_sd > 0:
            sl = sl + np.float32(cfg.noise_sd) * noise_rng.standard_normal((ny, nx), dtype=np.float32)
        out[k] = np.rint(np.clip(sl, -1024.0, 3071.0))
    del hu

    key = f"lunglens-phantom|{cfg!r}"
    meta = SeriesMetadata(
        patient_name="PHANTOM^LUNGLENS",
        patient_id=f"PHANTOM-{cfg.seed:04d}",
        patient_sex="O",
        study_instance_uid=_uid(key, "study"),
        study_date="20200315",
        study_time="120000",
        study_description="LungLens synthetic chest CT",
        accession_number=f"PH{cfg.seed:06d}",
        series_instance_uid=_uid(key, "series"),
        series_number="1",
        series_description=f"Synthetic chest CT phantom (seed {cfg.seed})",
        modality="CT",
        manufacturer="LungLens",
        manufacturer_model="phantom",
        convolution_kernel="SYNTHETIC",
        kvp="120",
        slice_thickness=f"{sz:g}",
        body_part="CHEST",
        frame_of_reference_uid=_uid(key, "frame"),
    )
    volume = Volume(out, spacing=cfg.spacing, origin=origin, direction=AXIAL_DIRECTION.copy(), metadata=meta,
                    source=f"phantom:seed={cfg.seed}")
    return Phantom(volume=volume, masks={name: masks[name] for name in MASK_NAMES}, lesions=lesions,
                   config=cfg)

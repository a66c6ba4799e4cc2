"""Smooth random fields (lesion shape and density, lung texture) and the scanner noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from viewer.synthetic.geometry import Grid, unit


def smooth_field(rng: np.random.Generator, n: int = 8, lam: tuple[float, float] = (8.0, 22.0)):
    """Parameters of a smooth random field (unit SD): a sum of random plane waves (mm)."""
    k = unit(rng.normal(size=(n, 3))) * (2 * np.pi / rng.uniform(lam[0], lam[1], n))[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.0, n)
    return k, phase, amp / np.sqrt((amp**2).sum() / 2.0)


def eval_field(field, dz, dy, dx) -> np.ndarray:
    k, phase, amp = field
    out = np.zeros(np.broadcast_shapes(dz.shape, dy.shape, dx.shape), np.float32)
    for i in range(len(amp)):
        wave = np.sin(k[i, 0] * dx + k[i, 1] * dy + k[i, 2] * dz + phase[i])
        out += np.float32(amp[i]) * wave.astype(np.float32)
    return out


class Texture:
    """A smooth random field (unit SD) on a coarse 6 mm lattice, interpolated slice by slice."""

    def __init__(self, rng: np.random.Generator, grid: Grid, g: float = 6.0) -> None:
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


def add_noise(hu: np.ndarray, noise_sd: float, seed: int) -> np.ndarray:
    """int16 HU: `hu` plus Gaussian noise of SD `noise_sd`, slice by slice, rounded and clipped."""
    nz, ny, nx = hu.shape
    out = np.empty(hu.shape, np.int16)
    noise_rng = np.random.default_rng([seed, 4])
    for k in range(nz):
        sl = hu[k]
        if noise_sd > 0:
            sl = sl + np.float32(noise_sd) * noise_rng.standard_normal((ny, nx), dtype=np.float32)
        out[k] = np.rint(np.clip(sl, -1024.0, 3071.0))
    return out

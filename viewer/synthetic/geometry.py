"""Geometry helpers of the phantom: its voxel grid, radial outlines and capsule rasterising.

Capsules are rows (x0, y0, z0, x1, y1, z1, r0, r1) in world LPS millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def sstep(e0: float, e1: float, x):
    """Smoothstep from 0 at e0 to 1 at e1 (e1 < e0 gives a decreasing step)."""
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def superellipse_r(theta, a, b, p_ant: float, p_post: float):
    """Polar radius of a superellipse, blunter posteriorly (sin(theta) > 0 is posterior)."""
    c = np.abs(np.cos(theta)) / a
    s = np.abs(np.sin(theta)) / b
    p = np.where(np.sin(theta) > 0, p_post, p_ant)
    return (c**p + s**p) ** (-1.0 / p)


def fourier(theta, coef: np.ndarray):
    """1 + small low-order harmonics (k = 2, 3, ...)."""
    out = np.ones_like(np.asarray(theta, dtype=np.float64))
    for k, (a, b) in enumerate(coef, start=2):
        out = out + a * np.cos(k * theta) + b * np.sin(k * theta)
    return out


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


@dataclass(frozen=True)
class Grid:
    """The phantom's voxel grid: shape and spacing (z, y, x), origin in LPS (x, y, z) mm."""

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


def capsules_sd_points(p: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """Min over capsules of (distance to axis - radius) for points (N, 3); caps (C, 8)."""
    if len(caps) == 0:
        return np.full(len(p), np.inf)
    d = caps[:, 3:6] - caps[:, 0:3]
    dd = np.maximum((d * d).sum(1), 1e-9)
    w = [p[:, i, None] - caps[None, :, i] for i in range(3)]  # (N, C) per axis
    t = np.clip((w[0] * d[:, 0] + w[1] * d[:, 1] + w[2] * d[:, 2]) / dd, 0.0, 1.0)
    dist2 = (w[0] - t * d[:, 0]) ** 2 + (w[1] - t * d[:, 1]) ** 2 + (w[2] - t * d[:, 2]) ** 2
    return (np.sqrt(dist2) - (caps[:, 6] + t * (caps[:, 7] - caps[:, 6]))).min(axis=1)


def polyline_caps(points: Sequence[tuple[float, float, float]], radii, grow: float = 0.0) -> np.ndarray:
    """Capsules (x0,y0,z0,x1,y1,z1,r0,r1) along a polyline; radii is one value or one per point."""
    pts = np.asarray(points, dtype=np.float64)
    r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),)) + grow
    return np.concatenate([pts[:-1], pts[1:], r[:-1, None], r[1:, None]], axis=1)


def splat_capsules(scratch: np.ndarray, caps: np.ndarray, grid: Grid, lo: float, hi: float,
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


def decode(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The signed depth (mm) of `splat_capsules`' uint8 codes."""
    return (q.astype(np.float32) - 1.0) * np.float32((lo + hi) / 254.0) - np.float32(lo)


def apply_by_slice(scratch: np.ndarray, box, lo: float, hi: float, fn) -> None:
    """Call fn(k, index, touched, depth) on each slice k of `box` that `splat_capsules` wrote, then clear it."""
    if box is None:
        return
    zs, ys, xs = box
    for k in range(zs.start, zs.stop):
        q = scratch[k, ys, xs]
        if not q.any():
            continue
        fn(k, (k, ys, xs), q > 0, decode(q, lo, hi))
    scratch[box] = 0

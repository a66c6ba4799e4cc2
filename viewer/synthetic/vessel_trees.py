"""Recursive pulmonary vessel trees grown inside the analytic lungs."""

from __future__ import annotations

import numpy as np

from viewer.synthetic.anatomy import Anatomy
from viewer.synthetic.geometry import unit


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


def grow_trees(an: Anatomy, rng: np.random.Generator, r_min: float, max_segments: int = 8000,
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
            cand = unit(d[:, None] + spread[None, :, None] * unit(w))  # (n, K, 3)
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
            w = unit(w - (w * dirs).sum(1, keepdims=True) * dirs)
            c1 = unit(np.cos(th1)[:, None] * dirs + np.sin(th1)[:, None] * w)
            c2 = unit(np.cos(th2)[:, None] * dirs - np.sin(th2)[:, None] * w)
            cr = np.concatenate([r * alpha, r * beta])
            keep = cr >= r_min
            p = np.concatenate([cont[0], np.concatenate([end, end])[keep]])
            d = np.concatenate([cont[1], np.concatenate([c1, c2])[keep]])
            r = np.concatenate([cont[2], cr[keep]])
            depth = np.concatenate([cont[3], np.concatenate([end_depth, end_depth])[keep]])
            remaining = np.concatenate([cont[4], cr[keep] * rng.uniform(5.0, 9.0, int(keep.sum())) + 1.5])
            is_root = np.zeros(len(p), bool)
    return np.concatenate(segs) if segs else np.zeros((0, 8))

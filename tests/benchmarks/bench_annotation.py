"""Benchmark: the annotation model on a full-size CT (model side only, no drawing).

    python -m tests.benchmarks.bench_annotation [--shape 600 512 512] [--repeat 50] [--json OUT]

Builds a phantom-like int16 volume (a small phantom tiled to the size) with a ~100,000-voxel
ground-glass ball, then times a brush dab (incl. its diff), one mouse move of a drag, undo of a
100-dab stroke, a 3D region-growing fill of the ball, and measures the history memory of 100
brush strokes. Prints medians. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from viewer.labels.label_map import LabelMap
from viewer.labels.tools import Brush, flood_fill
from viewer.synthetic.phantom import PhantomConfig, make_phantom

SPACING = (1.0, 0.7, 0.7)
BALL_RADIUS = 29  # voxels: 4/3 pi 29^3 = ~102,000


def ct_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Phantom-like HU: a (100, 128, 128) phantom tiled to `shape`, plus a -500 HU ball in a -900 HU shell."""
    tile = (100, 128, 128)
    ph = make_phantom(PhantomConfig(shape=tile, spacing=(SPACING[0], 2.8, 2.8), seed=3))
    reps = [-(-n // t) for n, t in zip(shape, tile)]
    hu = np.tile(ph.volume.array, reps)[: shape[0], : shape[1], : shape[2]].copy()
    c = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    r = BALL_RADIUS + 2
    sl = tuple(slice(ci - r, ci + r + 1) for ci in c)
    z, y, x = np.ogrid[-r:r + 1, -r:r + 1, -r:r + 1]
    d2 = z * z + y * y + x * x
    box = hu[sl]
    box[d2 <= r * r] = -900
    rng = np.random.default_rng(0)
    inside = d2 <= BALL_RADIUS**2
    box[inside] = rng.integers(-650, -350, int(inside.sum()))
    return hu, c


def timed(fn: Callable[[], object], repeat: int, between: Callable[[], object] | None = None) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if between is not None:
            between()
    return times


def stroke_path(rng: np.random.Generator, shape: tuple[int, int, int], n: int, step: float = 3.0) -> list:
    z = int(rng.integers(0, shape[0]))
    p = rng.uniform(100, 400, 2)
    heading = rng.uniform(0, 2 * np.pi)
    pts = []
    for _ in range(n):
        heading += rng.normal(0, 0.3)
        p = np.clip(p + step * np.array([np.sin(heading), np.cos(heading)]), 20, min(shape[1:]) - 20)
        pts.append((z, float(p[0]), float(p[1])))
    return pts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(600, 512, 512))
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    shape = tuple(args.shape)

    t0 = time.perf_counter()
    hu, centre = ct_volume(shape)
    print(f"built the {shape} int16 volume in {time.perf_counter() - t0:.1f} s")
    lm = LabelMap.empty(shape, SPACING)
    rng = np.random.default_rng(1)
    results: dict[str, float] = {}

    for name, brush in (("brush dab 10 mm, axial disk", Brush(10.0, 3)),
                        ("brush dab 10 mm, axial, GGO HU range", Brush(10.0, 3, hu_range="ggo")),
                        ("brush dab 10 mm, sphere", Brush(10.0, 4, shape="sphere"))):
        centres = [(int(rng.integers(50, shape[0] - 50)), *rng.uniform(60, min(shape[1:]) - 60, 2))
                   for _ in range(args.repeat)]
        it = iter(centres)
        results[name] = statistics.median(timed(lambda b=brush, it=it: b.dab(lm, hu, next(it)), args.repeat))
    lm.clear_history()

    brush = Brush(10.0, 3)
    path = stroke_path(rng, shape, args.repeat + 1)
    lm.begin_stroke("brush")
    brush.dab(lm, hu, path[0])
    moves = iter(zip(path[:-1], path[1:]))
    results["mouse move of a drag (line of dabs, 3 vox)"] = statistics.median(
        timed(lambda: brush.line(lm, hu, *next(moves)), args.repeat))
    lm.end_stroke()
    lm.clear_history()

    path = stroke_path(rng, shape, 100)
    brush.stroke(lm, hu, path)
    n_changed = lm.last_diff().size
    results["undo of a 100-dab stroke"] = statistics.median(timed(lm.undo, 9, between=lm.redo))
    results["redo of a 100-dab stroke"] = statistics.median(timed(lm.redo, 9, between=lm.undo))
    lm.clear_history()

    lm = LabelMap.empty(shape, SPACING)

    def fill() -> None:
        flood_fill(lm, hu, centre, 3, hu_range="ggo", connectivity=6)

    fill_times = timed(fill, 7, between=lm.undo)
    fill()
    region = lm.last_diff().size
    lm.undo()
    results[f"3D fill, {region:,} voxels (6-connected)"] = statistics.median(fill_times)
    lm.clear_history()

    for _ in range(100):
        brush.stroke(lm, hu, stroke_path(rng, shape, 20))
    mem_mb = lm.history_nbytes / 1e6
    steps = len(lm.undo_names)

    print(f"\n{shape[0]}x{shape[1]}x{shape[2]} int16, spacing {SPACING} mm; medians; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for name, t in results.items():
        print(f"  {name:50} {t * 1000:9.2f} ms")
    print(f"  {'history of 100 strokes of 20 dabs (10 mm)':50} {mem_mb:9.2f} MB  ({steps} undo steps)")
    print(f"  (the 100-dab stroke changed {n_changed:,} voxels)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "shape": shape, "spacing": SPACING, "ms": {k: v * 1000 for k, v in results.items()},
            "history_100_strokes_mb": mem_mb, "stroke_voxels": n_changed, "fill_voxels": region,
        }, indent=2))


if __name__ == "__main__":
    main()

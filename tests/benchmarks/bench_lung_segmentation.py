"""Benchmark: classic lung segmentation (inference.lungs.threshold) on a full-size phantom.

    python -m tests.benchmarks.bench_lung_segmentation [--slices 300] [--size 512] [--repeat 3] [--json OUT]

Builds a phantom CT (about 8 s for 300 x 512 x 512), times `segment_lungs` `--repeat` times after one
warm-up run and prints the median with the Dice of each lung against the phantom's masks. Target:
under 1.5 s for 300 x 512 x 512. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from inference.lungs.threshold import LungMasks, segment_lungs
from viewer.synthetic.phantom import PhantomConfig, make_phantom

TARGET_S = 1.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    spacing = (300.0 / args.slices, 348.0 / args.size, 348.0 / args.size)  # 1.0 x 0.68 x 0.68 mm by default
    t0 = time.perf_counter()
    ph = make_phantom(PhantomConfig(shape=(args.slices, args.size, args.size), spacing=spacing, n_ggo=3,
                                    n_consolidation=3, seed=args.seed))
    print(f"phantom built in {time.perf_counter() - t0:.1f} s")
    hu = ph.volume.array

    segment_lungs(hu, ph.volume.spacing)  # warm-up: page in the volume and the code
    times: list[float] = []
    masks: LungMasks | None = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        masks = segment_lungs(hu, ph.volume.spacing)
        times.append(time.perf_counter() - t0)
    assert masks is not None
    median = statistics.median(times)

    lungs = masks.lungs
    cons, ggo = ph.masks["consolidation"], ph.masks["ggo"]
    rows = [
        ("segment_lungs, median", f"{median:.2f} s", f"target < {TARGET_S:.1f} s"),
        ("  all runs", ", ".join(f"{t:.2f}" for t in times), ""),
        ("Dice left lung", f"{dice(masks.left, ph.masks['lung_left']):.4f}", ""),
        ("Dice right lung", f"{dice(masks.right, ph.masks['lung_right']):.4f}", ""),
        ("Dice airways (trachea + main bronchi)", f"{dice(masks.airways, ph.masks['airway']):.4f}", ""),
        ("consolidation inside the lungs", f"{(cons & lungs).sum() / max(cons.sum(), 1):.3f}", ""),
        ("ground glass inside the lungs", f"{(ggo & lungs).sum() / max(ggo.sum(), 1):.3f}", ""),
    ]
    print(f"\n{args.slices} x {args.size} x {args.size} int16 at {tuple(round(s, 2) for s in spacing)} mm, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for name, value, note in rows:
        print(f"  {name:40} {value:>22}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "shape": [args.slices, args.size, args.size], "spacing": spacing, "times_s": times, "median_s": median,
            "dice_left": dice(masks.left, ph.masks["lung_left"]),
            "dice_right": dice(masks.right, ph.masks["lung_right"]),
        }, indent=2))


if __name__ == "__main__":
    main()

"""Benchmark: the 2D lung U-Net against the threshold method on a full-size phantom, in the same run.

    python -m tests.benchmarks.bench_lung_unet [--slices 300] [--size 512] [--repeat 3] [--device cpu] [--threads 1]
        [--json OUT]

Builds a phantom CT (about 8 s for 300 x 512 x 512), runs each method once to warm up, then times
it `--repeat` times (alternating) and prints the medians with the Dice of each lung against the
phantom's masks. Not part of the test suite.
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
import torch

from inference.lungs.threshold import LungMasks, segment_lungs
from inference.lungs.unet import _shipped_model, postprocess, predict_labels, segment_lungs_unet
from viewer.synthetic.phantom import PhantomConfig, make_phantom


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--device", default="auto", help="where the U-Net runs: auto, cpu, cuda")
    ap.add_argument("--threads", type=int, default=0,
                    help="also time the U-Net on the CPU with this many torch threads (a busy machine runs one "
                         "thread faster than two that wait for each other)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    spacing = (300.0 / args.slices, 348.0 / args.size, 348.0 / args.size)  # 1.0 x 0.68 x 0.68 mm by default
    t0 = time.perf_counter()
    ph = make_phantom(PhantomConfig(shape=(args.slices, args.size, args.size), spacing=spacing, n_ggo=3,
                                    n_consolidation=3, seed=args.seed))
    print(f"phantom built in {time.perf_counter() - t0:.1f} s")
    hu = ph.volume.array
    methods = {
        "U-Net (segment_lungs_unet)": lambda: segment_lungs_unet(hu, ph.volume.spacing, device=args.device),
        "threshold (segment_lungs)": lambda: segment_lungs(hu, ph.volume.spacing),
    }
    if args.threads:
        net = _shipped_model("cpu")

        def unet_threads() -> LungMasks:
            # segment_lungs_unet's own work; its device selection would reset torch to all cores
            torch.set_num_threads(args.threads)
            return postprocess(predict_labels(net, hu, ph.volume.spacing), ph.volume.spacing)

        methods[f"U-Net, CPU, {args.threads} thread(s)"] = unet_threads
    times: dict[str, list[float]] = {name: [] for name in methods}
    masks: dict[str, LungMasks] = {}
    for name, run in methods.items():
        masks[name] = run()  # warm-up: page in the volume, the weights and the code
    for _ in range(args.repeat):
        for name, run in methods.items():
            t0 = time.perf_counter()
            masks[name] = run()
            times[name].append(time.perf_counter() - t0)

    left, right = ph.masks["lung_left"], ph.masks["lung_right"]
    print(f"\n{args.slices} x {args.size} x {args.size} int16 at {tuple(round(s, 2) for s in spacing)} mm, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"(all cores: {os.cpu_count()} threads)")
    results = {}
    for name in methods:
        m = masks[name]
        results[name] = {"median_s": statistics.median(times[name]), "times_s": times[name],
                         "dice_left": dice(m.left, left), "dice_right": dice(m.right, right),
                         "dice_both": dice(m.lungs, left | right)}
        r = results[name]
        print(f"  {name:28} median {r['median_s']:6.2f} s  (runs {', '.join(f'{t:.2f}' for t in times[name])})  "
              f"Dice L/R {r['dice_left']:.4f}/{r['dice_right']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": [args.slices, args.size, args.size], "spacing": spacing,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()

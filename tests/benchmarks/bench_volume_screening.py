"""Benchmark: whole-case DeCoVNet screening (inference.screening.pipelines.volume) on a full-size phantom series.

    python -m tests.benchmarks.bench_volume_screening [--slices 300] [--size 512] [--input 224 336 2 96 144 5]
        [--repeat 2] [--device auto]

Each `--input ROWS COLS Z_MM` triple is one network input size (the paper's 224 x 336; a reduced one);
each is timed `--repeat` times after a warm-up run (lung mask, pre-processing, one forward pass with
Grad-CAM at three depths, heat map, localization, lesion mask, burden). Uses the shipped weights'
architecture with seeded random weights (the cost does not depend on the weights). Not part of the suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference.inferers.volume import VolumeClassifier
from inference.models._api import get_model
from inference.models.decovnet import decovnet
from inference.screening.pipelines.volume import run_volume
from inference.transforms.volume import VolumePreprocessor
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume

KEYS = ("lung_segmentation", "preprocessing", "classification", "heatmap", "localization", "lesions")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--input", type=float, nargs="+", default=[224, 336, 2, 96, 144, 5],
                    help="ROWS COLS Z_MM triples")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    args = ap.parse_args()
    from tests.benchmarks.bench_loading import phantom_series

    folder = phantom_series(Path(args.cache), args.slices, args.size) / "dicom"
    vol = to_canonical(open_volume(folder))
    base = get_model("decovnet")
    for i in range(0, len(args.input) - 2, 3):
        rows, cols, z_mm = int(args.input[i]), int(args.input[i + 1]), float(args.input[i + 2])
        torch.manual_seed(0)
        spec = dataclasses.replace(base, transforms=VolumePreprocessor(size=(rows, cols), z_spacing_mm=z_mm))
        clf = VolumeClassifier(spec, device=args.device, module=decovnet())
        runs = []
        for _ in range(args.repeat + 1):
            t0 = time.perf_counter()
            pred = run_volume(vol.array, vol.spacing, clf)
            runs.append((time.perf_counter() - t0, pred.timings))
        runs = runs[1:]  # the first run warms up
        depth = clf.preprocessor.grid(pred.lung_mask > 0, vol.spacing).shape[0]
        print(f"\nDeCoVNet {rows}x{cols}, {z_mm:g} mm (network input depth {depth}) on {clf.engine}, "
              f"{torch.get_num_threads()} threads; {vol.shape} CT")
        print(f"  whole case: {statistics.median(t for t, _ in runs):.2f} s (median of {len(runs)})")
        for key in KEYS:
            print(f"    {key:18} {statistics.median(tm[key] for _, tm in runs):.2f} s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"  peak memory of the process so far: {peak:.1f} GiB")


if __name__ == "__main__":
    main()

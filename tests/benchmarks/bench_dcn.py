"""Benchmark: DCN lesion screening (inference.screening.pipelines.lesions) of a full-size phantom series, as a
ratio to the light path's whole case (light SqueezeNet, `pipelines.slice`) in the same run.

    python -m tests.benchmarks.bench_dcn [--slices 300] [--size 512] [--repeat 2] [--device auto] [--random]

Both paths get the same lung labels (segmented once, outside the timings), so the figures compare the models'
work: DCN segments, attends and classifies every slice with lung; the light path classifies the slices
(thin slices about 4 mm apart), makes its heat map and takes its lesion mask from DCN's segmentation branch
(the default since 2026-12-02; before, it thresholded HU inside its heat map). The shipped weights are used
(`--random`: seeded random weights of the shipped width; the cost does not depend on the weights). Medians of
`--repeat` runs after a warm-up run. Not part of the suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from inference.inferers.lesions import LesionSegmenter
from inference.lungs.select import segment_lung_labels
from inference.models.dcn import dcn
from inference.screening.run import load_model, run
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--random", action="store_true", help="random weights instead of the shipped ones")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    args = ap.parse_args()
    from tests.benchmarks.bench_loading import phantom_series

    folder = phantom_series(Path(args.cache), args.slices, args.size) / "dicom"
    vol = to_canonical(open_volume(folder))
    lungs = segment_lung_labels(vol.array, vol.spacing, "threshold")
    torch.manual_seed(0)
    seg = (LesionSegmenter("dcn", device=args.device, module=dcn()) if args.random
           else LesionSegmenter("dcn", device=args.device))
    light = load_model("light-squeezenet", device=args.device)
    times: dict[str, list[float]] = {"dcn": [], "light": []}
    n_slices = 0
    for k in range(args.repeat + 1):
        for name, model in (("dcn", seg), ("light", light)):
            t0 = time.perf_counter()
            pred = run(vol.array, vol.spacing, model, lung_labels=lungs)
            if k:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
            if name == "dcn":
                n_slices = len(pred.slice_indices)
    d, li = statistics.median(times["dcn"]), statistics.median(times["light"])
    print(f"{vol.shape} CT, {n_slices} slices with lung; {seg.engine}, {torch.get_num_threads()} threads; "
          f"median of {args.repeat}")
    print(f"  DCN lesion screening:   {d:.2f} s ({1000 * d / max(n_slices, 1):.0f} ms per slice)")
    print(f"  light path whole case:  {li:.2f} s")
    print(f"  ratio DCN / light:      {d / li:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: light SqueezeNet slice inference and whole-case screening on this machine.

    python -m tests.benchmarks.bench_inference [--slices 300] [--size 512] [--repeat 30]

Slice inference is timed at batch 1 and batch 16 (ms per slice, median), against the paper's
7.81 s per image on a mid-range laptop CPU (MATLAB). Whole-case screening of a phantom series:
lung mask + every lung slice + heat map (Grad-CAM, the default, and the paper's CAM) + lesion mask.
Uses the shipped weights when present, else untrained weights of the same architecture (same cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inference.core.device import select_device
from inference.inferers.slice import SliceClassifier
from inference.models._api import get_model
from inference.models.light_squeezenet import light_squeezenet
from inference.screening.run import ScreeningConfig, run
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume

PAPER_LAPTOP_S = 7.81


def _slice_times(clf: SliceClassifier, images: list[np.ndarray], repeat: int) -> tuple[float, float]:
    """Median ms per slice at batch 1 and at batch 16."""
    clf.predict_arrays(images[:2])  # warm up
    t1 = []
    for i in range(repeat):
        t0 = time.perf_counter()
        clf.predict_arrays(images[i % 16 : i % 16 + 1])
        t1.append(time.perf_counter() - t0)
    t16 = []
    for _ in range(max(3, repeat // 8)):
        t0 = time.perf_counter()
        clf.predict_arrays(images, batch_size=16)
        t16.append((time.perf_counter() - t0) / 16)
    return statistics.median(t1) * 1000, statistics.median(t16) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    args = ap.parse_args()
    device = select_device(args.device)
    spec = get_model("light-squeezenet")
    module = None if spec.weights is not None else light_squeezenet()
    backends = ["torch", "onnx"] if device.type == "cpu" else ["torch"]
    rng = np.random.default_rng(0)
    images = [rng.random((400, 400), dtype=np.float32) for _ in range(16)]
    from tests.benchmarks.bench_loading import phantom_series

    folder = phantom_series(Path(args.cache), args.slices, args.size) / "dicom"
    vol = to_canonical(open_volume(folder))
    print(f"\nlight SqueezeNet on {device} ({torch.get_num_threads()} threads), weights "
          f"{'shipped' if module is None else 'untrained (same cost)'}")
    results = {}
    for backend in backends:
        t0 = time.perf_counter()
        clf = SliceClassifier(spec, device=args.device, tta=False, module=module, backend=backend)
        setup = time.perf_counter() - t0
        ms1, ms16 = _slice_times(clf, images, args.repeat)
        print(f"\n  {clf.engine}: set-up {setup:.2f} s")
        print(f"    slice, batch 1: {ms1:7.1f} ms  ({PAPER_LAPTOP_S * 1000 / ms1:,.0f}x faster than paper's 7.81 s)")
        print(f"    slice, batch 16:  {ms16:7.1f} ms per slice")
        for method in clf.heatmap_methods():  # torch: Grad-CAM (its default) and CAM; ONNX Runtime: CAM
            config = ScreeningConfig(heatmap=method)
            cases = [run(vol.array, vol.spacing, clf, config=config).timings for _ in range(3)]
            total = statistics.median(c["total"] for c in cases)
            if method == "cam":
                results[backend] = ms1, ms16, total
            print(f"    whole case, {args.slices} slices of {args.size}^2, {method} heat map: {total:.2f} s "
                  "(median of 3)")
            for key in ("lung_segmentation", "classification", "lesions"):
                print(f"      {key:18} {statistics.median(c[key] for c in cases):.2f} s")
    if len(results) == 2:
        (a1, a16, ac), (b1, b16, bc) = results["torch"], results["onnx"]
        print(f"\n  onnxruntime vs torch: batch 1 {a1 / b1:.2f}x, batch 16 {a16 / b16:.2f}x, "
              f"whole case with the CAM heat map {ac / bc:.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark: a whole case (load, lungs, screening) against SimpleITK's bare read of the same series, in one run.

    python -m tests.benchmarks.bench_real_case [--real ../shared/data/covid-ct-md/P001-covid] [--slices 300]
        [--size 512] [--model light-squeezenet] [--repeat 3] [--only real|phantom]

Two series: a real CT (default: COVID-CT-MD P001, 148 slices of JPEG Lossless) and the uncompressed
phantom of `bench_loading`. For each, the medians of `--repeat` runs (after a warm-up) of:
SimpleITK `ImageSeriesReader` (file names known, GDCM's order; the baseline), LungLens's loader
(`open_volume`: scan, sort, decode, HU), and the whole case as `lunglens screen` does it (load, canonical
orientation, lung mask, screening with `--model`), once with DCN's lesion mask (the default) and once with
the HU rule (`--lesions hu-rule`), with the ratios to the baseline. Not part of the suite.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import SimpleITK as sitk

from inference.lungs.select import segment_lung_labels
from inference.screening.config import ScreeningConfig
from inference.screening.run import load_model, run
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume


def median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: file cache, imports, model
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def sitk_read(folder: Path) -> sitk.Image:
    names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(names)
    return reader.Execute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", default=str(Path(__file__).resolve().parents[3]
                                          / "shared/data/covid-ct-md/P001-covid"))
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--model", default="light-squeezenet")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    ap.add_argument("--only", choices=("real", "phantom"), help="time one of the two series")
    args = ap.parse_args()
    from tests.benchmarks.bench_loading import phantom_series

    model = load_model(args.model, device="cpu")
    series: dict[str, Path] = {}
    if args.only in (None, "real"):
        series["real"] = Path(args.real)
    if args.only in (None, "phantom"):
        series["phantom"] = phantom_series(Path(args.cache), args.slices, args.size) / "dicom"
    print(f"{os.cpu_count()} CPUs; model {args.model}; medians of {args.repeat} runs\n")
    print("| series | slices | SimpleITK read | LungLens load | x SimpleITK | whole case, DCN lesions | x SimpleITK "
          "| whole case, HU-rule lesions | x SimpleITK |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, folder in series.items():
        n = len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        t_sitk = median_s(lambda f=folder: sitk_read(f), args.repeat)
        t_load = median_s(lambda f=folder: open_volume(f), args.repeat)

        def whole(f: Path = folder, lesion_model: str | None = "dcn") -> None:
            vol = to_canonical(open_volume(f))
            lungs = segment_lung_labels(vol.array, vol.spacing, "threshold")
            run(vol.array, vol.spacing, model, lung_labels=lungs, config=ScreeningConfig(lesion_model=lesion_model))

        t_dcn = median_s(whole, args.repeat)
        t_hu = median_s(lambda: whole(lesion_model=None), args.repeat)
        print(f"| {name} ({folder.name}) | {n} | {t_sitk:.2f} s | {t_load:.2f} s | {t_load / t_sitk:.2f} | "
              f"{t_dcn:.2f} s | {t_dcn / t_sitk:.2f} | {t_hu:.2f} s | {t_hu / t_sitk:.2f} |", flush=True)


if __name__ == "__main__":
    main()

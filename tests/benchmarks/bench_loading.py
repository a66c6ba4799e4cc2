"""Benchmark: DICOM header scanning and series loading against SimpleITK.

    python -m tests.benchmarks.bench_loading [--slices 300] [--size 512] [--repeat 5] [--json OUT]

Writes a phantom CT series once (cached under the temp folder), warms the page
cache, then times each method `--repeat` times in one run and prints medians and
ratios. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from viewer.dicom.load import load_series
from viewer.dicom.scan import scan
from viewer.dicom.write import write_ct_series
from viewer.io.volumes import open_volume
from viewer.synthetic.phantom import PhantomConfig, make_phantom


def phantom_series(root: Path, slices: int, size: int) -> Path:
    folder = root / f"phantom-{slices}x{size}"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    ph = make_phantom(PhantomConfig(shape=(slices, size, size), spacing=(1.0, 350 / size, 350 / size),
                                    n_ggo=3, n_consolidation=1, seed=7))
    write_ct_series(ph.volume, folder / "dicom", uid_seed="bench")
    (folder / "done").touch()
    print(f"wrote the phantom series in {time.perf_counter() - t0:.1f} s")
    return folder


def big_folder(series: Path, copies: int) -> Path:
    """`copies` hard-linked copies of the series in sub-folders (a PACS-export-sized tree)."""
    out = series.parent / f"{series.name}-x{copies}"
    if (out / "done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    for c in range(copies):
        sub = out / f"copy{c:02d}"
        sub.mkdir(parents=True)
        for f in (series / "dicom").iterdir():
            os.link(f, sub / f.name)
    (out / "done").touch()
    return out


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkInt16)
    return reader.Execute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--copies", type=int, default=10, help="series copies in the big-folder scan")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "lunglens-bench"))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()

    root = phantom_series(Path(args.cache), args.slices, args.size)
    series = root / "dicom"
    files = sorted(series.iterdir())
    for f in files:  # warm the page cache: we measure parsing and decoding, not the disk
        f.read_bytes()
    big = big_folder(root, args.copies)
    for f in big.rglob("*.dcm"):
        f.read_bytes()
    n_big = sum(1 for _ in big.rglob("*.dcm"))

    t_scan, res = timed(lambda: scan(series), args.repeat)
    t_scan_big, res_big = timed(lambda: scan(big), args.repeat)
    entry = res.series[0]
    t_load, vol = timed(lambda: load_series(entry), args.repeat)
    t_open, vol2 = timed(lambda: open_volume(series), args.repeat)

    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(series))
    t_sitk_names, _ = timed(lambda: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series)), args.repeat)

    def sitk_read() -> sitk.Image:
        r = sitk.ImageSeriesReader()
        r.SetFileNames(names)
        r.SetOutputPixelType(sitk.sitkInt16)
        return r.Execute()

    t_sitk_read, img = timed(sitk_read, args.repeat)
    t_sitk_all, _ = timed(lambda: sitk_series(series), args.repeat)
    same = bool(np.array_equal(sitk.GetArrayFromImage(img), vol.array))

    rows = [
        ("header scan, one series", f"{len(files) / t_scan:,.0f} files/s", f"{t_scan * 1000:.0f} ms"),
        (f"header scan, {n_big} files in {args.copies} folders", f"{n_big / t_scan_big:,.0f} files/s",
         f"{t_scan_big * 1000:.0f} ms"),
        ("LungLens load_series (files known)", f"{len(files) / t_load:,.0f} slices/s", f"{t_load * 1000:.0f} ms"),
        ("SimpleITK ImageSeriesReader.Execute (files known)", f"{len(files) / t_sitk_read:,.0f} slices/s",
         f"{t_sitk_read * 1000:.0f} ms"),
        ("LungLens open_volume(folder) (scan + load)", f"{len(files) / t_open:,.0f} slices/s",
         f"{t_open * 1000:.0f} ms"),
        ("SimpleITK GetGDCMSeriesFileNames + Execute", f"{len(files) / t_sitk_all:,.0f} slices/s",
         f"{t_sitk_all * 1000:.0f} ms"),
    ]
    print(f"\n{args.slices} slices of {args.size}x{args.size}, int16, uncompressed; medians of {args.repeat} runs; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for name, rate, t in rows:
        print(f"  {name:52} {rate:>18} {t:>9}")
    print(f"  load_series vs SimpleITK Execute:        {t_sitk_read / t_load:.2f}x faster")
    print(f"  open_volume vs SimpleITK names+Execute:  {t_sitk_all / t_open:.2f}x faster")
    print(f"  SimpleITK GetGDCMSeriesFileNames alone:  {t_sitk_names * 1000:.0f} ms")
    print(f"  voxels identical to SimpleITK: {same}; geometry: {vol.spacing} {vol.origin}")
    assert len(res_big.series) >= 1 and vol2.shape == vol.shape
    if args.json:
        Path(args.json).write_text(json.dumps({
            "slices": args.slices, "size": args.size, "repeat": args.repeat,
            "scan_files_per_s": len(files) / t_scan, "scan_big_files_per_s": n_big / t_scan_big,
            "load_series_s": t_load, "sitk_execute_s": t_sitk_read, "open_volume_s": t_open,
            "sitk_names_execute_s": t_sitk_all, "identical": same,
        }, indent=2))


if __name__ == "__main__":
    main()

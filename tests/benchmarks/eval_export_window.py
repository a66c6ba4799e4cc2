"""Estimate the HU window the COVID-SemiSeg 8-bit slices were exported with (on demand, real data).

    python -m tests.benchmarks.eval_export_window [--semiseg DIR] [--volumes DIR [DIR ...]] [--step 2]
        [--keep-lesions] [--self-check] [--json OUT]

The JPEGs are windowed HU: grey = round(255 * clip((HU - lo) / (hi - lo), 0, 1)). For each window
(lo, hi) on a grid, the grey-level CDF that window gives the body pixels of real CT slices (lung-level
slices of the covid-ct-md volumes, every `--step`-th) is compared with the CDF of the JPEGs' body
pixels; the distance is the mean absolute CDF difference over the 256 grey levels (the 1-Wasserstein
distance in grey levels / 255). "Body" is defined the same way on both sides: the largest bright
(above the air/tissue threshold: -500 HU, Otsu on the JPEG) component, holes (the lungs) filled.
The radiologists' lesion pixels are left out of the JPEGs unless `--keep-lesions`.

Reported: the best window of the pooled volumes against the pooled JPEGs (each JPEG weighted
equally), its runners-up, the best window per volume and per JPEG (spread), and an independent
estimate from a straight-line fit of JPEG grey quantiles to HU quantiles (unsaturated levels only).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from inference.training.datasets.lesion_slices import read_lesion_slices
from viewer.io.volumes import open_volume

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
HU_MIN, HU_MAX = -2048, 4096  # histogram range (1 HU bins)
LOS = np.arange(-1600, -299, 10)
HIS = np.arange(-400, 801, 10)
MIN_WIDTH = 300
LUNG_FRACTION = 0.2  # a CT slice counts as lung-level when this share of its body is below -400 HU
GREYS = np.arange(256)


def body_mask(bright: np.ndarray) -> np.ndarray:
    """Largest bright component with its holes filled (the lungs are holes in the body)."""
    lab, n = ndimage.label(bright)
    if n == 0:
        return np.zeros_like(bright)
    sizes = ndimage.sum_labels(bright, lab, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(lab == int(np.argmax(sizes)) + 1)


def otsu(grey: np.ndarray) -> int:
    """Otsu threshold of uint8 values."""
    return otsu_hist(np.bincount(grey.ravel(), minlength=256).astype(np.float64))


def otsu_hist(hist: np.ndarray) -> int:
    """Otsu threshold of a 256-bin histogram."""
    p = hist / hist.sum()
    w0 = np.cumsum(p)
    mu = np.cumsum(p * GREYS)
    between = (mu[-1] * w0 - mu) ** 2 / np.maximum(w0 * (1 - w0), 1e-12)
    return int(np.argmax(between))


def jpeg_cdfs(root: Path, keep_lesions: bool) -> tuple[list[str], np.ndarray, list[float]]:
    """Per-JPEG grey CDFs (n, 256) of body pixels, with the stems and the body share of each image."""
    stems, cdfs, shares = [], [], []
    for s in read_lesion_slices(root).slices:
        grey = np.round(s.image * 255).astype(np.uint8)
        body = body_mask(grey > otsu(grey))
        if body.mean() < 0.5:  # body cut by the crop: its holes do not close, use the whole image
            body = np.ones_like(body)
        if not keep_lesions:
            body &= s.labels == 0
        hist = np.bincount(grey[body], minlength=256).astype(np.float64)
        stems.append(s.stem)
        cdfs.append(np.cumsum(hist) / hist.sum())
        shares.append(float(body.mean()))
    return stems, np.array(cdfs), shares


def volume_hu_hist(folder: Path, step: int) -> tuple[np.ndarray, int]:
    """1-HU histogram of the body pixels of every `step`-th lung-level slice, and the slice count used."""
    hu = open_volume(folder).array
    hist = np.zeros(HU_MAX - HU_MIN, dtype=np.float64)
    used = 0
    for z in range(0, hu.shape[0], step):
        sl = hu[z].astype(np.int32)
        body = body_mask(sl > -500)
        if not body.any() or (sl[body] < -400).mean() < LUNG_FRACTION:
            continue
        vals = np.clip(sl[body], HU_MIN, HU_MAX - 1) - HU_MIN
        hist += np.bincount(vals, minlength=HU_MAX - HU_MIN)
        used += 1
    return hist, used


def window_cdfs(hu_hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey CDFs (n_windows, 256) that each grid window gives this HU histogram, and the windows (n, 2)."""
    cum = np.concatenate([[0.0], np.cumsum(hu_hist) / hu_hist.sum()])  # cum[i] = P(HU < HU_MIN + i)
    lo, hi = np.meshgrid(LOS, HIS, indexing="ij")
    keep = hi - lo >= MIN_WIDTH
    windows = np.stack([lo[keep], hi[keep]], axis=1).astype(np.float64)
    # grey <= g  <=>  HU < lo + (g + 0.5) * (hi - lo) / 255  (export by rounding)
    edges = windows[:, :1] + (GREYS[None, :] + 0.5) * (windows[:, 1:] - windows[:, :1]) / 255.0
    x = np.ceil(edges) - HU_MIN  # integer HU strictly below the edge
    cdf = np.interp(x, np.arange(cum.size), cum)
    cdf[:, -1] = 1.0
    return cdf, windows


def distances(cdf_windows: np.ndarray, cdf_target: np.ndarray) -> np.ndarray:
    """Mean |CDF difference| per window (rows) for one target CDF (256,) or several (m, 256) -> (m, n)."""
    return np.array([np.abs(cdf_windows - t[None, :]).mean(axis=1) for t in np.atleast_2d(cdf_target)])


def quantile_fit(hu_hist: np.ndarray, cdf_jpeg: np.ndarray) -> tuple[float, float]:
    """Window from a least-squares line grey = a * HU + b through matched quantiles (unsaturated greys)."""
    cum = np.cumsum(hu_hist) / hu_hist.sum()
    levels = np.linspace(0.02, 0.98, 97)
    grey_q = np.searchsorted(cdf_jpeg, levels).astype(np.float64)
    hu_q = np.searchsorted(cum, levels).astype(np.float64) + HU_MIN
    ok = (grey_q > 3) & (grey_q < 252)
    a, b = np.polyfit(hu_q[ok], grey_q[ok], 1)
    return float(-b / a), float((255 - b) / a)


def hu_peaks(hu_hist: np.ndarray) -> tuple[float, float]:
    """HU of the lung-parenchyma peak (-1000..-500) and the muscle/blood peak (-30..150; not fat), smoothed."""
    h = ndimage.gaussian_filter1d(hu_hist, 10)
    hu = np.arange(HU_MIN, HU_MAX)
    lung, tissue = (hu >= -1000) & (hu <= -500), (hu >= -30) & (hu <= 150)
    return float(hu[lung][np.argmax(h[lung])]), float(hu[tissue][np.argmax(h[tissue])])


def grey_peaks(cdf: np.ndarray) -> tuple[float, float]:
    """Grey level of the dark (lung) and bright (tissue, below 251) peaks either side of Otsu's threshold."""
    hist = np.diff(np.concatenate([[0.0], cdf]))
    t = otsu_hist(hist)
    h = ndimage.gaussian_filter1d(hist, 2)
    return float(np.argmax(h[:t])), float(t + np.argmax(h[t:251]))


def peak_window(hu: tuple[float, float], grey: tuple[float, float]) -> tuple[float, float]:
    """The window that maps the two HU peaks onto the two grey peaks."""
    slope = (grey[1] - grey[0]) / (hu[1] - hu[0])
    lo = hu[0] - grey[0] / slope
    return lo, lo + 255.0 / slope


def self_check(folders: list[Path], step: int, truths: list[tuple[int, int]]) -> list[dict]:
    """Window each volume's lung-level slices with a known window and recover it from the other volumes."""
    arrays = {f.name: open_volume(f).array for f in folders}
    hists = {f.name: volume_hu_hist(f, step)[0] for f in folders}
    rows = []
    for lo, hi in truths:
        for held, hu in arrays.items():
            cdfs = []
            for z in range(0, hu.shape[0], 2 * step):
                sl = hu[z].astype(np.float32)
                body = body_mask(sl > -500)
                if not body.any() or (sl[body] < -400).mean() < LUNG_FRACTION:
                    continue
                grey = np.round(255 * np.clip((sl - lo) / (hi - lo), 0, 1)).astype(np.uint8)
                hist = np.bincount(grey[body_mask(grey > otsu(grey))], minlength=256).astype(np.float64)
                cdfs.append(np.cumsum(hist) / hist.sum())
            target = np.mean(cdfs, axis=0)
            others = sum(h for k, h in hists.items() if k != held)
            cw, ww = window_cdfs(others)
            best = ranked(distances(cw, target)[0], ww, 1)[0]
            pk = peak_window(hu_peaks(others), grey_peaks(target))
            rows.append({"truth": [lo, hi], "held_out": held, "cdf": [best["lo"], best["hi"]],
                         "peaks": [round(pk[0]), round(pk[1])]})
            print(f"  truth [{lo}, {hi}]  held out {held:18s} CDF match [{best['lo']}, {best['hi']}]  "
                  f"peak anchors [{pk[0]:.0f}, {pk[1]:.0f}]")
    return rows


def ranked(d: np.ndarray, windows: np.ndarray, n: int) -> list[dict]:
    order = np.argsort(d)[:n]
    return [{"lo": int(windows[i, 0]), "hi": int(windows[i, 1]), "distance": round(float(d[i]), 5)} for i in order]


def fmt(w: dict) -> str:
    lo, hi = w["lo"], w["hi"]
    return f"[{lo:6d}, {hi:5d}] HU (L {(lo + hi) / 2:7.1f}, W {hi - lo:5d})  d={w['distance']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--semiseg", type=Path, default=DATA / "covid-semiseg-infnet" / "train")
    ap.add_argument("--volumes", type=Path, nargs="+", default=sorted(p for p in (DATA / "covid-ct-md").glob("*")
                                                                       if p.is_dir()))
    ap.add_argument("--step", type=int, default=2, help="use every n-th slice of each volume")
    ap.add_argument("--keep-lesions", action="store_true", help="keep the JPEGs' lesion pixels")
    ap.add_argument("--self-check", action="store_true",
                    help="also window each volume with known windows and recover them from the others (+40 s)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    t0 = time.perf_counter()

    stems, cdf_imgs, shares = jpeg_cdfs(args.semiseg, args.keep_lesions)
    cdf_pooled = cdf_imgs.mean(axis=0)
    print(f"{len(stems)} JPEGs from {args.semiseg}; body share of the image: median {np.median(shares):.2f}, "
          f"min {min(shares):.2f}; lesion pixels {'kept' if args.keep_lesions else 'left out'}")

    hists, result = {}, {"volumes": {}, "per_image": {}}
    for folder in args.volumes:
        hists[folder.name], used = volume_hu_hist(folder, args.step)
        print(f"{folder.name}: {used} lung-level slices used (every {args.step}. slice)")
    pooled = sum(hists.values())
    cdf_w, windows = window_cdfs(pooled)
    d_pooled = distances(cdf_w, cdf_pooled)[0]
    best = ranked(d_pooled, windows, 10)
    result["pooled"] = best
    print(f"\nPooled volumes vs pooled JPEGs: best of {len(windows)} windows, then runners-up")
    for w in best:
        print("  " + fmt(w))
    near = windows[d_pooled <= 1.1 * d_pooled.min()]
    print(f"  windows within 10% of the best distance: lo {near[:, 0].min():.0f}..{near[:, 0].max():.0f}, "
          f"hi {near[:, 1].min():.0f}..{near[:, 1].max():.0f} ({len(near)} windows)")
    lo_q, hi_q = quantile_fit(pooled, cdf_pooled)
    result["quantile_fit"] = {"lo": round(lo_q), "hi": round(hi_q)}
    print(f"  quantile line fit (independent): [{lo_q:.0f}, {hi_q:.0f}] HU")

    print("\nPer volume (vs pooled JPEGs):")
    for name, hist in hists.items():
        cw, ww = window_cdfs(hist)
        w = ranked(distances(cw, cdf_pooled)[0], ww, 1)[0]
        lo_v, hi_v = quantile_fit(hist, cdf_pooled)
        result["volumes"][name] = {**w, "quantile_fit": [round(lo_v), round(hi_v)]}
        print(f"  {name:18s} {fmt(w)}   quantile fit [{lo_v:.0f}, {hi_v:.0f}]")

    d_imgs = distances(cdf_w, cdf_imgs)
    per = windows[np.argmin(d_imgs, axis=1)]
    for stem, (lo, hi), d in zip(stems, per, d_imgs.min(axis=1), strict=True):
        result["per_image"][stem] = {"lo": int(lo), "hi": int(hi), "distance": round(float(d), 5)}
    q = np.percentile(per, [10, 25, 50, 75, 90], axis=0)
    print("\nPer JPEG (vs pooled volumes; one slice vs many: composition-dependent, only a spread), "
          "best window percentiles 10/25/50/75/90:")
    print(f"  lo {q[:, 0].round().astype(int).tolist()}   hi {q[:, 1].round().astype(int).tolist()}")
    widths = per[:, 1] - per[:, 0]
    print(f"  width percentiles {np.percentile(widths, [10, 25, 50, 75, 90]).round().astype(int).tolist()}")
    print(f"  distance of the pooled best window per JPEG: median "
          f"{np.median(d_imgs[:, int(np.argmin(d_pooled))]):.4f} (vs {np.median(d_imgs.min(axis=1)):.4f} own best)")

    hu_pk = hu_peaks(pooled)
    peak_w = np.array([peak_window(hu_pk, grey_peaks(c)) for c in cdf_imgs])
    pooled_pk = peak_window(hu_pk, grey_peaks(cdf_pooled))
    result["peaks"] = {"hu": hu_pk, "pooled": [round(v) for v in pooled_pk],
                       "per_image": {k: [round(v) for v in w] for k, w in zip(stems, peak_w, strict=True)}}
    q = np.percentile(peak_w, [10, 25, 50, 75, 90], axis=0)
    print(f"\nPeak anchors (lung {hu_pk[0]:.0f} HU, tissue {hu_pk[1]:.0f} HU in the volumes -> the JPEGs' "
          f"dark/bright grey peaks): pooled JPEGs [{pooled_pk[0]:.0f}, {pooled_pk[1]:.0f}] HU")
    print(f"  per JPEG percentiles 10/25/50/75/90: lo {q[:, 0].round().astype(int).tolist()}   "
          f"hi {q[:, 1].round().astype(int).tolist()}")
    for name, hist in hists.items():
        pk = hu_peaks(hist)
        w = peak_window(pk, grey_peaks(cdf_pooled))
        print(f"  {name:18s} peaks {pk[0]:.0f} / {pk[1]:.0f} HU -> [{w[0]:.0f}, {w[1]:.0f}]")
    if args.self_check:
        print("\nSelf-check (known windows, one volume exported, matched against the others):")
        result["self_check"] = self_check(args.volumes, args.step, [(-1080, 200), (-1250, 250), (-1000, 400)])
    print(f"\n{time.perf_counter() - t0:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

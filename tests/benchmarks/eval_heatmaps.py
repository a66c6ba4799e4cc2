"""Evaluation: do a slice model's heat maps sit on the lesions a radiologist outlined?

    python -m tests.benchmarks.eval_heatmaps --data DIR [--weights FILE] [--normalize per-image|fixed]
                                             [--rot90 K] [--methods grad-cam cam] [--json OUT]
    python -m tests.benchmarks.eval_heatmaps --shortcuts COVID_CT_DIR [--split val] ...

`--data` holds `Imgs/` (slice images) and `GT/` (binary infection masks, same names with `.png`), as
the COVID-SemiSeg (Inf-Net) folder in `../shared/data` does. `--rot90 K` turns images and masks K times
by 90 degrees counter-clockwise first (that set's slices lie on their side: anterior at the left; the
models were trained on upright slices, so use `--rot90 -1` there). For each heat-map method the script
prints, over all images: how often the map's maximum inside the body lies in a lesion, or within 4 % of
the image width of one, and the median ratio of the mean heat in lesions to the mean heat in the rest of
the body. The model's probabilities are printed too (every image shows COVID-19). Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from inference.inferers.slice import HEATMAP_METHODS, SliceClassifier
from inference.models._api import get_model
from inference.models.light_squeezenet import light_squeezenet
from inference.training.datasets.slices import read_split
from inference.transforms.images import load_grey


def body_mask(image: np.ndarray) -> np.ndarray:
    """The patient's cross-section in a lung-window slice image in [0, 1] (largest bright blob, holes filled)."""
    body = ndimage.binary_opening(image > 0.25, iterations=2)
    labels, n = ndimage.label(body)
    if n:
        body = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return ndimage.binary_fill_holes(body)


def load_pairs(root: Path, rot90: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for path in sorted((root / "Imgs").iterdir(), key=lambda p: (len(p.stem), p.stem)):
        gt_path = root / "GT" / f"{path.stem}.png"
        if not gt_path.exists():
            continue
        image = np.asarray(Image.open(path).convert("L"), np.float32) / 255
        mask = np.asarray(Image.open(gt_path).convert("L")) > 127
        pairs.append((path.name, np.ascontiguousarray(np.rot90(image, rot90)),
                      np.ascontiguousarray(np.rot90(mask, rot90))))
    if not pairs:
        raise SystemExit(f"no image with a mask under {root} (expected Imgs/*.jpg|png and GT/*.png)")
    return pairs


def evaluate(clf: SliceClassifier, pairs, method: str) -> dict[str, float]:
    inside = near = 0
    ratios, probs = [], []
    for _name, image, mask in pairs:
        p, maps = clf.predict_with_cam([image], method)
        body = body_mask(image)
        heat = clf.cam_to_image(maps[0], image.shape) * body
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        inside += bool(mask[peak])
        near += bool(ndimage.distance_transform_edt(~mask)[peak] <= 0.04 * max(image.shape))
        rest = heat[body & ~mask]
        ratios.append(float(heat[mask].mean() / max(rest.mean() if rest.size else 0.0, 1e-9)))
        probs.append(float(p[0]))
    n = len(pairs)
    return {"images": n, "peak_in_lesion": inside / n, "peak_near_lesion": near / n,
            "median_enrichment": float(np.median(ratios)), "mean_probability": float(np.mean(probs)),
            "called_positive": float(np.mean(np.array(probs) >= 0.5))}


def shortcut_check(clf: SliceClassifier, paths, method: str) -> dict[str, float]:
    """Share of the heat inside the body (mean over images) and the share of images peaking outside it."""
    inside, outside_peaks = [], 0
    for path in paths:
        image = load_grey(path)
        _, maps = clf.predict_with_cam([image], method)
        heat = clf.cam_to_image(maps[0], image.shape)
        body = body_mask(image)
        inside.append(float(heat[body].sum() / max(heat.sum(), 1e-9)))
        outside_peaks += not body[np.unravel_index(np.argmax(heat), heat.shape)]
    return {"images": len(paths), "heat_inside_body": float(np.mean(inside)),
            "peaks_outside_body": outside_peaks / max(len(paths), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, help="Imgs/ + GT/ folder (lesion masks)")
    ap.add_argument("--shortcuts", type=Path, help="a COVID-CT-style folder: heat inside the patient or not")
    ap.add_argument("--split", default="val")
    ap.add_argument("--model", default="light-squeezenet")
    ap.add_argument("--weights", help="a light SqueezeNet weights file (default: the shipped, hash-checked ones)")
    ap.add_argument("--normalize", help="input normalization of --weights (default: the registry entry's)")
    ap.add_argument("--rot90", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=list(HEATMAP_METHODS), choices=list(HEATMAP_METHODS))
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    spec = get_model(args.model)
    module = None
    if args.weights:
        module = light_squeezenet()
        module.load_state_dict({k: v.float() for k, v in torch.load(args.weights, weights_only=True).items()})
        pre = dataclasses.replace(spec.transforms, **({"normalize": args.normalize} if args.normalize else {}))
        spec = dataclasses.replace(spec, weights=None, transforms=pre)
    clf = SliceClassifier(spec, device="cpu", tta=False, module=module, backend="torch")
    if (args.data is None) == (args.shortcuts is None):
        raise SystemExit("give --data (lesion masks) or --shortcuts (a COVID-CT-style folder)")
    results = {}
    if args.shortcuts is not None:
        split = read_split(args.shortcuts, args.split, spec.classes)
        paths = [p for p, y in zip(split.paths, split.labels) if spec.classes[y] == spec.positive_class]
        for method in args.methods:
            r = results[method] = shortcut_check(clf, paths, method)
            print(f"{method:9s} heat inside the patient {r['heat_inside_body']:.2f} of the total; maximum outside "
                  f"it in {r['peaks_outside_body']:.2f} of {r['images']} {spec.positive_class} images")
        if args.json:
            args.json.write_text(json.dumps({"data": str(args.shortcuts), "split": args.split, "results": results}))
        return
    pairs = load_pairs(args.data, args.rot90)
    for method in args.methods:
        r = results[method] = evaluate(clf, pairs, method)
        print(f"{method:9s} peak in a lesion {r['peak_in_lesion']:.2f}, within 4 % of the width "
              f"{r['peak_near_lesion']:.2f}, median heat in lesions / rest of the body {r['median_enrichment']:.2f} "
              f"({r['images']} images; mean P(COVID) {r['mean_probability']:.2f}, "
              f"called COVID {r['called_positive']:.2f})")
    if args.json:
        args.json.write_text(json.dumps({"data": str(args.data), "weights": args.weights or "shipped",
                                         "rot90": args.rot90, "results": results}, indent=1))


if __name__ == "__main__":
    main()

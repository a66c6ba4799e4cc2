"""Evaluation: a DCN cross-validation run's held-out Dice at each image's own resolution, as segment-lesions
produces masks and as Inf-Net reports (masks compared at the ground truth's size).

    python -m tests.benchmarks.eval_dcn_folds RUN [--data ../shared/data/covid-semiseg-infnet/train]
                                              [--card resources/models/dcn.card.json]

RUN is a `lunglens train dcn --cv` output folder (RUN/fold<k>/dcn.pt and dcn.card.json). Each fold's
weights segment that fold's held-out slices (the split is the one the fold was trained with: folds and seed
from its card) exactly as `LesionSegmenter.segment_images` does (aspect-kept square fit, probabilities
resized back, argmax), once plain and once averaged over the four flips. Per fold: mean per-slice Dice of
lesion (GGO or consolidation) vs background, and per-class Dice pooled over the fold's pixels. With --card,
the figures are stored under cross_validation["native"] of that card. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from inference.models.dcn import DCN, averaged_outputs, load_slice_network
from inference.training.datasets.lesion_slices import kfold, read_lesion_slices
from inference.transforms.fit import SquareFit


def segment(model: DCN, image: np.ndarray, size: int, tta: bool) -> np.ndarray:
    """Labels (uint8, the image's size) as `LesionSegmenter.segment_images`."""
    fit = SquareFit.of(image.shape, (1.0, 1.0), size)
    x = fit.to_model(torch.from_numpy(np.asarray(image, np.float32))[None, None])
    with torch.no_grad():
        return fit.from_model(averaged_outputs(model, x, tta=tta).seg).argmax(1)[0].numpy().astype(np.uint8)


def fold_scores(preds: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
    dice = []
    for p, t in zip(preds, targets):
        a, b = p > 0, t > 0
        den = int(a.sum() + b.sum())
        dice.append(2 * int((a & b).sum()) / den if den else 1.0)
    out = {"dice_mean": float(np.mean(dice))}
    for k, name in ((1, "ggo"), (2, "consolidation")):
        inter = sum(int(((p == k) & (t == k)).sum()) for p, t in zip(preds, targets))
        den = sum(int((p == k).sum() + (t == k).sum()) for p, t in zip(preds, targets))
        out[f"dice_{name}"] = 2 * inter / den if den else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a `lunglens train dcn --cv` output folder")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3]
                                          / "shared/data/covid-semiseg-infnet/train"))
    ap.add_argument("--card", help="store the figures under cross_validation['native'] in this model card")
    args = ap.parse_args(argv)
    run = Path(args.run)
    data = read_lesion_slices(args.data)
    folds = sorted(run.glob("fold*/dcn.card.json"))
    if not folds:
        raise SystemExit(f"{run}: no fold<k>/dcn.card.json (not a --cv output folder)")
    per_fold: dict[str, list[dict[str, float]]] = {"plain": [], "flips": []}
    for card_path in folds:
        cfg = json.loads(card_path.read_text())["config"]
        _, val = kfold(len(data), cfg["folds"], cfg["seed"])[cfg["fold"]]
        model = DCN(base=cfg["base"])
        state = torch.load(card_path.with_name("dcn.pt"), weights_only=True, map_location="cpu")
        load_slice_network(model, {k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        model.eval()
        targets = [np.asarray(data.slices[i].labels) for i in val]
        for key, tta in (("plain", False), ("flips", True)):
            preds = [segment(model, data.slices[i].image, cfg["size"], tta) for i in val]
            per_fold[key].append(fold_scores(preds, targets))
        print(f"fold {cfg['fold']}: plain {per_fold['plain'][-1]}  flips {per_fold['flips'][-1]}", flush=True)
    native: dict[str, object] = {"note": "Dice at each image's own resolution via the segment-lesions path; "
                                         "mean over folds of the fold's mean per-slice Dice; per-class pooled "
                                         "over each fold's pixels, then averaged over folds"}
    for key, rows in per_fold.items():
        for metric in ("dice_mean", "dice_ggo", "dice_consolidation"):
            vals = np.array([r[metric] for r in rows])
            native[f"{key}_{metric}"] = round(float(vals.mean()), 4)
        native[f"{key}_dice_sd"] = round(float(np.std([r["dice_mean"] for r in rows])), 4)
        native[f"{key}_per_fold"] = [round(r["dice_mean"], 4) for r in rows]
    print(json.dumps(native, indent=2))
    if args.card:
        card = json.loads(Path(args.card).read_text())
        card.setdefault("cross_validation", {})["native"] = native
        Path(args.card).write_text(json.dumps(card, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

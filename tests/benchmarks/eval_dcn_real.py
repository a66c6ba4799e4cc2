"""Evaluation: lesion segmenters and screening models on the real COVID-CT-MD volumes, against the
radiologists' slice labels.

    python -m tests.benchmarks.eval_dcn_real [--data ../shared/data/covid-ct-md] [--models dcn light-squeezenet]
                                             [--json out.json] [--card resources/models/dcn.card.json]

Per case (COVID-19, community-acquired pneumonia, normal) and model: the case probability, lesion volume
(GGO and consolidation apart where the model tells them apart), involvement, and against the slice labels
(`slice-labels.json`: index 0 is the most superior slice): the share of lesion voxels lying in slices
labelled infected (slice-level precision), the share of labelled slices with any lesion voxel (slice
recall), and the ROC AUC of the per-slice probabilities (labelled infected vs not, slices with lung). The
normal case carries no labels: all its slices count as not infected. Lungs: the threshold method.
With `--card`, the table is stored under "real_volumes" in the model card (JSON). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from inference.core.metrics import roc_auc
from inference.lungs.select import segment_lung_labels
from inference.screening.run import load_model, run
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume

CASES = ("P001-covid", "cap001-pneumonia", "normal001")


def infected_mask(labels: dict, case: str, n: int) -> np.ndarray:
    """(n,) bool on the canonical grid (index 0 = most inferior): the slices the radiologists labelled infected."""
    out = np.zeros(n, bool)
    for i in labels.get(case, {}).get("infected_slices", []):
        out[n - 1 - int(i)] = True  # the labels count from the most superior slice down
    return out


def evaluate_case(pred, infected: np.ndarray, spacing) -> dict[str, object]:
    lesion = pred.lesion_mask > 0
    per_slice = lesion.sum(axis=(1, 2))
    total = int(per_slice.sum())
    row: dict[str, object] = {
        "probability": round(pred.positive_probability, 4),
        "lesion_ml": round(float(total * np.prod(spacing) / 1000), 2),
        "involvement_percent": round(pred.involvement_percent(), 2),
        "lesion_in_labelled_slices": round(float(per_slice[infected].sum() / total), 4) if total else None,
        "labelled_slices_with_lesion": (round(float((per_slice[infected] > 0).mean()), 4) if infected.any()
                                        else None),
        "slices_with_lesion": int((per_slice > 0).sum()),
        "seconds": round(pred.timings.get("total", 0.0), 1),
    }
    if pred.lesion_ml_by_kind:
        row["lesion_ml_by_kind"] = {k: round(v, 2) for k, v in pred.lesion_ml_by_kind.items()}
    if len(pred.slice_indices):
        y = infected[pred.slice_indices]
        row["slice_auc"] = round(roc_auc(y, pred.slice_probabilities), 4) if 0 < y.sum() < len(y) else None
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data/covid-ct-md"))
    ap.add_argument("--models", nargs="+", default=["dcn", "light-squeezenet"])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--card", help="store the results under 'real_volumes' in this model card (the first model's)")
    args = ap.parse_args(argv)
    data = Path(args.data)
    labels = json.loads((data / "slice-labels.json").read_text())
    models = {name: load_model(name, device="cpu") for name in args.models}
    results: dict[str, dict] = {name: {} for name in args.models}
    pooled: dict[str, tuple[list, list]] = {name: ([], []) for name in args.models}
    for case in CASES:
        t = time.perf_counter()
        vol = to_canonical(open_volume(data / case))
        hu, spacing = vol.array, vol.spacing
        lungs = segment_lung_labels(hu, spacing, "threshold")
        infected = infected_mask(labels, case, hu.shape[0])
        print(f"{case}: {hu.shape}, {infected.sum()} labelled slices, loaded + lungs in "
              f"{time.perf_counter() - t:.1f} s")
        for name, model in models.items():
            pred = run(hu, spacing, model, lung_labels=lungs)
            results[name][case] = evaluate_case(pred, infected, spacing)
            if len(pred.slice_indices):
                pooled[name][0].extend(infected[pred.slice_indices])
                pooled[name][1].extend(pred.slice_probabilities)
            print(f"  {name}: {json.dumps(results[name][case])}")
    for name, (y, p) in pooled.items():
        if y:
            results[name]["pooled_slice_auc"] = round(roc_auc(np.array(y), np.array(p)), 4)
    print("\n| model | case | P(COVID) | lesion mL | in labelled slices | labelled slices hit | slice AUC |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for case in CASES:
            r = results[name][case]
            print(f"| {name} | {case} | {r['probability']:.3f} | {r['lesion_ml']:.1f} | "
                  f"{_pct(r['lesion_in_labelled_slices'])} | {_pct(r['labelled_slices_with_lesion'])} | "
                  f"{r.get('slice_auc')} |")
        print(f"| {name} | pooled slice AUC | | | | | {results[name].get('pooled_slice_auc')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.card:
        card = json.loads(Path(args.card).read_text())
        card["real_volumes"] = {"data": "COVID-CT-MD sample (P001 COVID-19, cap001 pneumonia, normal001), "
                                        "radiologists' slice labels; lungs by the threshold method",
                                "results": results[args.models[0]]}
        Path(args.card).write_text(json.dumps(card, indent=2))
    return 0


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


if __name__ == "__main__":
    raise SystemExit(main())

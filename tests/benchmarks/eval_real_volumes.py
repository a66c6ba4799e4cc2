"""Evaluation: every screening model on real CT volumes, against the radiologists' slice and lobe labels.

    python -m tests.benchmarks.eval_real_volumes [--data ../shared/data] [--models dcn light-squeezenet]
                                                 [--json out.json] [--card resources/models/dcn.card.json]

Cases: the three COVID-CT-MD volumes (P001 COVID-19, cap001 community-acquired pneumonia, normal001;
`covid-ct-md/slice-labels.json`: index 0 is the most superior slice) and two non-COVID CTs (the 4DCT
phase, the TCIA lung-cancer series), which count as having no infected slice. Per case: whether the
screening rules assess it (`inference.screening.assess`), and per model: the case probability, lesion
volume (GGO and consolidation apart where the model tells them apart), involvement, the share of lesion
voxels lying in slices labelled infected (slice-level precision), the share of those lying also in a lung
with a labelled lobe (left: LLL, LUL; right: RLL, RML, RUL), the share of labelled slices with any lesion
voxel (slice recall), and the ROC AUC of the per-slice probabilities (labelled infected vs not, slices the
model classified), per case and pooled over all cases, and the same AUC for the lesion share of each slice's
lung as the slice score. A slice model whose card fuses its probability with the lesion share
(`inference.screening.fusion`) is also run with the fusion off ("classifier alone"). Lungs: the threshold
method. With `--card`, the first model's figures go under "real_volumes" in that model card. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from inference.core.metrics import roc_auc
from inference.inferers.slice import SliceClassifier
from inference.lungs.select import segment_lung_labels
from inference.screening.assess import lung_problem, voxel_problem
from inference.screening.config import ScreeningConfig
from inference.screening.pipelines.slice import slice_fusion
from inference.screening.run import load_model, run
from inference.training.datasets.real_slices import slice_labels
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume

LABELLED = ("covid-ct-md/P001-covid", "covid-ct-md/cap001-pneumonia", "covid-ct-md/normal001")
NON_COVID = ("chest-ct-4dct-phase00", "lung-pet-ct-dx-A0002")


def slice_truth(labels: dict, case: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """On the canonical grid (index 0 = most inferior): (n,) bool slices labelled infected, and (n, 3) bool
    [unused, left, right] lungs with a labelled lobe."""
    return slice_labels(labels.get(case, {}), n)


def evaluate_case(pred, infected: np.ndarray, sides: np.ndarray, spacing) -> dict[str, object]:
    lesion = pred.lesion_mask > 0
    per_slice = lesion.sum(axis=(1, 2))
    total = int(per_slice.sum())
    lungs = pred.lung_mask
    in_side = sum(int((lesion[k] & sides[k][lungs[k]]).sum()) for k in np.flatnonzero(infected)) if total else 0
    row: dict[str, object] = {
        "probability": round(pred.positive_probability, 4),
        "lesion_ml": round(float(total * np.prod(spacing) / 1000), 2),
        "involvement_percent": round(pred.involvement_percent(), 2),
        "severity": pred.severity,
        "lesion_in_labelled_slices": round(float(per_slice[infected].sum() / total), 4) if total else None,
        "lesion_in_labelled_lungs": round(in_side / total, 4) if total and sides.any() else None,
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
    with_lung = np.flatnonzero((lungs > 0).any(axis=(1, 2)))
    y = infected[with_lung]
    if 0 < y.sum() < len(y):  # the lesion share of each slice's lung as a slice score
        share = per_slice[with_lung] / np.maximum((lungs[with_lung] > 0).sum(axis=(1, 2)), 1)
        row["lesion_share_slice_auc"] = round(roc_auc(y, share), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data"))
    ap.add_argument("--models", nargs="+", default=["dcn", "light-squeezenet"])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--card", help="store the first model's results under 'real_volumes' in this model card")
    args = ap.parse_args(argv)
    data = Path(args.data)
    labels = json.loads((data / "covid-ct-md" / "slice-labels.json").read_text())
    runs = {}  # row name -> (model, screening config)
    for name in args.models:
        model = load_model(name, device="cpu")
        runs[name] = (model, ScreeningConfig())
        if isinstance(model, SliceClassifier) and slice_fusion(model, ScreeningConfig(), "dcn") is not None:
            runs[f"{name} (classifier alone)"] = (model, ScreeningConfig(slice_fusion=False))
    results: dict[str, dict] = {name: {} for name in runs}
    pooled: dict[str, tuple[list, list]] = {name: ([], []) for name in runs}
    status: dict[str, str] = {}
    for rel in LABELLED + NON_COVID:
        case = Path(rel).name
        t = time.perf_counter()
        vol = to_canonical(open_volume(data / rel))
        hu, spacing = vol.array, vol.spacing
        lungs = segment_lung_labels(hu, spacing, "threshold")
        status[case] = voxel_problem(hu) or lung_problem(lungs, spacing, vol.metadata.body_part) or "ok"
        infected, sides = slice_truth(labels, case, hu.shape[0])
        print(f"{case}: {hu.shape}, {infected.sum()} labelled slices, status {status[case]}, loaded + lungs in "
              f"{time.perf_counter() - t:.1f} s")
        for name, (model, cfg) in runs.items():
            pred = run(hu, spacing, model, lung_labels=lungs, config=cfg)
            results[name][case] = evaluate_case(pred, infected, sides, spacing)
            if len(pred.slice_indices):
                pooled[name][0].extend(infected[pred.slice_indices])
                pooled[name][1].extend(pred.slice_probabilities)
            print(f"  {name}: {json.dumps(results[name][case])}")
    for name, (y, p) in pooled.items():
        if y:
            results[name]["pooled_slice_auc"] = round(roc_auc(np.array(y), np.array(p)), 4)
    cases = [Path(rel).name for rel in LABELLED + NON_COVID]
    print("\n| model | case | P(COVID) | lesion mL | in labelled slices | in labelled lungs | labelled slices hit "
          "| slice AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name in runs:
        for case in cases:
            r = results[name][case]
            print(f"| {name} | {case} | {r['probability']:.3f} | {r['lesion_ml']:.1f} | "
                  f"{percent(r['lesion_in_labelled_slices'])} | {percent(r['lesion_in_labelled_lungs'])} | "
                  f"{percent(r['labelled_slices_with_lesion'])} | {r.get('slice_auc')} |")
        print(f"| {name} | pooled slice AUC | | | | | | {results[name].get('pooled_slice_auc')} |")
    out = {"status": status, **results}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.card:
        card = json.loads(Path(args.card).read_text())
        card["real_volumes"] = {"data": "COVID-CT-MD sample (P001 COVID-19, cap001 pneumonia, normal001) with the "
                                        "radiologists' slice and lobe labels, and two non-COVID CTs (4DCT phase, "
                                        "TCIA lung cancer); lungs by the threshold method",
                                "results": results[args.models[0]]}
        Path(args.card).write_text(json.dumps(card, indent=2))
    return 0


def percent(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f} %"


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation: COVID-CT-Mask-Net's lesion instances on real CT volumes, against the radiologists' slice labels.

    python -m tests.benchmarks.eval_mask_net_volumes [--data ../shared/data] [--weights FILE] [--min-score 0.5]
                                                     [--json out.json] [--card FILE]

The cases of `eval_real_volumes` (COVID-CT-MD P001 COVID-19, cap001 pneumonia, normal001 with the radiologists'
slice labels; the 4DCT phase and the TCIA lung-cancer series as non-COVID), lungs by the threshold method. Per
case: lesion volume (union of the instances scoring at least --min-score), instance count, the share of lesion
voxels in labelled slices, the share of labelled slices with a lesion, the ROC AUC of each slice's lesion share
of its lung (labelled infected vs not), and the time per case and per slice on this machine. DCN's lesion mask
runs beside it as the baseline (same lungs, same run). `--weights` measures a trained file before it is
registered. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from inference.core.metrics import roc_auc
from inference.inferers.instances import DEFAULT_MIN_SCORE, InstanceSegmenter
from inference.inferers.lesions import LesionSegmenter
from inference.lungs.select import segment_lung_labels
from inference.models._api import load_weights, sha256_of
from inference.models.covid_ct_mask_net import lesion_segmentation_model
from tests.benchmarks.eval_real_volumes import LABELLED, NON_COVID, percent, slice_truth
from viewer.core.reorient import to_canonical
from viewer.io.volumes import open_volume


def lesion_row(lesion: np.ndarray, lungs: np.ndarray, infected: np.ndarray, spacing, seconds: float) -> dict:
    per_slice = lesion.sum(axis=(1, 2))
    total = int(per_slice.sum())
    with_lung = np.flatnonzero(lungs.any(axis=(1, 2)))
    row: dict[str, object] = {
        "lesion_ml": round(float(total * np.prod(spacing) / 1000), 2),
        "lesion_in_labelled_slices": round(float(per_slice[infected].sum() / total), 4) if total else None,
        "labelled_slices_with_lesion": round(float((per_slice[infected] > 0).mean()), 4) if infected.any() else None,
        "seconds": round(seconds, 2),
        "seconds_per_slice": round(seconds / max(1, len(with_lung)), 3),
    }
    y = infected[with_lung]
    if 0 < y.sum() < len(y):
        share = per_slice[with_lung] / np.maximum(lungs[with_lung].sum(axis=(1, 2)), 1)
        row["lesion_share_slice_auc"] = round(roc_auc(y, share), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared/data"))
    ap.add_argument("--weights", help="a trained covid-ct-mask-net-seg.pt (default: the shipped weights)")
    ap.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--card", help="store the results under 'real_volumes' in this model card")
    args = ap.parse_args(argv)
    data = Path(args.data)
    labels = json.loads((data / "covid-ct-md" / "slice-labels.json").read_text())
    module = None
    if args.weights:
        module = lesion_segmentation_model()
        module.load_state_dict(load_weights(args.weights, sha256_of(Path(args.weights))))
    seg = InstanceSegmenter(device="cpu", module=module)
    dcn = LesionSegmenter("dcn", device="cpu", precision="auto")
    results: dict[str, dict] = {"covid-ct-mask-net": {}, "dcn": {}}
    pooled: dict[str, tuple[list, list]] = {name: ([], []) for name in results}
    for rel in LABELLED + NON_COVID:
        case = Path(rel).name
        vol = to_canonical(open_volume(data / rel))
        hu, spacing = vol.array, vol.spacing
        lungs = segment_lung_labels(hu, spacing, "threshold") > 0
        infected, _ = slice_truth(labels, case, hu.shape[0])
        with torch.inference_mode():
            t = time.perf_counter()
            found = seg.segment_volume(hu, spacing, lungs, min_score=args.min_score)
            t_mask_net = time.perf_counter() - t
            t = time.perf_counter()
            dcn_lesion = dcn.segment_labels(hu, spacing, lungs) > 0
            t_dcn = time.perf_counter() - t
        for name, lesion, seconds in (("covid-ct-mask-net", found.labels > 0, t_mask_net),
                                      ("dcn", dcn_lesion, t_dcn)):
            row = lesion_row(lesion, lungs, infected, spacing, seconds)
            if name == "covid-ct-mask-net":
                row["instances"] = len(found.records)
            results[name][case] = row
            with_lung = np.flatnonzero(lungs.any(axis=(1, 2)))
            lung_px = np.maximum(lungs[with_lung].sum(axis=(1, 2)), 1)
            pooled[name][0].extend(infected[with_lung])
            pooled[name][1].extend(lesion[with_lung].sum(axis=(1, 2)) / lung_px)
            print(f"{case} {name}: {json.dumps(row)}", flush=True)
    for name, (y, p) in pooled.items():
        results[name]["pooled_lesion_share_slice_auc"] = round(roc_auc(np.array(y), np.array(p)), 4)
    print("\n| model | case | lesion mL | in labelled slices | labelled slices hit | lesion-share slice AUC "
          "| instances | s per slice |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        for case in (Path(rel).name for rel in LABELLED + NON_COVID):
            r = rows[case]
            print(f"| {name} | {case} | {r['lesion_ml']:.1f} | {percent(r['lesion_in_labelled_slices'])} | "
                  f"{percent(r['labelled_slices_with_lesion'])} | {r.get('lesion_share_slice_auc', '-')} | "
                  f"{r.get('instances', '-')} | {r['seconds_per_slice']:.3f} |")
        print(f"| {name} | pooled | | | | {rows['pooled_lesion_share_slice_auc']} | | |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.card:
        card = json.loads(Path(args.card).read_text())
        card["real_volumes"] = {"data": "COVID-CT-MD sample (P001 COVID-19, cap001 pneumonia, normal001) with the "
                                        "radiologists' slice labels, and two non-COVID CTs (4DCT phase, TCIA lung "
                                        "cancer); lungs by the threshold method; never used in training",
                                "min_score": args.min_score, "results": results}
        Path(args.card).write_text(json.dumps(card, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluation: DeCoVNet weights on a held-out labelled volume set (classification and lesion localization).

    python -m tests.benchmarks.eval_decovnet --data DIR [--weights FILE] [--card FILE]

`--data` is a set in `inference.training.datasets.volumes`'s layout that training never saw (for the shipped weights:
a phantom set written by `app.services.volume_dataset.write_phantom_dataset` with another seed). Pre-processing
comes from the registry entry (size, z spacing, window). Prints accuracy, sensitivity, specificity,
precision, F1, ROC AUC and the hit rate (the localized lesion's centre inside a labelled lesion box:
over the COVID cases called positive, as in the paper, and over all COVID cases); with `--card`, stores
them under "held_out_test" in the model card (JSON). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from inference.core.metrics import binary_metrics
from inference.models._api import get_model
from inference.models.decovnet import decovnet
from inference.training.datasets.volumes import find_cases
from inference.training.recipes.decovnet import compact, localization_hits, predict_probabilities, prepare_case
from inference.transforms.volume import VolumePreprocessor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="held-out set (inference.training.datasets.volumes layout)")
    ap.add_argument("--weights", help="weights file (default: the shipped, hash-checked ones)")
    ap.add_argument("--card", help="model card (JSON) to store the results in")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_model("decovnet")
    if args.weights:
        model = decovnet()
        model.load_state_dict({k: v.float() for k, v in torch.load(args.weights, weights_only=True).items()})
    else:
        model = spec.build(pretrained=True)
    model = model.float().eval()
    pre = spec.preprocessing
    pp = VolumePreprocessor(tuple(pre["ct_window_hu"]), tuple(pre["size"]), float(pre["z_spacing_mm"]))
    cases = find_cases(args.data)
    t0 = time.time()
    inputs = [compact(prepare_case(c, pp)) for c in cases]
    labels = np.array([c.label for c in cases])
    device = torch.device("cpu")
    scores = predict_probabilities(model, inputs, device)
    metrics = binary_metrics(labels, scores)
    loc = localization_hits(model, cases, inputs, scores, device)
    result = {"dataset": str(Path(args.data).name), "cases": int(len(cases)), "covid": int(labels.sum()),
              **{k: round(float(metrics[k]), 4) for k in ("accuracy", "sensitivity", "specificity", "precision",
                                                          "f1", "roc_auc")},
              "localization": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in loc.items()},
              "seconds": round(time.time() - t0, 1)}
    print(json.dumps(result, indent=2))
    if args.card:
        path = Path(args.card)
        card = json.loads(path.read_text())
        info = {}
        data_json = Path(args.data) / "dataset.json"
        if data_json.is_file():
            gen = json.loads(data_json.read_text()).get("generator", {})
            info = {"generator_seed": gen.get("seed"), "generator": "app.services.volume_dataset.write_phantom_dataset"}
        card["held_out_test"] = {**result, **info}
        path.write_text(json.dumps(card, indent=2))
        print(f"stored in {path}")


if __name__ == "__main__":
    main()

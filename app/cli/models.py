"""`lunglens models`: the registered AI models with their cards."""

from __future__ import annotations

import argparse
import json

from app.cli.exits import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the registered AI models with their cards",
                              description="Every registered model: input kind, whether it screens a CT (a probability "
                                          "per case), parameter count, training data, metrics.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inference.models import list_models

    rows = []
    for spec in list_models():
        card = spec.card()
        rows.append({
            "name": spec.name, "input": spec.input_kind, "screens": spec.screens, "parameters": spec.parameter_count(),
            "classes": list(spec.classes), "weights": spec.weights.file if spec.weights else None,
            "training_data": (card.get("training_data") or {}).get("dataset", "no shipped weights"),
            "validation_metrics": card.get("validation_metrics", {}), "description": spec.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in r["validation_metrics"].items()) or "-"
        role = ", screens a CT" if r["screens"] else ""
        print(f"{r['name']}  ({r['input']}{role}, {r['parameters'] / 1e6:.2f} M parameters)\n  {r['description']}\n"
              f"  weights: {r['weights'] or 'none shipped'}; trained on: {r['training_data']}\n"
              f"  validation: {metrics}")
    return EXIT_OK

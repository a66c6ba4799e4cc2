"""`lunglens screen`: screen every CT series under the paths; a ranked worklist plus masks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.exits import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, fail
from app.cli.options import add_runtime_options
from app.cli.progress_bar import ProgressBar
from inference.core.choices import (
    AGGREGATIONS,
    DEFAULT_SCREENING_MODEL,
    HEATMAP_METHODS,
    LESION_SOURCES,
    LUNG_METHODS,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "screen", help="screen every CT series under the paths; ranked worklist + masks",
        description="Find every CT series under PATH..., screen each with a model, and write "
                    "results.csv / results.json ranked by probability, plus per case the heat "
                    "map, lesion mask and lung mask as NIfTI on the CT grid. A bad series is "
                    "reported and skipped. Not for clinical diagnosis.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", default=DEFAULT_SCREENING_MODEL,
                   help="a registered screening model: slice (light-squeezenet), volume (decovnet) or lesion "
                        "segmenter with a case probability (dcn); see `lunglens models`")
    p.add_argument("--lungs", default="threshold", choices=LUNG_METHODS,
                   help="lung mask method: threshold (classic, no weights) or unet (the 2D lung U-Net's weights)")
    p.add_argument("--lesions", default=LESION_SOURCES[0], choices=LESION_SOURCES,
                   help="the lesion mask of slice and volume models: dcn (DCN's segmentation branch, trained on "
                        "radiologists' masks; the default, about 40 ms per lung slice on 2 CPU cores) or hu-rule "
                        "(-750..+50 HU inside the heat map: fast, misses most real lesions)")
    add_runtime_options(p)
    p.add_argument("--aggregation", default="top-k", choices=AGGREGATIONS,
                   help="how slice probabilities become the case probability (slice models; a volume model "
                        "gives one probability per case): top-k, the mean of the k most probable slices (k = max(3, "
                        "10 %% of them)); max; mean")
    p.add_argument("--heatmap", choices=HEATMAP_METHODS,
                   help="slice models' heat map (default: the model's best, grad-cam for light-squeezenet): "
                        "grad-cam (at Fire 2; sits on lesions; torch backend only) or cam (the paper's class "
                        "activation map; coarser)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="screen cases in N local processes (at most one per CPU core; default 1)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run each case as a task on an existing Dask cluster (scheduler address, e.g. "
                        "tcp://10.0.0.5:8786); every worker must see the input paths and --out at the same paths")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.services.batch_screening import screen
    from inference.core.types import InferenceError
    from inference.screening.assess import STATUS_OK
    from inference.screening.run import ScreeningConfig, screening_models
    from viewer.dicom.scan import skipped_lines

    if args.workers < 1:
        return fail(f"--workers {args.workers}: at least 1", EXIT_USAGE)
    models = [m.name for m in screening_models()]
    if args.model not in models:
        return fail(f"--model {args.model!r}: choose one of: {', '.join(models)}", EXIT_USAGE)
    bar = ProgressBar("screening")
    try:
        config = ScreeningConfig(aggregation=args.aggregation, heatmap=args.heatmap,
                                 lesion_model=None if args.lesions == "hu-rule" else args.lesions)
        rows, errors = screen(args.paths, args.out, model=args.model, device=args.device, backend=args.backend,
                              precision=args.precision, config=config, lungs=args.lungs, progress=bar,
                              workers=args.workers, cluster=args.cluster,
                              log=lambda m: (bar.close(), print(m, file=sys.stderr)))
    except (InferenceError, ValueError) as exc:
        bar.close()
        return fail(str(exc))
    bar.close()
    from inference.models import get_model

    ok = [r for r in rows if r["status"] == STATUS_OK]
    warning = get_model(args.model).card().get("case_probability_warning")
    if warning and ok:
        print(f"warning: {warning}", file=sys.stderr)
    for row in ok:
        print(f"{row['rank']:3d}  p={row['probability']:.3f}  involvement {row['involvement_percent']:5.1f} %  "
              f"severity {row['severity']:2d}  {row['case']}")
    for row in rows[len(ok):]:
        print(f"  -  {row['status']}  {row['case']} ({row['source']})")
    for line in skipped_lines([(e["source"], e["error"]) for e in errors]):  # one line per reason
        print(line, file=sys.stderr)
    if not rows:
        return fail(f"no image series found under {', '.join(args.paths)}"
                    + (f" ({len(errors)} problem(s), see above)" if errors else ""))
    print(f"wrote {Path(args.out) / 'results.csv'}: {len(ok)} case(s) screened, {len(rows) - len(ok)} not "
          f"assessable, {len(errors)} other problem(s)")
    return EXIT_OK if ok else EXIT_BAD_INPUT

"""`lunglens report`: a PDF or HTML report of a `lunglens screen` results folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.cli.exits import EXIT_OK, EXIT_USAGE, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="a PDF or HTML report of screening results",
        description="Write a report of a `lunglens screen --out` folder: the ranked batch, then per case the "
                    "patient and study, the probability against the operating threshold, involvement per lung "
                    "and zone, severity, key images, the per-slice probability plot, timings and the model card "
                    "summary. Research use only: not for clinical diagnosis.")
    p.add_argument("results", metavar="RESULTS_DIR")
    p.add_argument("--out", required=True, metavar="FILE.pdf|FILE.html")
    p.add_argument("--case", metavar="ID", help="only this case (its name in results.csv)")
    p.add_argument("--threshold", type=float, default=0.5, help="operating threshold of P(COVID-19) (default 0.5)")
    p.add_argument("--high", type=float, default=0.7, help="high band at or above this (default 0.7)")
    p.add_argument("--low", type=float, default=0.3, help="low band below this (default 0.3)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.reports.content import Bands, ReportError, load_report

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".pdf", ".html", ".htm"):
        return fail(f"--out {args.out}: name a .pdf or .html file", EXIT_USAGE)
    try:
        report = load_report(args.results, args.case, Bands(args.low, args.high, args.threshold))
        if suffix == ".pdf":
            from app.reports.pdf import write_pdf

            write_pdf(report, out)
        else:
            from app.reports.html import write_html

            write_html(report, out)
    except ReportError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{out}: cannot write ({exc.strerror or exc})")
    assessed = sum(s.assessed for s in report.cases)
    print(f"wrote {out}: {len(report.cases)} case(s), {assessed} assessed")
    return EXIT_OK

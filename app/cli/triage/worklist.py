"""`lunglens worklist`: the triage worklist of folders or a PACS query, in a window or on the terminal."""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.exits import EXIT_OK, EXIT_USAGE, fail
from inference.core.choices import DEFAULT_SCREENING_MODEL, LESION_SOURCES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "worklist", help="triage worklist: screen folders or a PACS query, ranked by probability",
        description="Queue every CT series under the folders (or the studies a PACS query finds), screen them in "
                    "the background and rank them by probability. Results are cached (a restart does not redo "
                    "work; a changed series or model does). Opens the worklist window unless --headless. "
                    "Not for clinical diagnosis.")
    p.add_argument("paths", nargs="*", metavar="FOLDER")
    p.add_argument("--model", default=DEFAULT_SCREENING_MODEL)
    p.add_argument("--lesions", default=LESION_SOURCES[0], choices=LESION_SOURCES,
                   help="lesion mask source, as for `screen` (dcn, the default, or the fast hu-rule)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                   help="screening processes (at most one per core; default: the number of cores)")
    p.add_argument("--node", help="query this configured PACS node (`lunglens pacs nodes add`)")
    p.add_argument("--patient-id", default="")
    p.add_argument("--patient-name", default="")
    p.add_argument("--date", default="", help="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    p.add_argument("--modality", default="CT")
    p.add_argument("--move-dest", metavar="AET", help="retrieve by C-MOVE to this AE title instead of C-GET")
    p.add_argument("--listen-port", type=int, default=11113)
    p.add_argument("--headless", action="store_true", help="no window: screen, print the ranked list, exit")
    p.add_argument("--out", metavar="DIR", help="also export the results folder (CSV/JSON, masks; for `report`)")
    p.add_argument("--screenshot", metavar="FILE.png", help="save the window once every case is done, then exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        return fail(f"--workers {args.workers}: at least 1", EXIT_USAGE)
    if args.out and not args.headless:
        return fail("--out exports after a --headless run; in the window use Export CSV... or Report...",
                    EXIT_USAGE)
    try:
        paths = gather_paths(args)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    if not args.headless:
        from app.gui.launch import run_worklist

        return run_worklist(paths, options=_options(args), workers=args.workers, screenshot=args.screenshot)
    from app.services.worklist import DONE, Worklist

    worklist = Worklist(_options(args))
    worklist.add(paths)
    for p in worklist.problems:
        print(f"skipped: {p['source']}: {p['error']}", file=sys.stderr)
    total = len(worklist.items)
    if not total:
        return fail("no series found")

    def update(item) -> None:
        if item.status != "running":
            print(f"{item.case.name}: {item.status}", file=sys.stderr, flush=True)

    worklist.run(args.workers, on_update=update)
    for n, item in enumerate(worklist.ranked(), start=1):
        p = item.probability
        line = f"p={p:.3f}" if p is not None else item.status
        extra = (f"  involvement {item.row.get('involvement_percent', 0):5.1f} %  severity "
                 f"{item.row.get('severity', 0):2d}") if item.status == DONE else ""
        print(f"{n:3d}  {line}{extra}  {item.row.get('patient_id', '')}  {item.case.name}")
    if args.out:
        print(f"exported {worklist.export(args.out)}")
    return EXIT_OK


def _options(args: argparse.Namespace):
    from app.services.cases import ScreenOptions
    from inference.screening.config import ScreeningConfig

    return ScreenOptions(model=args.model, config=ScreeningConfig(
        lesion_model=None if args.lesions == "hu-rule" else args.lesions))


def gather_paths(args: argparse.Namespace) -> list[str]:
    """The folders named, plus the local folders of the studies the PACS query finds."""
    paths = list(args.paths)
    if args.node:
        from app.pacs.nodes import PacsError, load_nodes
        from app.pacs.query import StudyQuery
        from app.services.pacs_source import retrieve_studies

        nodes = load_nodes()
        if args.node not in nodes:
            raise PacsError(f"no PACS node named {args.node!r}; configured: {', '.join(sorted(nodes)) or 'none'}")
        query = StudyQuery(args.patient_id, args.patient_name, args.date, args.modality)
        problems: list[dict] = []
        paths += [str(f) for f in retrieve_studies(nodes[args.node], query, move_dest=args.move_dest,
                                                   listen_port=args.listen_port, problems=problems,
                                                   log=lambda m: print(m, file=sys.stderr))]
        if not paths and problems:
            raise ValueError(f"no study could be retrieved: {problems[0]['error']}")
    elif not paths:
        raise ValueError("name folders to screen, or --node NAME to query a PACS")
    return paths

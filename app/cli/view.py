"""`lunglens view`: the viewer, on a path if given."""

from __future__ import annotations

import argparse
import os

from app.cli.exits import fail
from app.cli.options import add_view_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view", help="open the viewer (on PATH if given)",
        description="Open the LungLens viewer on a DICOM folder or file, or a NIfTI/NRRD/MHA file. "
                    "With --screenshot, load, render every view (3D included), save a PNG of the "
                    "window and exit.")
    p.add_argument("path", nargs="?", help="DICOM folder or file, or a volume file")
    p.add_argument("--series", metavar="ID", help="series id when PATH holds several")
    p.add_argument("--overlay", metavar="MASK", action="append", default=[],
                   help="a label/mask volume to show over the CT, or a float map (such as `lunglens screen`'s "
                        "heatmap.nii.gz) as a heat map (repeatable); a refused one is reported (exit code 1 "
                        "with --screenshot) and the CT still shown")
    p.add_argument("--compare", metavar="PATH2",
                   help="a second series (a prior study) shown beside the main view, scrolling with it: same "
                        "patient position, or the volumes' centres aligned when the frames of reference differ")
    p.add_argument("--compare-series", metavar="ID", help="series id when PATH2 holds several")
    add_view_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.gui.launch import run_viewer

    for given in (args.path, args.compare):
        if given is not None and not os.path.exists(given):
            return fail(f"{given}: no such file or folder")
    if args.compare and args.path is None:
        return fail("--compare needs PATH: the series to compare it with")
    return run_viewer(args.path, series=args.series, overlays=args.overlay, screenshot=args.screenshot,
                      layout=args.layout, preset=args.preset, analyze=args.analyze,
                      model=args.model, slab=args.slab, projection=args.projection,
                      compare=args.compare, compare_series=args.compare_series, oblique=args.oblique)

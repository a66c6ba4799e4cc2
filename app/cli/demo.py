"""`lunglens demo`: the built-in demo study (a synthetic chest CT with lesions)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.cli.exits import EXIT_OK
from app.cli.options import add_view_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the built-in demo study (a synthetic chest CT with lesions)",
                              description="Write the demo study (a synthetic chest-CT phantom with COVID-like "
                                          "lesions, as a DICOM series plus NIfTI ground-truth masks) to --out, "
                                          "or, without --out, open it.")
    p.add_argument("--out", metavar="DIR", help="write the demo study into DIR and exit")
    add_view_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from viewer.synthetic.demo_study import write_demo_study

    if args.out:
        out = write_demo_study(Path(args.out))
        print(f"wrote the demo study to {out}")
        return EXIT_OK
    path = demo_study_path()
    from app.gui.launch import run_viewer

    return run_viewer(str(path / "dicom"), overlays=[str(path / "masks" / "labels.nii.gz")],
                      screenshot=args.screenshot, layout=args.layout, preset=args.preset, analyze=args.analyze,
                      model=args.model, slab=args.slab, projection=args.projection,
                      oblique=args.oblique)


def demo_study_path() -> Path:
    """The demo study in the user's cache folder, written on first use."""
    from platformdirs import user_cache_dir

    from viewer.synthetic.demo_study import DEMO_VERSION, write_demo_study

    root = Path(user_cache_dir("lunglens")) / f"demo-{DEMO_VERSION}"
    if not (root / "complete").exists():
        print(f"writing the demo study to {root} (first use)", file=sys.stderr)
        write_demo_study(root)
    return root

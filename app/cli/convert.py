"""`lunglens convert`: a series or volume file written as NIfTI/NRRD/MHA in HU."""

from __future__ import annotations

import argparse
import sys
import time

from app.cli.exits import EXIT_OK, EXIT_USAGE, fail
from app.cli.progress_bar import ProgressBar


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="load a series and write it as NIfTI/NRRD/MHA in HU",
                              description="Load the series at PATH and write it in HU with its geometry to OUT "
                                          "(.nii.gz, .nii, .nrrd or .mha).")
    p.add_argument("path", help="DICOM folder or file, or a volume file")
    p.add_argument("out", help="output file: .nii.gz, .nii, .nrrd or .mha")
    p.add_argument("--series", metavar="ID", help="series id (or unique prefix, or series number) "
                                                  "when PATH holds several; see `lunglens info`")
    p.add_argument("--allow-non-ct", action="store_true", help="convert non-CT modalities too")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from viewer.io.atomic_files import WriteError
    from viewer.io.volumes import open_volume, volume_suffix, write_volume

    if volume_suffix(args.out) is None or volume_suffix(args.out) in (".mhd", ".nhdr"):
        return fail(f"{args.out}: output must end in .nii.gz, .nii, .nrrd or .mha", EXIT_USAGE)
    bar = None if args.quiet else ProgressBar("loading")
    t0 = time.perf_counter()
    try:  # LoadError and LoadCancelled are reported by `app.cli.main`
        vol = open_volume(args.path, series=args.series, progress=bar, allow_non_ct=args.allow_non_ct)
    finally:
        if bar:
            bar.close()
    for w in vol.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        out = write_volume(vol, args.out)
    except WriteError as exc:
        return fail(str(exc))
    except (OSError, RuntimeError, ValueError) as exc:
        return fail(f"{args.out}: cannot write: {exc}")
    print(f"wrote {out}: {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]} voxels, spacing "
          f"{vol.spacing[2]:.4g} x {vol.spacing[1]:.4g} x {vol.spacing[0]:.4g} mm "
          f"({time.perf_counter() - t0:.2f} s)")
    return EXIT_OK

"""The `lunglens` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.progress_bar import ProgressBar

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lunglens")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lunglens",
        description="LungLens: chest-CT viewer with on-device AI screening. Not for clinical diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"lunglens {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="list the series in a folder or file, with warnings",
                       description="List the DICOM series (or volume file) at PATH: description, modality, "
                                   "slice count, size, spacing and warnings; skipped files with the reason.")
    p.add_argument("path", help="DICOM folder (searched recursively), DICOM file, or NIfTI/NRRD/MHA file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("convert", help="load a series and write it as NIfTI/NRRD/MHA in HU",
                       description="Load the series at PATH and write it in HU with its geometry to OUT "
                                   "(.nii.gz, .nii, .nrrd or .mha).")
    p.add_argument("path", help="DICOM folder or file, or a volume file")
    p.add_argument("out", help="output file: .nii.gz, .nii, .nrrd or .mha")
    p.add_argument("--series", metavar="ID", help="series id (or unique prefix, or series number) "
                                                  "when PATH holds several; see `lunglens info`")
    p.add_argument("--allow-non-ct", action="store_true", help="convert non-CT modalities too")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("view", help="open the viewer (on PATH if given)",
                       description="Open the LungLens viewer on a DICOM folder or file, or a NIfTI/NRRD/MHA file. "
                                   "With --screenshot, load, render every view (3D included), save a PNG of the "
                                   "window and exit.")
    p.add_argument("path", nargs="?", help="DICOM folder or file, or a volume file")
    p.add_argument("--series", metavar="ID", help="series id when PATH holds several")
    p.add_argument("--overlay", metavar="MASK", action="append", default=[],
                   help="a label/mask volume to show over the CT (repeatable)")
    _add_view_options(p)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("demo", help="the built-in demo study (a synthetic chest CT with lesions)",
                       description="Write the demo study (a synthetic chest-CT phantom with COVID-like lesions, "
                                   "as a DICOM series plus NIfTI ground-truth masks) to --out, or, without "
                                   "--out, open it.")
    p.add_argument("--out", metavar="DIR", help="write the demo study into DIR and exit")
    _add_view_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _add_view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--screenshot", metavar="FILE.png", help="save a screenshot of the window and exit")
    p.add_argument("--layout", choices=("2x2", "1x1", "1+3"), help="view layout")
    p.add_argument("--preset", help="window preset: lung, mediastinum, bone, soft tissue, or one of yours")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if argv is None and len(sys.argv) == 1:  # plain `lunglens`: the viewer
            from app.gui import run_viewer

            return run_viewer()
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lunglens: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"lunglens: error: {message}", file=sys.stderr)
    return code


# -- info ---------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from viewer.dicom_scan import scan
    from viewer.errors import LoadError
    from viewer.io import read_volume_file, volume_suffix

    path = args.path
    if not os.path.exists(path):
        return _fail(f"{path}: no such file or folder")
    if os.path.isfile(path) and volume_suffix(path):
        try:
            vol = read_volume_file(path)
        except LoadError as exc:
            return _fail(str(exc))
        row = {
            "path": path, "shape_zyx": list(vol.shape),
            "spacing_zyx_mm": [round(s, 4) for s in vol.spacing],
            "origin_lps_mm": [round(o, 3) for o in vol.origin], "orientation": vol.orientation_code(),
            "dtype": str(vol.array.dtype), "min": float(vol.array.min()), "max": float(vol.array.max()),
            "warnings": list(vol.warnings),
        }
        if args.json:
            print(json.dumps({"volume": row}, indent=2))
        else:
            for k, v in row.items():
                print(f"{k:16} {v}")
        return EXIT_OK
    result = scan(path)
    data = {
        "root": path,
        "files": result.n_files,
        "seconds": round(result.seconds, 3),
        "series": [s.summary() for s in result.series],
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(format_series_table(result))
    if not result.series:
        return _fail(f"{path}: no DICOM image series found in {result.n_files} file(s)")
    return EXIT_OK


def format_series_table(result) -> str:
    """A plain-text table of the series in a ScanResult, then warnings and skipped files."""
    rows = [("#", "series id", "modality", "orient.", "slices", "size", "spacing mm (z/y/x)", "description")]
    for i, s in enumerate(result.series, 1):
        ps = s.pixel_spacing
        sp = s.slice_spacing
        spacing = f"{sp:.3g}/{ps[0]:.3g}/{ps[1]:.3g}" if ps and sp else (f"?/{ps[0]:.3g}/{ps[1]:.3g}" if ps else "?")
        sid = s.id if len(s.id) <= 40 else "..." + s.id[-37:]
        rows.append((str(i), sid, s.modality or "?", s.orientation, str(s.n_slices),
                     f"{s.size[1]}x{s.size[0]}", spacing, s.description or ""))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = [f"{result.n_files} file(s) in {result.root}, {len(result.series)} series, "
             f"{len(result.skipped)} skipped ({result.seconds:.2f} s)"]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    for i, s in enumerate(result.series, 1):
        for w in s.warnings:
            lines.append(f"warning: series {i}: {w}")
    if result.skipped:
        counts: dict[str, list[str]] = {}
        for p, reason in result.skipped:
            counts.setdefault(reason, []).append(p)
        for reason, paths in counts.items():
            more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
            lines.append(f"skipped: {paths[0]}{more}: {reason}")
    return "\n".join(lines)


# -- convert ------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from viewer.errors import LoadCancelled, LoadError
    from viewer.io import open_volume, volume_suffix, write_volume

    if volume_suffix(args.out) is None or volume_suffix(args.out) in (".mhd", ".nhdr"):
        return _fail(f"{args.out}: output must end in .nii.gz, .nii, .nrrd or .mha", EXIT_USAGE)
    bar = None if args.quiet else ProgressBar("loading")
    t0 = time.perf_counter()
    try:
        vol = open_volume(args.path, series=args.series, progress=bar, allow_non_ct=args.allow_non_ct)
    except LoadCancelled:
        return _fail("cancelled", EXIT_CANCELLED)
    except LoadError as exc:
        return _fail(str(exc))
    finally:
        if bar:
            bar.close()
    for w in vol.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        out = write_volume(vol, args.out)
    except (OSError, RuntimeError, ValueError) as exc:
        return _fail(f"{args.out}: cannot write: {exc}")
    print(f"wrote {out}: {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]} voxels, spacing "
          f"{vol.spacing[2]:.4g} x {vol.spacing[1]:.4g} x {vol.spacing[0]:.4g} mm "
          f"({time.perf_counter() - t0:.2f} s)")
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from viewer.demo_study import write_demo_study

    if args.out:
        out = write_demo_study(Path(args.out))
        print(f"wrote the demo study to {out}")
        return EXIT_OK
    path = demo_study_path()
    from app.gui import run_viewer

    return run_viewer(str(path / "dicom"), overlays=[str(path / "masks" / "labels.nii.gz")],
                      screenshot=args.screenshot, layout=args.layout, preset=args.preset)


def demo_study_path() -> Path:
    """The demo study in the user's cache folder, written on first use."""
    from platformdirs import user_cache_dir

    from viewer.demo_study import DEMO_VERSION, write_demo_study

    root = Path(user_cache_dir("lunglens")) / f"demo-{DEMO_VERSION}"
    if not (root / "complete").exists():
        print(f"writing the demo study to {root} (first use)", file=sys.stderr)
        write_demo_study(root)
    return root


def cmd_view(args: argparse.Namespace) -> int:
    from app.gui import run_viewer

    if args.path is not None and not os.path.exists(args.path):
        return _fail(f"{args.path}: no such file or folder")
    return run_viewer(args.path, series=args.series, overlays=args.overlay, screenshot=args.screenshot,
                      layout=args.layout, preset=args.preset)


if __name__ == "__main__":
    sys.exit(main())

"""`lunglens info` (the series in a folder or file, with warnings) and `lunglens tags` (every DICOM attribute of
one file of a series, the ones that differ between its slices marked): looking at what is in a path."""

from __future__ import annotations

import argparse
import json
import os
import sys

from app.cli.exits import EXIT_OK, fail


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="list the series in a folder or file, with warnings",
                              description="List the DICOM series (or volume file) at PATH: description, modality, "
                                          "slice count, size, spacing and warnings; skipped files with the reason.")
    p.add_argument("path", help="DICOM folder (searched recursively), DICOM file, or NIfTI/NRRD/MHA file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
    t = subparsers.add_parser(
        "tags", help="list the DICOM tags of a series' file (tags that differ between slices marked *)",
        description="Print (gggg,eeee), keyword, VR and value of every attribute of one file of the DICOM series "
                    "at PATH (the first slice by default), sequences expanded and private tags included; a * marks "
                    "the attributes whose values differ between the series' files or that some files lack.")
    t.add_argument("path", help="DICOM file, or folder (searched recursively) holding the series")
    t.add_argument("--slice", type=int, metavar="N", help="the N-th slice (0-based, in the order the viewer stacks "
                   "them: along the slice normal)")
    t.add_argument("--series", metavar="ID", help="series id when PATH holds several (see `lunglens info`)")
    t.add_argument("--filter", default="", metavar="TEXT", help="only tags whose tag, keyword or value holds TEXT")
    t.add_argument("--json", action="store_true", help="print JSON instead of text")
    t.set_defaults(func=run_tags)


def run_tags(args: argparse.Namespace) -> int:
    """`lunglens tags`: the rows of `viewer.dicom.tags.series_tags`, as text or JSON."""
    from viewer.dicom.scan import scan
    from viewer.dicom.tags import filter_rows, format_rows, series_tags

    path = args.path
    if not os.path.exists(path):
        return fail(f"{path}: no such file or folder")
    if os.path.isfile(path):
        files, series_id = [path], ""
    else:
        result = scan(path)
        if not result.series:
            return fail(f"{path}: no DICOM image series found in {result.n_files} file(s)")
        chosen = [s for s in result.series if args.series in (None, s.id)]
        if not chosen:
            return fail(f"{path}: no series {args.series!r}; series here: {', '.join(s.id for s in result.series)}")
        files, series_id = [h.path for h in chosen[0].headers], chosen[0].id
        if args.series is None and len(result.series) > 1:
            print(f"{len(result.series)} series in {path}: showing {series_id} (choose with --series)",
                  file=sys.stderr)
    shown, rows = series_tags(files, args.slice)  # a LoadError is reported by `app.cli.main`
    rows = filter_rows(rows, args.filter)
    if args.json:
        print(json.dumps({"file": shown, "series": series_id, "slices": len(files),
                          "tags": [r.as_dict() for r in rows]}, indent=2))
    else:
        print(f"# {shown} ({len(files)} file(s) in the series; * differs between them)")
        print(format_rows(rows))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from viewer.dicom.scan import scan
    from viewer.io.volumes import read_volume_file, volume_suffix

    path = args.path
    if not os.path.exists(path):
        return fail(f"{path}: no such file or folder")
    if os.path.isfile(path) and volume_suffix(path):
        vol = read_volume_file(path)  # a LoadError is reported by `app.cli.main`
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
        return fail(f"{path}: no DICOM image series found in {result.n_files} file(s)")
    return EXIT_OK


def format_series_table(result) -> str:
    """A plain-text table of the series in a ScanResult, then warnings and skipped files."""
    from viewer.dicom.scan import skipped_lines

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
    lines.extend(skipped_lines(result.skipped))
    return "\n".join(lines)

"""`lunglens mask`: label-map tools (`mask convert`: NIfTI <-> DICOM SEG)."""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.exits import EXIT_OK, EXIT_USAGE, fail

MASK_NIFTI = (".nii.gz", ".nii")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("mask", help="label-map tools: convert between NIfTI and DICOM SEG",
                              description="Label-map (annotation mask) tools.")
    mask_sub = p.add_subparsers(dest="mask_command", metavar="MASK_COMMAND")
    p.set_defaults(func=run, print_mask_help=p.print_help)
    m = mask_sub.add_parser(
        "convert", help="convert a label map between NIfTI (.nii/.nii.gz + sidecar) and DICOM SEG (.dcm)",
        description="Convert a label map IN to OUT against its CT (--reference). NIfTI label maps (.nii.gz, "
                    ".nii) keep their LungLens sidecar <stem>.labels.json (names, colours, provenance, and the name "
                    "of the touched mask <stem>.touched.<id>.nii.gz); a DICOM SEG (.dcm) gets one segment per "
                    "label and references the CT series' images, so reading or writing one needs the CT as a "
                    "DICOM series. The mask must lie on the CT's voxels (a flipped or re-ordered grid of the "
                    "same voxels is re-indexed exactly); a mask on other voxels of the same space is refused "
                    "unless --resample is given.")
    m.add_argument("input", metavar="IN", help="label map: .nii.gz/.nii, or a DICOM SEG file")
    m.add_argument("out", metavar="OUT", help="output: .nii.gz/.nii or .dcm (DICOM SEG)")
    m.add_argument("--reference", required=True, metavar="SERIES_DIR_OR_VOLUME",
                   help="the CT the mask was drawn on: a DICOM folder or file (needed for SEG), or a volume file")
    m.add_argument("--series", metavar="UID", help="series id when the reference folder holds several")
    m.add_argument("--allow-other-series", action="store_true",
                   help="accept a NIfTI whose sidecar names another series of the same geometry, or a SEG "
                        "that references another series of the same frame of reference")
    m.add_argument("--resample", action="store_true",
                   help="resample (nearest neighbour) a NIfTI mask drawn on other voxels of the same space "
                        "onto the CT's grid; without it such a mask is refused")


def run(args: argparse.Namespace) -> int:
    """Run the mask sub-command `args` names; without one, print the group's help (exit code 2)."""
    if args.mask_command == "convert":
        return run_convert(args)
    args.print_mask_help()
    return EXIT_USAGE


def run_convert(args: argparse.Namespace) -> int:
    from viewer.io.atomic_files import WriteError
    from viewer.io.volumes import open_volume, volume_suffix

    out_lower = args.out.lower()
    if not out_lower.endswith((*MASK_NIFTI, ".dcm")):
        return fail(f"{args.out}: output must end in .nii.gz, .nii or .dcm (DICOM SEG)", EXIT_USAGE)
    if not os.path.isfile(args.input):
        return fail(f"{args.input}: no such file")
    in_nifti = args.input.lower().endswith(MASK_NIFTI)
    if not in_nifti and volume_suffix(args.input):
        return fail(f"{args.input}: label maps are read from NIfTI (.nii.gz, .nii) or DICOM SEG files")
    out_seg = out_lower.endswith(".dcm")
    if not os.path.exists(args.reference):
        return fail(f"{args.reference}: no such file or folder")
    if (out_seg or not in_nifti) and volume_suffix(args.reference):
        return fail(f"{args.reference}: DICOM SEG is read and written against the CT's DICOM series; "
                    "--reference must be the DICOM folder, not a volume file")
    vol = open_volume(args.reference, series=args.series)  # LoadError, LoadCancelled: reported by `app.cli.main`
    for w in vol.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        sources = None
        if out_seg or not in_nifti:
            from viewer.io.seg import load_source_datasets

            sources = load_source_datasets(args.reference, vol, series=args.series)
        from viewer.io.label_maps import read_label_map

        notes: list[str] = []
        labels, table, touched = read_label_map(args.input, vol, sources=sources,
                                                allow_other_series=args.allow_other_series,
                                                allow_resample=args.resample, warnings=notes)
        for note in notes:
            print(f"warning: {note}", file=sys.stderr)
    except ValueError as exc:
        return fail(str(exc))
    try:
        if out_seg:
            from viewer.io.seg import write_dicom_seg

            write_dicom_seg(args.out, labels, table, sources or [], reference=vol)
        else:
            from viewer.io.nifti_labels import save_label_map_nifti

            save_label_map_nifti(args.out, labels, table, vol, touched)
    except (ValueError, WriteError) as exc:
        return fail(str(exc))
    except (OSError, RuntimeError) as exc:
        return fail(f"{args.out}: cannot write: {exc}")
    import numpy as np

    counts = np.bincount(labels.ravel(), minlength=256)
    listing = ", ".join(f"{i.name} ({int(counts[i.value])} voxels)" for i in table)
    print(f"wrote {args.out}: {len(table)} label(s): {listing}")
    if touched is not None and out_seg:
        print("note: the touched mask is not kept in a DICOM SEG", file=sys.stderr)
    return EXIT_OK

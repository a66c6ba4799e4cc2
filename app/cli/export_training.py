"""`lunglens export-training`: corrected label maps and their CTs collected into a training set."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.cli.exits import EXIT_OK, fail

DESCRIPTION = """\
Search DIR for corrected label maps and write a training set to --out.

Found in DIR (recursively):
  case folders: labels.nii.gz / labels.nii / mask.nii.gz / mask.nii (with its LungLens
    sidecar if any) or a DICOM SEG labels.dcm / seg.dcm, next to the CT: ct.nii.gz,
    ct.nii, image.nii.gz, or a ct/ or dicom/ folder with the DICOM series; the case is
    named after the folder;
  loose masks: any *.nii.gz / *.nii whose sidecar <stem>.labels.json names its CT
    (provenance.ct_path, as the viewer saves it); the case is named <stem>.

Written to OUT:
  OUT/<case>/ct.nii.gz, labels.nii.gz, labels.json (label table + provenance),
  touched.nii.gz (voxels a person changed, when known), and OUT/dataset.json listing
  the cases, label names with case and voxel counts, and the skipped inputs.
A case that cannot be read is reported and skipped; so is a DICOM SEG under another name
than labels.dcm / seg.dcm. A mask whose touched mask is empty (nobody changed a voxel:
the AI's mask, saved as it was) is exported with a warning."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-training", help="collect corrected label maps and their CTs into a training set",
                              formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION)
    p.add_argument("dir", metavar="DIR", help="folder searched for cases")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder of the training set")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.services.training_export import export_training

    if not os.path.isdir(args.dir):
        return fail(f"{args.dir}: no such folder")
    rows, skipped = export_training(args.dir, args.out, log=print)
    for item in skipped:
        print(f"skipped: {item['path']}: {item['error']}", file=sys.stderr)
    if not rows:
        return fail(f"{args.dir}: no exportable case found (see `lunglens export-training --help` for the layout)")
    print(f"wrote {Path(args.out) / 'dataset.json'}: {len(rows)} case(s), {len(skipped)} skipped")
    return EXIT_OK

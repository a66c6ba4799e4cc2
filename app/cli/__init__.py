"""The `lunglens` command line."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.cli.progress_bar import ProgressBar

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130
LUNG_METHODS = ("threshold", "unet")  # inference.lungs.threshold.LUNG_METHODS, without importing it for --help
SLICE_NORMALIZATIONS = ("per-image", "fixed")  # inference.transforms.common.NORMALIZATIONS, likewise
HEATMAP_METHODS = ("grad-cam", "cam")  # inference.inferers.slice.HEATMAP_METHODS, likewise
PRECISIONS = ("auto", "fp32", "mixed")  # inference.core.device.PRECISIONS, likewise


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
                   help="a label/mask volume to show over the CT, or a float map (such as `lunglens screen`'s "
                        "heatmap.nii.gz) as a heat map (repeatable); a refused one is reported (exit code 1 "
                        "with --screenshot) and the CT still shown")
    _add_view_options(p)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("models", help="list the registered AI models with their cards",
                       description="Every registered model: input kind, parameter count, training data, metrics.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("predict", help="classify 2D slice images (PNG/JPG) with a slice model",
                       description="Classify slice images; writes a CSV with header path,predicted,p_covid, in one "
                                   "step at the end (an interrupted run leaves the previous CSV as it was). An "
                                   "image that cannot be read (unreadable, truncated, too large, not an image) "
                                   "is reported on stderr and skipped. Exit code: 0 when every image was "
                                   "classified, 1 when some were skipped (the CSV holds the others) or none "
                                   "could be read (no CSV is written then).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, or folders searched recursively")
    p.add_argument("--model", default="light-squeezenet", help="a registered slice model (see `lunglens models`)")
    p.add_argument("--out", required=True, metavar="CSV", help="output CSV file")
    _add_runtime_options(p)
    p.add_argument("--no-tta", action="store_true", help="no mirror test-time augmentation")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("screen", help="screen every CT series under the paths; ranked worklist + masks",
                       description="Find every CT series under PATH..., screen each with a model, and write "
                                   "results.csv / results.json ranked by probability, plus per case the heat "
                                   "map, lesion mask and lung mask as NIfTI on the CT grid. A bad series is "
                                   "reported and skipped. Not for clinical diagnosis.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--model", default="light-squeezenet",
                   help="a registered slice or volume model, e.g. light-squeezenet or decovnet (see `lunglens models`)")
    p.add_argument("--lungs", default="threshold", choices=LUNG_METHODS,
                   help="lung mask method: threshold (classic, no weights) or unet (the 2D lung U-Net's weights)")
    _add_runtime_options(p)
    p.add_argument("--aggregation", default="top-k mean", choices=("top-k mean", "max", "mean"),
                   help="how slice probabilities become the case probability (slice models; a volume model "
                        "gives one probability per case)")
    p.add_argument("--heatmap", choices=HEATMAP_METHODS,
                   help="slice models' heat map (default: the model's best, grad-cam for light-squeezenet): "
                        "grad-cam (at Fire 2; sits on lesions; torch backend only) or cam (the paper's class "
                        "activation map; coarser)")
    p.set_defaults(func=cmd_screen)

    p = sub.add_parser("train", help="train a model on a labelled folder",
                       description="Train a slice model on a folder laid out like COVID-CT (CT_<CLASS>/ image "
                                   "folders and Data-split/<CLASS>/<split>CT_<CLASS>.txt lists); writes weights, "
                                   "a model card with validation metrics, and the validation ROC curve. "
                                   "`lunglens train decovnet --help` and `lunglens train lung-unet --help` show "
                                   "the volume model's and the lung U-Net's own options.")
    p.add_argument("model", choices=("light-squeezenet", "decovnet", "lung-unet"), help="model to train")
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--normalize", choices=SLICE_NORMALIZATIONS, default="per-image",
                   help="input normalization: per-image (zero mean, unit sd; for images of mixed windowing, the "
                        "shipped model's) or fixed (one affine map: CT slices in a fixed window; heat maps sit "
                        "on lesions more, measured on phantoms)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("mask", help="label-map tools: convert between NIfTI and DICOM SEG",
                       description="Label-map (annotation mask) tools.")
    mask_sub = p.add_subparsers(dest="mask_command", metavar="MASK_COMMAND")
    p.set_defaults(func=_usage_of(p))
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
    m.set_defaults(func=cmd_mask_convert)

    p = sub.add_parser(
        "export-training", help="collect corrected label maps and their CTs into a training set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search DIR for corrected label maps and write a training set to --out.\n\n"
                    "Found in DIR (recursively):\n"
                    "  case folders: labels.nii.gz / labels.nii / mask.nii.gz / mask.nii (with its LungLens\n"
                    "    sidecar if any) or a DICOM SEG labels.dcm / seg.dcm, next to the CT: ct.nii.gz,\n"
                    "    ct.nii, image.nii.gz, or a ct/ or dicom/ folder with the DICOM series; the case is\n"
                    "    named after the folder;\n"
                    "  loose masks: any *.nii.gz / *.nii whose sidecar <stem>.labels.json names its CT\n"
                    "    (provenance.ct_path, as the viewer saves it); the case is named <stem>.\n\n"
                    "Written to OUT:\n"
                    "  OUT/<case>/ct.nii.gz, labels.nii.gz, labels.json (label table + provenance),\n"
                    "  touched.nii.gz (voxels a person changed, when known), and OUT/dataset.json listing\n"
                    "  the cases, label names with case and voxel counts, and the skipped inputs.\n"
                    "A case that cannot be read is reported and skipped.")
    p.add_argument("dir", metavar="DIR", help="folder searched for cases")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder of the training set")
    p.set_defaults(func=cmd_export_training)

    p = sub.add_parser("demo", help="the built-in demo study (a synthetic chest CT with lesions)",
                       description="Write the demo study (a synthetic chest-CT phantom with COVID-like lesions, "
                                   "as a DICOM series plus NIfTI ground-truth masks) to --out, or, without "
                                   "--out, open it.")
    p.add_argument("--out", metavar="DIR", help="write the demo study into DIR and exit")
    _add_view_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def _usage_of(parser: argparse.ArgumentParser):
    """A command function that prints `parser`'s help and returns EXIT_USAGE (a group without its sub-command)."""

    def usage(args: argparse.Namespace) -> int:
        parser.print_help()
        return EXIT_USAGE

    return usage


def _add_view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--screenshot", metavar="FILE.png", help="save a screenshot of the window and exit")
    p.add_argument("--layout", choices=("2x2", "1x1", "1+3"), help="view layout")
    p.add_argument("--preset", help="window preset: lung, mediastinum, bone, soft tissue, or one of yours")
    p.add_argument("--analyze", action="store_true", help="run the AI (AI > Analyze) once the CT is loaded")


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--device and --backend, shared by the commands that run a model."""
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"),
                   help="auto = torch (the reference); onnx = ONNX Runtime on the CPU (same probabilities "
                        "within 1e-4; measured no faster for the light SqueezeNet on 2 cores)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="slice models: auto = mixed precision on CUDA where a probe shows it moves no probability "
                        "by more than 1e-3, else float32; fp32; mixed (float16 on CUDA, bfloat16 on the CPU, "
                        "still only if the probe agrees)")


def main(argv: Sequence[str] | None = None) -> int:
    argv_list = list(sys.argv[1:] if argv is None else argv)
    if argv_list[:2] == ["train", "decovnet"]:
        # the volume trainer has its own options (see `lunglens train decovnet --help`)
        from inference.training.recipes.decovnet import main as train_volume

        return _train_with_reader(train_volume, argv_list[2:])
    if argv_list[:2] == ["train", "lung-unet"]:
        return _train_lung_unet(argv_list[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if argv is None and len(sys.argv) == 1:  # plain `lunglens`: the viewer
            from app.gui.launch import run_viewer

            return run_viewer()
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("lunglens: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


def _train_lung_unet(argv: list[str]) -> int:
    """`lunglens train lung-unet` (options: `--help`)."""
    from inference.training.recipes.lung_unet import main as train_lung_unet

    return _train_with_reader(train_lung_unet, argv)


def _train_with_reader(trainer, argv: list[str]) -> int:
    """Run a trainer's `main(argv, reader=...)` with the viewer's reader: DICOM series and volume files,
    canonical (z, y, x) = (S, P, L)."""
    from app.services.volume_dataset import read_ct
    from viewer.core.errors import LoadError

    try:
        return trainer(argv, reader=read_ct)
    except LoadError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("lunglens: cancelled", file=sys.stderr)
        return EXIT_CANCELLED


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"lunglens: error: {message}", file=sys.stderr)
    return code


# -- info ---------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    from viewer.core.errors import LoadError
    from viewer.dicom.scan import scan
    from viewer.io.volumes import read_volume_file, volume_suffix

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


# -- convert ------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from viewer.core.errors import LoadCancelled, LoadError
    from viewer.io.atomic_files import WriteError
    from viewer.io.volumes import open_volume, volume_suffix, write_volume

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
    except WriteError as exc:
        return _fail(str(exc))
    except (OSError, RuntimeError, ValueError) as exc:
        return _fail(f"{args.out}: cannot write: {exc}")
    print(f"wrote {out}: {vol.shape[2]}x{vol.shape[1]}x{vol.shape[0]} voxels, spacing "
          f"{vol.spacing[2]:.4g} x {vol.spacing[1]:.4g} x {vol.spacing[0]:.4g} mm "
          f"({time.perf_counter() - t0:.2f} s)")
    return EXIT_OK


# -- mask convert, export-training -------------------------------------------------------------

MASK_NIFTI = (".nii.gz", ".nii")


def cmd_mask_convert(args: argparse.Namespace) -> int:
    from viewer.core.errors import LoadCancelled, LoadError
    from viewer.io.atomic_files import WriteError
    from viewer.io.volumes import open_volume, volume_suffix

    out_lower = args.out.lower()
    if not out_lower.endswith((*MASK_NIFTI, ".dcm")):
        return _fail(f"{args.out}: output must end in .nii.gz, .nii or .dcm (DICOM SEG)", EXIT_USAGE)
    if not os.path.isfile(args.input):
        return _fail(f"{args.input}: no such file")
    in_nifti = args.input.lower().endswith(MASK_NIFTI)
    if not in_nifti and volume_suffix(args.input):
        return _fail(f"{args.input}: label maps are read from NIfTI (.nii.gz, .nii) or DICOM SEG files")
    out_seg = out_lower.endswith(".dcm")
    if not os.path.exists(args.reference):
        return _fail(f"{args.reference}: no such file or folder")
    if (out_seg or not in_nifti) and volume_suffix(args.reference):
        return _fail(f"{args.reference}: DICOM SEG is read and written against the CT's DICOM series; "
                     "--reference must be the DICOM folder, not a volume file")
    try:
        vol = open_volume(args.reference, series=args.series)
    except LoadCancelled:
        return _fail("cancelled", EXIT_CANCELLED)
    except LoadError as exc:
        return _fail(str(exc))
    for w in vol.warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        sources = None
        if out_seg or not in_nifti:
            from viewer.io.seg import load_source_datasets

            sources = load_source_datasets(args.reference, vol, series=args.series)
        touched = None
        if in_nifti:
            from viewer.io.nifti_labels import load_label_map_nifti

            notes: list[str] = []
            labels, table, touched = load_label_map_nifti(args.input, vol,
                                                          allow_other_series=args.allow_other_series,
                                                          allow_resample=args.resample, warnings=notes)
            for note in notes:
                print(f"warning: {note}", file=sys.stderr)
        else:
            from viewer.io.seg import read_dicom_seg

            labels, table = read_dicom_seg(args.input, vol, sources, allow_other_series=args.allow_other_series)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        if out_seg:
            from viewer.io.seg import write_dicom_seg

            write_dicom_seg(args.out, labels, table, sources or [], reference=vol)
        else:
            from viewer.io.nifti_labels import save_label_map_nifti

            save_label_map_nifti(args.out, labels, table, vol, touched)
    except (ValueError, WriteError) as exc:
        return _fail(str(exc))
    except (OSError, RuntimeError) as exc:
        return _fail(f"{args.out}: cannot write: {exc}")
    import numpy as np

    counts = np.bincount(labels.ravel(), minlength=256)
    listing = ", ".join(f"{i.name} ({int(counts[i.value])} voxels)" for i in table)
    print(f"wrote {args.out}: {len(table)} label(s): {listing}")
    if touched is not None and out_seg:
        print("note: the touched mask is not kept in a DICOM SEG", file=sys.stderr)
    return EXIT_OK


def cmd_export_training(args: argparse.Namespace) -> int:
    from app.services.training_export import export_training

    if not os.path.isdir(args.dir):
        return _fail(f"{args.dir}: no such folder")
    rows, skipped = export_training(args.dir, args.out, log=print)
    for item in skipped:
        print(f"skipped: {item['path']}: {item['error']}", file=sys.stderr)
    if not rows:
        return _fail(f"{args.dir}: no exportable case found (see `lunglens export-training --help` for the layout)")
    print(f"wrote {Path(args.out) / 'dataset.json'}: {len(rows)} case(s), {len(skipped)} skipped")
    return EXIT_OK


# -- demo ---------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from viewer.synthetic.demo_study import write_demo_study

    if args.out:
        out = write_demo_study(Path(args.out))
        print(f"wrote the demo study to {out}")
        return EXIT_OK
    path = demo_study_path()
    from app.gui.launch import run_viewer

    return run_viewer(str(path / "dicom"), overlays=[str(path / "masks" / "labels.nii.gz")],
                      screenshot=args.screenshot, layout=args.layout, preset=args.preset, analyze=args.analyze)


def demo_study_path() -> Path:
    """The demo study in the user's cache folder, written on first use."""
    from platformdirs import user_cache_dir

    from viewer.synthetic.demo_study import DEMO_VERSION, write_demo_study

    root = Path(user_cache_dir("lunglens")) / f"demo-{DEMO_VERSION}"
    if not (root / "complete").exists():
        print(f"writing the demo study to {root} (first use)", file=sys.stderr)
        write_demo_study(root)
    return root


def cmd_models(args: argparse.Namespace) -> int:
    from inference.models._api import list_models

    rows = []
    for spec in list_models():
        card = spec.card()
        rows.append({
            "name": spec.name, "input": spec.input_kind, "parameters": spec.parameter_count(),
            "classes": list(spec.classes), "weights": spec.weights.file if spec.weights else None,
            "training_data": (card.get("training_data") or {}).get("dataset", "no shipped weights"),
            "validation_metrics": card.get("validation_metrics", {}), "description": spec.description,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in r["validation_metrics"].items()) or "-"
        print(f"{r['name']}  ({r['input']}, {r['parameters'] / 1e6:.2f} M parameters)\n  {r['description']}\n"
              f"  weights: {r['weights'] or 'none shipped'}; trained on: {r['training_data']}\n"
              f"  validation: {metrics}")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    import csv

    from inference.inferers.slice import SliceClassifier
    from inference.models._api import WeightsError, get_model
    from inference.transforms.images import ImageError, find_images, load_grey
    from viewer.io.atomic_files import WriteError, write_bytes_atomic

    missing = [p for p in args.inputs if not os.path.exists(p)]
    if missing:
        return _fail(f"{missing[0]}: no such file or folder")
    try:
        spec = get_model(args.model)
        clf = SliceClassifier(spec, device=args.device, tta=not args.no_tta, backend=args.backend,
                              precision=args.precision)
    except (KeyError, ValueError, WeightsError) as exc:
        return _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc))
    paths = find_images(args.inputs)
    if not paths:
        return _fail("no images found (PNG, JPG, BMP or TIFF)")
    bar = ProgressBar("predicting")
    failed = 0
    positive = spec.positive_class
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "predicted", f"p_{positive.lower()}"])
    for i in range(0, len(paths), 16):
        chunk, images = [], []
        for p in paths[i : i + 16]:
            try:
                images.append(load_grey(p))
                chunk.append(p)
            except ImageError as exc:
                failed += 1
                bar.close()
                print(f"lunglens: skipped: {exc}", file=sys.stderr)
        if images:
            pred = clf.predict_arrays(images)
            for p, name, prob in zip(chunk, pred.predicted(), pred.positive):
                writer.writerow([str(p), name, f"{prob:.6f}"])
        bar(min(1.0, (i + 16) / len(paths)), f"{min(i + 16, len(paths))}/{len(paths)} images")
    bar.close()
    if failed == len(paths):
        return _fail(f"none of the {len(paths)} image(s) could be read; {args.out} not written")
    try:
        write_bytes_atomic(args.out, buffer.getvalue().encode("utf-8"))
    except OSError as exc:
        return _fail(str(exc) if isinstance(exc, WriteError) else f"{args.out}: cannot write: {exc}")
    print(f"wrote {args.out}: {len(paths) - failed} image(s) classified with {spec.name} on {clf.engine}"
          + (f"; {failed} skipped (see above)" if failed else ""))
    return EXIT_BAD_INPUT if failed else EXIT_OK


def cmd_screen(args: argparse.Namespace) -> int:
    from app.services.batch_screening import screen
    from inference.models._api import WeightsError
    from inference.screening.run import ScreeningConfig, screening_models

    models = [m.name for m in screening_models()]
    if args.model not in models:
        return _fail(f"--model {args.model!r}: choose one of: {', '.join(models)}", EXIT_USAGE)
    bar = ProgressBar("screening")
    try:
        config = ScreeningConfig(aggregation=args.aggregation, heatmap=args.heatmap)
        rows, errors = screen(args.paths, args.out, model=args.model, device=args.device, backend=args.backend,
                              precision=args.precision,
                              config=config, lungs=args.lungs, progress=bar,
                              log=lambda m: (bar.close(), print(m, file=sys.stderr)))
    except (KeyError, ValueError, WeightsError) as exc:
        bar.close()
        return _fail(str(exc.args[0] if isinstance(exc, KeyError) else exc))
    bar.close()
    for row in rows:
        print(f"{row['rank']:3d}  p={row['probability']:.3f}  involvement {row['involvement_percent']:5.1f} %  "
              f"severity {row['severity']:2d}  {row['case']}")
    for err in errors:
        print(f"skipped: {err['source']}: {err['error']}", file=sys.stderr)
    print(f"wrote {Path(args.out) / 'results.csv'} ({len(rows)} case(s), {len(errors)} problem(s))")
    return EXIT_OK if rows or not errors else EXIT_BAD_INPUT


def cmd_train(args: argparse.Namespace) -> int:
    from inference.training.recipes.light_squeezenet import TrainConfig, train

    if not os.path.isdir(args.data):
        return _fail(f"{args.data}: no such folder")
    bar = ProgressBar("training")
    try:
        result = train(args.data, args.out, TrainConfig(epochs=args.epochs, seed=args.seed,
                                                        batch_size=args.batch_size, normalize=args.normalize),
                       model_name=args.model, progress=bar, log=lambda m: (bar.close(), print(m)))
    except FileNotFoundError as exc:
        return _fail(str(exc))
    bar.close()
    print(f"wrote {result.weights} and {result.card}")
    return EXIT_OK


def cmd_view(args: argparse.Namespace) -> int:
    from app.gui.launch import run_viewer

    if args.path is not None and not os.path.exists(args.path):
        return _fail(f"{args.path}: no such file or folder")
    return run_viewer(args.path, series=args.series, overlays=args.overlay, screenshot=args.screenshot,
                      layout=args.layout, preset=args.preset, analyze=args.analyze)

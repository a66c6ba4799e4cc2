"""`lunglens predict`: classify 2D slice images (PNG/JPG) with a slice model."""

from __future__ import annotations

import argparse
import io
import sys

from app.cli.exits import EXIT_BAD_INPUT, EXIT_OK, fail
from app.cli.options import add_runtime_options, image_inputs
from app.cli.progress_bar import ProgressBar
from inference.core.choices import DEFAULT_SLICE_MODEL

CHUNK = 16  # images per forward pass


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="classify 2D slice images (PNG/JPG) with a slice model",
        description="Classify slice images; writes a CSV with header path,predicted,p_covid, in one "
                    "step at the end (an interrupted run leaves the previous CSV as it was). An "
                    "image that cannot be read (unreadable, truncated, too large, not an image) "
                    "is reported on stderr and skipped. Exit code: 0 when every image was "
                    "classified, 1 when some were skipped (the CSV holds the others) or none "
                    "could be read (no CSV is written then).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, or folders searched recursively")
    p.add_argument("--model", default=DEFAULT_SLICE_MODEL, help="a registered slice model (see `lunglens models`)")
    p.add_argument("--out", required=True, metavar="CSV", help="output CSV file")
    add_runtime_options(p)
    p.add_argument("--no-tta", action="store_true", help="no mirror test-time augmentation")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import csv

    from inference.core.types import InferenceError
    from inference.inferers.slice import SliceClassifier
    from inference.models import get_model
    from inference.transforms.images import ImageError, load_grey
    from viewer.io.atomic_files import WriteError, write_bytes_atomic

    paths, why = image_inputs(args.inputs)
    if why:
        return fail(why)
    try:
        spec = get_model(args.model)
        clf = SliceClassifier(spec, device=args.device, tta=not args.no_tta, backend=args.backend,
                              precision=args.precision)
    except (InferenceError, ValueError) as exc:  # an unknown model, missing weights, a bad device or backend
        return fail(str(exc))
    bar = ProgressBar("predicting")
    failed = 0
    positive = spec.positive_class
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "predicted", f"p_{positive.lower()}"])
    for i in range(0, len(paths), CHUNK):
        chunk, images = [], []
        for p in paths[i : i + CHUNK]:
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
        bar(min(1.0, (i + CHUNK) / len(paths)), f"{min(i + CHUNK, len(paths))}/{len(paths)} images")
    bar.close()
    if failed == len(paths):
        return fail(f"none of the {len(paths)} image(s) could be read; {args.out} not written")
    try:
        write_bytes_atomic(args.out, buffer.getvalue().encode("utf-8"))
    except OSError as exc:
        return fail(str(exc) if isinstance(exc, WriteError) else f"{args.out}: cannot write: {exc}")
    print(f"wrote {args.out}: {len(paths) - failed} image(s) classified with {spec.name} on {clf.engine}"
          + (f"; {failed} skipped (see above)" if failed else ""))
    return EXIT_BAD_INPUT if failed else EXIT_OK

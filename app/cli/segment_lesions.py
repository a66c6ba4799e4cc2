"""`lunglens segment-lesions`: lesion masks of 2D slice images with a lesion segmenter (DCN: GGO and
consolidation) or a lesion-instance model (COVID-CT-Mask-Net: lesion instances, their union as the mask)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

from app.cli.exits import EXIT_BAD_INPUT, EXIT_OK, fail
from app.cli.options import image_inputs
from app.cli.progress_bar import ProgressBar
from inference.core.choices import MIN_INSTANCE_SCORE

DEFAULT_LESION_MODEL = "dcn"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment-lesions", help="lesion masks (GGO, consolidation) of 2D slice images (PNG/JPG)",
        description="Segment COVID-19 lesions in axial CT slice images that are already windowed (8-bit "
                    "exports, any size or mode). For each image writes OUT/<stem>.png of the same size: 0 "
                    "background, 1 ground-glass opacity, 2 consolidation (a second image of the same stem gets "
                    "<stem>_2.png), and prints its lesion share of the image. With --model covid-ct-mask-net the "
                    "mask is 0 background, 1 lesion (the union of the instances scoring at least --min-score), "
                    "and OUT/<stem>.json lists the instances (rank, score, box x0 y0 x1 y1 in pixels, mask area). "
                    "An image that cannot be read is reported and skipped. Exit code 1 when any image failed. "
                    "Not for clinical diagnosis.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="images, or folders searched recursively")
    p.add_argument("--model", default=DEFAULT_LESION_MODEL,
                   help="a registered lesion segmenter or lesion-instance model: dcn (default), covid-ct-mask-net")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--no-tta", action="store_true",
                   help="one pass per image instead of the average over its four flips (4x faster; dcn)")
    p.add_argument("--min-score", type=_score, default=MIN_INSTANCE_SCORE, metavar="S",
                   help=f"lesion instances scoring below S are left out (covid-ct-mask-net; default "
                        f"{MIN_INSTANCE_SCORE})")
    p.set_defaults(func=run)


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a score between 0 and 1")
    return value


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from inference.core.types import InferenceError
    from inference.inferers.instances import InstanceSegmenter
    from inference.inferers.lesions import LesionSegmenter
    from inference.models import get_model
    from inference.transforms.images import ImageError, load_grey
    from viewer.io.atomic_files import WriteError, write_bytes_atomic

    try:  # the model first: a wrong choice is reported before the inputs are searched
        if get_model(args.model).input_kind == "instances":
            seg: LesionSegmenter | InstanceSegmenter = InstanceSegmenter(args.model, device=args.device)
        else:
            seg = LesionSegmenter(args.model, device=args.device, tta=not args.no_tta)
    except (InferenceError, ValueError) as exc:  # unknown model, not a lesion segmenter, no weights, bad device
        return fail(str(exc))
    paths, why = image_inputs(args.inputs)
    if why:
        return fail(why)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail(f"{out}: cannot create the output folder: {exc}")
    bar = ProgressBar("segmenting")
    failed, used = 0, set()
    for n, path in enumerate(paths, start=1):
        try:
            image = load_grey(path)
            if isinstance(seg, InstanceSegmenter):
                found = seg.find(image).above(args.min_score)
                labels = found.labels() if len(found) else np.zeros(image.shape, np.uint8)
            else:
                labels, _ = seg.segment_images([image])[0]
            target = _unique_name(out, Path(path).stem, used)
            buffer = io.BytesIO()
            Image.fromarray(labels.astype(np.uint8), mode="L").save(buffer, format="PNG")
            write_bytes_atomic(target, buffer.getvalue())
            if isinstance(seg, InstanceSegmenter):
                record = {"image": str(path), "mask": target.name, "model": seg.spec.name,
                          "min_score": args.min_score, "size": list(image.shape[::-1]),
                          "instances": found.records()}
                write_bytes_atomic(target.with_suffix(".json"), (json.dumps(record, indent=1) + "\n").encode())
        except (ImageError, ValueError, OSError) as exc:
            failed += 1
            bar.close()
            reason = str(exc) if isinstance(exc, (ImageError, WriteError)) else f"{path}: {exc}"
            print(f"lunglens: skipped: {reason}", file=sys.stderr)
            continue
        bar.close()
        share = [100.0 * np.count_nonzero(labels == k) / labels.size for k in (1, 2)]
        if isinstance(seg, InstanceSegmenter):
            print(f"{path}: {len(found)} lesion instance(s), {share[0]:.2f} % of the image -> {target}")
        else:
            print(f"{path}: lesion {share[0] + share[1]:.2f} % of the image (GGO {share[0]:.2f} %, consolidation "
                  f"{share[1]:.2f} %) -> {target}")
        bar(n / len(paths), f"{n}/{len(paths)} images")
    bar.close()
    done = len(paths) - failed
    print(f"wrote {done} mask(s) to {out} with {seg.spec.name} on {seg.engine}"
          + (f"; {failed} image(s) skipped (see above)" if failed else ""))
    return EXIT_BAD_INPUT if failed else EXIT_OK


def _unique_name(out: Path, stem: str, used: set[str]) -> Path:
    """OUT/<stem>.png, or <stem>_2.png, _3, ... when an earlier image of this run took the name."""
    name, k = f"{stem}.png", 1
    while name in used:
        k += 1
        name = f"{stem}_{k}.png"
    used.add(name)
    return out / name

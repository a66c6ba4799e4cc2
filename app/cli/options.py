"""Options, and the checks of their inputs, shared by several commands."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from inference.core.choices import BACKENDS, PRECISIONS

#: `viewer.state.slicing.PROJECTIONS`, spelled out so that --help imports no numpy (a test checks they agree)
SLAB_PROJECTIONS = ("mip", "minip", "mean")


def add_view_options(p: argparse.ArgumentParser) -> None:
    """--screenshot, --layout, --preset and --analyze, shared by the commands that open the viewer."""
    p.add_argument("--screenshot", metavar="FILE.png", help="save a screenshot of the window and exit")
    p.add_argument("--layout", choices=("2x2", "1x1", "1+3"), help="view layout")
    p.add_argument("--preset", help="window preset: lung, mediastinum, bone, soft tissue, or one of yours")
    p.add_argument("--analyze", action="store_true", help="run the AI (AI > Analyze) once the CT is loaded")
    p.add_argument("--model", help="the AI model Analyze uses (default: the first installed, light-squeezenet)")
    p.add_argument("--slab", type=_slab_mm, default=0.0, metavar="MM",
                   help="show every view as a thick slab of MM (0: single slices)")
    p.add_argument("--oblique", type=_degrees, default=0.0, metavar="DEG",
                   help="turn the crosshair axes DEG degrees clockwise in the axial view: the coronal and sagittal "
                        "views show oblique planes (the Rotate tool, key O, does it by mouse)")
    p.add_argument("--projection", choices=SLAB_PROJECTIONS, default="mip",
                   help="how a slab is projected: mip (maximum: nodules, vessels), minip (minimum: airways, ground "
                        "glass) or mean")


def _degrees(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not -180 <= value <= 180:
        raise argparse.ArgumentTypeError(f"the angle must be -180..180 degrees, got {text}")
    return value


def _slab_mm(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 <= value <= 500:
        raise argparse.ArgumentTypeError(f"slab thickness must be 0-500 mm, got {text}")
    return value


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--device, --backend and --precision, shared by the commands that run a model."""
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto = torch (the reference); onnx = ONNX Runtime on the CPU (same probabilities "
                        "within 1e-4; measured no faster for the light SqueezeNet on 2 cores)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="slice models: auto = mixed precision on CUDA where a probe shows it moves no probability "
                        "by more than 1e-3, else float32; fp32; mixed (float16 on CUDA, bfloat16 on the CPU, "
                        "still only if the probe agrees)")


def image_inputs(inputs: list[str]) -> tuple[list[Path], str]:
    """(the image files among `inputs`, folders searched recursively, ""), or ([], why) when an input does not
    exist or no image is found; `predict` and `segment-lesions` check their inputs with it."""
    from inference.transforms.images import find_images

    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        return [], f"{missing[0]}: no such file or folder"
    paths = find_images(list(inputs))
    return (paths, "") if paths else ([], "no images found (PNG, JPG, BMP or TIFF)")

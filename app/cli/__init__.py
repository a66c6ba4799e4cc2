"""The `lunglens` command line: one module per command, each with `register(subparsers)` and `run(args)`.

This module builds the parser from the command modules, runs the chosen command and maps the errors a
user can act on to exit codes (`app.cli.exits`) in one place.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.cli import (
    convert,
    demo,
    export_training,
    info,
    mask,
    models,
    predict,
    segment_lesions,
    train,
    view,
)
from app.cli.exits import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_OK, EXIT_USAGE, fail
from app.cli.triage import pacs, report, screen, worklist
from inference.core.choices import HEATMAP_METHODS, LUNG_METHODS, PRECISIONS
from inference.core.choices import NORMALIZATIONS as SLICE_NORMALIZATIONS
from viewer.core.version import lunglens_version

__all__ = [
    "COMMANDS", "EXIT_BAD_INPUT", "EXIT_CANCELLED", "EXIT_OK", "EXIT_USAGE", "HEATMAP_METHODS", "LUNG_METHODS",
    "PRECISIONS", "SLICE_NORMALIZATIONS", "build_parser", "main",
]

#: the command modules, in the order `lunglens --help` lists them
COMMANDS = (info, convert, view, models, predict, segment_lesions, screen, worklist, report, pacs, train, mask,
            export_training, demo)


def build_parser() -> argparse.ArgumentParser:
    """The `lunglens` parser: one sub-command per module of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="lunglens",
        description="LungLens: chest-CT viewer with on-device AI screening. Not for clinical diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"lunglens {lunglens_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `lunglens ARGV` (default: `sys.argv[1:]`); returns the exit code."""
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
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        return fail("cancelled" if code == EXIT_CANCELLED else str(exc), code)


def _exit_code(exc: Exception) -> int | None:
    """The exit code of an error whose message tells the user what to fix (it names the file); None for a bug."""
    from app.pacs.nodes import PacsError
    from app.services.worklist_db import CacheError
    from inference.core.types import Cancelled, InferenceError
    from viewer.core.errors import LoadCancelled, LoadError
    from viewer.io.atomic_files import WriteError

    if isinstance(exc, (LoadCancelled, Cancelled)):
        return EXIT_CANCELLED
    if isinstance(exc, (LoadError, WriteError, InferenceError, PacsError, CacheError)):
        return EXIT_BAD_INPUT
    return None

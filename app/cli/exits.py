"""Exit codes of `lunglens` and the one way a command reports a failure."""

from __future__ import annotations

import sys

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130


def fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    """Print `lunglens: error: message` on stderr and return `code`."""
    print(f"lunglens: error: {message}", file=sys.stderr)
    return code

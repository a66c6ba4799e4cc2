"""A text progress bar on stderr, callable as a `viewer.core.progress.ProgressFn`."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class ProgressBar:
    """Draws `label [#####.....]  42%  message` in place; silent when stderr is not a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._drawn = False
        self._shown = 0  # length of the line last drawn (a shorter one must blank the rest)

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if fraction < 1.0 and now - self._last < 0.05:
            return
        self._last = now
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "." * (self.width - filled)
        head = f"{self.label} [{bar}] {fraction * 100:3.0f}%  "
        columns = shutil.get_terminal_size((100, 24)).columns
        line = head + fit_words(message, max(10, columns - len(head) - 1))
        self.stream.write(f"\r{line:{self._shown}}")
        self.stream.flush()
        self._drawn, self._shown = True, len(line)

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def fit_words(message: str, width: int) -> str:
    """`message` if it fits in `width` characters, else cut at the last whole word that fits, with an ellipsis
    (never mid-word: "Separating lef" reads as a typo)."""
    if len(message) <= width:
        return message
    cut = message[: width - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:") + "…"

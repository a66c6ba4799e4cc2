"""The terminal progress bar: whole words only, and a shorter line blanks what the longer one left."""

from __future__ import annotations

import io

from app.cli.progress_bar import ProgressBar, fit_words


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_messages_are_cut_between_words():
    assert fit_words("Separating left and right", 40) == "Separating left and right"
    assert fit_words("Separating left and right", 14) == "Separating…"
    assert fit_words("Separating left and right", 20) == "Separating left…"
    assert fit_words("Supercalifragilistic", 8) == "Superca…"  # one long word: cut, with the ellipsis


def test_a_shorter_message_blanks_the_rest_of_the_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    stream = _Tty()
    bar = ProgressBar("lungs", stream=stream, width=10)
    bar(0.2, "Separating left and right lungs in every slice of the volume, one by one")
    bar._last = 0.0  # as if 50 ms had passed
    bar(1.0, "done")
    first, second = stream.getvalue().split("\r")[1:]
    assert len(first) <= 80 and not first.rstrip().endswith(("lef", "sli")) and first.rstrip().endswith("…")
    assert second.rstrip().endswith("done") and len(second) == len(first)
    bar.close()
    assert stream.getvalue().endswith("\n")

"""Progress reporting and cancellation for long I/O, without Qt.

Workers take two plain callables so that a Qt worker, a command-line progress
bar and a test can all drive them:

* ``progress(fraction, message)`` with ``fraction`` in [0, 1];
* ``cancel()`` returning True once the user asked to stop.
"""

from __future__ import annotations

from collections.abc import Callable

from viewer.core.errors import LoadCancelled

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


def report(progress: ProgressFn | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(min(max(fraction, 0.0), 1.0), message)


def check_cancel(cancel: CancelFn | None) -> None:
    """Raise LoadCancelled if the user asked to stop."""
    if cancel is not None and cancel():
        raise LoadCancelled("loading cancelled")

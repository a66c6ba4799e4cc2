"""Types every inference layer shares: progress and cancel callbacks, the cancel signal, user-facing errors."""

from __future__ import annotations

from collections.abc import Callable

#: progress(fraction in [0, 1], message)
ProgressFn = Callable[[float, str], None]
#: cancel() -> True once the user asked to stop
CancelFn = Callable[[], bool]


class Cancelled(Exception):
    """The user stopped the work: `cancel()` returned True."""


class InferenceError(Exception):
    """A failure to show the user as it is: the message says what went wrong and why."""


class UnknownModelError(InferenceError):
    """No model is registered under the asked name; the message lists the registered ones."""

"""A minimal Qt-free event: models announce changes, views subscribe."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Event:
    """A list of callbacks called with the same arguments on `emit`.

    Used by the view state and layers so that widgets react to model changes
    without the model knowing about Qt.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[..., Any]] = []
        self._blocked = 0

    def connect(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        if callback not in self._callbacks:
            self._callbacks.append(callback)
        return callback

    def disconnect(self, callback: Callable[..., Any]) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def emit(self, *args: Any) -> None:
        if self._blocked:
            return
        for cb in list(self._callbacks):
            cb(*args)

    @contextmanager
    def blocked(self) -> Iterator[None]:
        """No emission inside the block (to update a model from its own view without loops)."""
        self._blocked += 1
        try:
            yield
        finally:
            self._blocked -= 1

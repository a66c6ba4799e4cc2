"""A stand-in for pyqtgraph's mouse drag event: one step from `last` to `now` (scene positions)."""

from __future__ import annotations

from PySide6 import QtCore


class Drag:
    """The part of pyqtgraph's drag event the viewer reads; `last` is also where the button went down."""

    def __init__(self, last: QtCore.QPointF, now: QtCore.QPointF,
                 button: QtCore.Qt.MouseButton = QtCore.Qt.MouseButton.LeftButton) -> None:
        self._last, self._now, self._button = last, now, button

    def button(self) -> QtCore.Qt.MouseButton:
        return self._button

    def buttonDownScenePos(self) -> QtCore.QPointF:
        return self._last

    def lastScenePos(self) -> QtCore.QPointF:
        return self._last

    def scenePos(self) -> QtCore.QPointF:
        return self._now

    def isStart(self) -> bool:
        return True

    def isFinish(self) -> bool:
        return True

    def accept(self) -> None:
        pass

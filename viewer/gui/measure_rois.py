"""Measurement shapes made of line segments between free handles: the angle (two arms from a vertex) and the
long and short axis cross."""

from __future__ import annotations

from collections.abc import Sequence

import pyqtgraph as pg
from PySide6 import QtCore, QtGui


class SegmentsROI(pg.ROI):
    """Free handles at `points` (view coordinates) joined by the segments `pairs` (handle index pairs)."""

    def __init__(self, points: Sequence[QtCore.QPointF], pairs: Sequence[tuple[int, int]], **kwargs) -> None:
        super().__init__((0, 0), (1, 1), **kwargs)
        self.pairs = tuple(pairs)
        for p in points:
            self.addFreeHandle(p)

    def points(self) -> list[QtCore.QPointF]:
        """The handles' positions in the parent's (view) coordinates."""
        return [self.mapToParent(h["item"].pos()) for h in self.handles]

    def paint(self, p: QtGui.QPainter, *args) -> None:
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
        p.setPen(self.currentPen)
        ends = [h["item"].pos() for h in self.handles]
        for a, b in self.pairs:
            p.drawLine(ends[a], ends[b])

    def boundingRect(self) -> QtCore.QRectF:
        return self.shape().boundingRect()

    def shape(self) -> QtGui.QPainterPath:
        """A band a few screen pixels wide around each segment (what the mouse can grab)."""
        path = QtGui.QPainterPath()
        ends = [h["item"].pos() for h in self.handles]
        for a, b in self.pairs:
            d = ends[b] - ends[a]
            if d.x() == 0 and d.y() == 0:
                continue
            normal = self.pixelVectors(pg.Point(d))[1]
            if normal is None:
                continue
            normal = normal * 4
            band = QtGui.QPolygonF([ends[a] + normal, ends[b] + normal, ends[b] - normal, ends[a] - normal])
            path.addPolygon(band)
            path.closeSubpath()
        return path

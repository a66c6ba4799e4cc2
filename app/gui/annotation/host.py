"""What the annotation controller needs from the window around it (`MainWindow`, or a stand-in in tests)."""

from __future__ import annotations

from typing import Protocol

from PySide6 import QtWidgets

from viewer.labels.label_map import Box
from viewer.state.layers import LabelLayer


class AnnotationHost(Protocol):
    """The window that shows the label map being edited.

    The controller reads the viewer state and the settings directly and reports status messages by its
    `status_message` signal; the host only redraws and says whether, and over what, dialogs may open.
    """

    @property
    def interactive(self) -> bool:
        """False (screenshots, tests, scripts): no modal dialogs; defaults are taken instead."""
        ...

    def dialog_parent(self) -> QtWidgets.QWidget | None:
        """The widget that file dialogs and message boxes belong to."""
        ...

    def redraw_labels(self, layer: LabelLayer, box: Box) -> None:
        """An edit changed `box` of `layer`: redraw it in the slice views that show it."""
        ...

    def refresh_label_surfaces(self) -> None:
        """The label map changed and edits paused: the 3D view rebuilds its label surfaces (when on show)."""
        ...

"""The annotation controller on its own: a stand-in host instead of the main window, a small volume."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from app.gui.annotation.controller import LAYER_NAME, AnnotationController
from app.gui.settings import Settings
from viewer.core.volume import Volume
from viewer.state.slicing import Orientation
from viewer.state.view_state import ViewerState


class FakeHost:
    """An `AnnotationHost` that records what the controller asks of it."""

    interactive = False

    def __init__(self) -> None:
        self.redrawn: list[tuple[str, tuple[int, ...]]] = []
        self.surface_refreshes = 0

    def dialog_parent(self) -> None:
        return None

    def redraw_labels(self, layer, box) -> None:
        self.redrawn.append((layer.name, tuple(box)))

    def refresh_label_surfaces(self) -> None:
        self.surface_refreshes += 1


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("LUNGLENS_RECOVERY_DIR", str(tmp_path / "recovery"))


def test_controller_paints_undoes_and_reports_without_a_window(qtbot):
    state = ViewerState(Volume(np.full((8, 32, 32), -700, np.int16), spacing=(2.0, 1.0, 1.0)))
    host = FakeHost()
    controller = AnnotationController(state, Settings(), host)
    messages: list[tuple[str, int]] = []
    controller.status_message.connect(lambda text, ms: messages.append((text, ms)))
    view = SimpleNamespace(tool="brush", orientation=Orientation.AXIAL)  # what a stroke needs of a slice view
    try:
        controller.volume_loaded(state.volume)
        controller.set_brush_size(5.0)
        controller.stroke_begin(view, (4, 16, 10))
        controller.stroke_move(view, (4, 16, 20))
        controller.stroke_end(view)

        labels = controller.labels
        value = controller.settings.value
        assert labels is not None and state.layers[LAYER_NAME] is controller.layer
        assert labels.array[4, 16, 10] == value and labels.array[4, 16, 20] == value and labels.array[4, 16, 15]
        assert not labels.array[[0, 1, 2, 3, 5, 6, 7]].any()  # an axial brush paints one slice
        assert host.redrawn and all(name == LAYER_NAME for name, _ in host.redrawn)
        assert labels.dirty and labels.can_undo
        qtbot.waitUntil(lambda: host.surface_refreshes > 0, timeout=5000)  # debounced after the edits

        assert controller.undo()
        assert not labels.array.any() and not labels.can_undo and labels.can_redo

        labels.set_label_display(value, locked=True)
        with qtbot.waitSignal(controller.status_message, timeout=2000) as refused:
            controller.stroke_begin(view, (4, 16, 16))  # a refused edit is a status message, not an error
        text, ms = refused.args
        assert "locked" in text and ms == 5000 and (text, ms) in messages
        assert not labels.array.any() and not controller.annotator.painting
    finally:
        controller.shutdown()

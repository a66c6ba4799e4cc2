"""DCN in the viewer: the model picker offers it, Analyze shows its overlays and GGO / consolidation volumes,
and "Start from AI result" takes its lesion mask (shipped weights)."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.io.volumes import write_volume
from viewer.synthetic.phantom import make_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_analyze_with_dcn_and_start_from_its_result(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.analysis import HEATMAP_LAYER, MASK_LAYER, usable_models
    from app.gui.main_window import MainWindow

    assert "dcn" in usable_models()
    ph = make_phantom(shape=(24, 96, 96), spacing=(8.0, 3.0, 3.0), seed=4, n_ggo=3, n_consolidation=2)
    path = write_volume(ph.volume, tmp_path / "case.nii.gz")
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    win.model_box.setCurrentText("dcn")
    assert win.model_box.currentText() == "dcn" and not win.heatmap_box.isEnabled()
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(path))
    failures: list = []
    win.analysis_failed.connect(failures.append)
    with qtbot.waitSignal(win.analysis_done, timeout=60000) as blocker:
        win.analyze()
    pred = blocker.args[0]
    assert failures == [] and pred.model == "dcn" and pred.input_kind == "segmentation"
    assert HEATMAP_LAYER in win.state.layers and MASK_LAYER in win.state.layers
    headline = win.results.headline.text()
    assert "P(COVID)" in headline and "GGO" in headline and "lesion attention" in headline
    warning = win.results.warning  # from its model card, on its own line
    assert "warning: DCN's P(COVID) is not reliable on real CT" in warning.text() and warning.isVisibleTo(win)
    assert np.array_equal(win.results.plot_x, pred.slice_indices)  # one P(COVID) per slice with lung
    win.annotation.prompt_answer = lambda _kind, _text: "discard"
    panel = win.annotation_panel
    assert panel.ai_button.isEnabled()
    panel.ai_part.setCurrentText("lesions")
    panel.ai_mode.setCurrentIndex(panel.ai_mode.findData("replace"))
    panel.ai_button.click()
    labels = win.annotation.labels
    assert np.array_equal(labels.array, pred.lesion_mask)  # both on the canonical grid of the loaded CT
    win.close()

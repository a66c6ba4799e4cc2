"""COVID-CT-Mask-Net's lesion instances in the viewer: the list, the minimum-score slider driving the overlay,
jump-to, and export as a label map with its JSON (untrained parts at a small input: instances appear)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from viewer.io.volumes import read_volume_file, write_volume
from viewer.synthetic.phantom import make_phantom

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _prediction(hu, lungs, spacing):
    from inference.inferers.instances import InstanceClassifier, InstanceSegmenter
    from inference.models.covid_ct_mask_net import covid_ct_mask_net, lesion_segmentation_model
    from inference.screening.config import ScreeningConfig
    from inference.screening.run import run

    torch.manual_seed(0)
    model = InstanceClassifier(segmenter=InstanceSegmenter(device="cpu", module=lesion_segmentation_model(
        short_side=64)), classifier=covid_ct_mask_net(short_side=64))
    return run(hu, spacing, model, lung_labels=lungs, config=ScreeningConfig(instance_min_score=0.2))


def test_instance_list_slider_jump_and_export(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.analysis import MASK_LAYER
    from app.gui.main_window import MainWindow

    ph = make_phantom(shape=(12, 64, 64), spacing=(10.0, 4.0, 4.0), seed=0, n_ggo=3, n_consolidation=1)
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    assert not win.instances.isVisibleTo(win)
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(write_volume(ph.volume, tmp_path / "case.nii.gz")))
    vol = win.state.volume
    lungs = (ph.masks["lung_left"] * 1 + ph.masks["lung_right"] * 2).astype(np.uint8)
    assert lungs.shape == vol.shape
    pred = _prediction(vol.array, lungs, vol.spacing)
    assert pred.instances
    win._on_analysis_done(pred)
    panel = win.instances
    assert panel.isVisibleTo(win)
    scores = sorted(r["score"] for r in pred.instances)
    panel.slider.setValue(int(np.ceil(scores[len(scores) // 2] * 100)))  # about half the instances
    shown = panel.shown()
    assert 0 < len(shown) < len(pred.instances)
    qtbot.waitUntil(lambda: panel.table.rowCount() == len(shown), timeout=5000)  # once the slider rests
    assert [float(panel.table.item(n, 2).text()) for n in range(len(shown))] == [round(r["score"], 2) for r in shown]
    overlay = win.state.layers[MASK_LAYER].data
    kept_ids = [r["id"] for r in shown]
    np.testing.assert_array_equal(overlay == 5, np.isin(pred.instance_labels, kept_ids))
    np.testing.assert_array_equal(overlay[overlay != 5], lungs[overlay != 5])
    panel.go_to(0)
    assert win.state.cursor[0] == shown[0]["slice"]

    saved, failed = [], []
    win.instances_saved.connect(saved.append)
    win.instances_failed.connect(failed.append)
    with qtbot.waitSignal(win.instances_saved, timeout=20000):
        win.export_instances_to(tmp_path / "out" / "inst.nii.gz", True, panel.min_score)
    labels = read_volume_file(tmp_path / "out" / "inst.nii.gz").array
    doc = json.loads((tmp_path / "out" / "inst.instances.json").read_text())
    assert [r["id"] for r in doc["instances"]] == kept_ids and doc["label_map"] == "inst.nii.gz"
    assert sorted(set(np.unique(labels)) - {0}) == sorted(r["value"] for r in doc["instances"]
                                                          if np.isin(pred.instance_labels, r["id"]).any())
    win.export_instances_to(tmp_path / "out" / "none.nii.gz", False, 1.01)
    assert failed and "nothing to save" in failed[-1] and not (tmp_path / "out" / "none.nii.gz").exists()
    with qtbot.waitSignal(win.instances_failed, timeout=20000):
        win.export_instances_to(tmp_path / "out" / "inst.dcm", False, panel.min_score)
    assert "DICOM" in failed[-1]  # a SEG needs the DICOM series the CT came from
    win.close()

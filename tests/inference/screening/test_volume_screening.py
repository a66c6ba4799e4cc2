"""Screening CT volumes with DeCoVNet (paper 1): the volume pipeline, its dispatch, `screen --model decovnet`, GUI.

The weights are seeded random ones with the COVID logit biased up (so the case is called positive and the
localized lesion is used): these tests check geometry, wiring and outputs, not the model's skill.
"""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from inference.core.types import Cancelled
from inference.explain.lesion_localization import centre_in_box
from inference.inferers.volume import VolumeClassifier
from inference.models import WeightsInfo, get_model, sha256_of
from inference.models._api import _REGISTRY
from inference.models.decovnet import CAM_DEPTHS, decovnet
from inference.screening.config import ScreeningConfig
from inference.screening.pipelines.volume import VolumeScreeningConfig, run_volume, sample_map, work_steps
from inference.screening.run import load_model, run
from inference.transforms.volume import WINDOW_HU, VolumePreprocessor, to_ct_grid
from viewer.synthetic.phantom import PhantomConfig, make_phantom

SHAPE, SPACING = (40, 96, 96), (6.0, 3.6, 3.6)
SIZE, Z_MM = [48, 64], 6.0  # a reduced network input, read from the spec as shipped weights would set it


def lung_labels(ph) -> np.ndarray:
    return ph.masks["lung_left"].astype(np.uint8) + 2 * ph.masks["lung_right"].astype(np.uint8)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomConfig(shape=SHAPE, spacing=SPACING, n_ggo=4, n_consolidation=2, seed=22))


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """The decovnet entry with weights in a temporary folder (hash-checked like shipped ones) and a card."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    net = decovnet()
    with torch.no_grad():
        # a confident COVID answer that grows with every feature, so that Grad-CAM has gradients to weigh (the
        # authors' 0.01-std linear layers leave an untrained net's maps all but zero)
        net.fc[0].weight.copy_(torch.eye(32))
        net.fc[-1].weight.copy_(torch.stack([torch.full((32,), -0.05), torch.full((32,), 0.05)]))
        net.fc[-1].bias.copy_(torch.tensor([-4.0, 4.0]))
    torch.save(net.state_dict(), root / "decovnet.pt")
    (root / "decovnet.card.json").write_text(json.dumps({"validation_metrics": {"accuracy": 0.5, "roc_auc": 0.5},
                                                         "training_data": {"dataset": "test phantoms"}}))
    base = get_model("decovnet")
    return dataclasses.replace(
        base, weights=WeightsInfo(str(root / "decovnet.pt"), sha256_of(root / "decovnet.pt"),
                                  str(root / "decovnet.card.json")),
        transforms=VolumePreprocessor(window=WINDOW_HU, size=tuple(SIZE), z_spacing_mm=Z_MM))


@pytest.fixture
def registered(spec, monkeypatch):
    """`get_model("decovnet")` returns the test entry, as it will once weights are registered."""
    get_model("decovnet")
    monkeypatch.setitem(_REGISTRY, "decovnet", spec)
    return spec


@pytest.fixture(scope="module")
def classifier(spec) -> VolumeClassifier:
    return VolumeClassifier(spec, device="cpu")


def test_the_classifier_takes_the_preprocessing_its_weights_were_trained_with(spec, tmp_path):
    assert VolumeClassifier(spec, device="cpu").preprocessor.size == tuple(SIZE)  # a card without it: the entry's
    card = tmp_path / "decovnet.card.json"
    card.write_text(json.dumps({"preprocessing": VolumePreprocessor(size=(40, 56), z_spacing_mm=7.0,
                                                                    lungs_only=2).describe()}))
    trained = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, card=str(card)))
    pre = VolumeClassifier(trained, device="cpu").preprocessor
    assert (pre.size, pre.z_spacing_mm, pre.lungs_only) == ((40, 56), 7.0, 2)
    assert VolumeClassifier(trained, device="cpu", module=decovnet()).preprocessor.lungs_only is None  # no weights


def test_prediction_lies_on_the_ct_grid(classifier, phantom):
    seen = []
    labels = lung_labels(phantom)
    pred = run_volume(phantom.volume.array, SPACING, classifier, lung_labels=labels,
                      progress=lambda f, m: seen.append(f))
    assert classifier.preprocessor.size == tuple(SIZE) and classifier.preprocessor.z_spacing_mm == Z_MM
    assert pred.model == "decovnet" and pred.input_kind == "volume" and pred.device == "cpu (torch)"
    assert len(pred.slice_indices) == 0 and len(pred.slice_probabilities) == 0
    for array in (pred.heatmap, pred.lesion_mask, pred.lung_mask):
        assert array.shape == SHAPE
    p = pred.positive_probability
    assert p > 0.5 and pred.probabilities["NonCOVID"] == pytest.approx(1 - p)
    assert pred.heatmap.min() >= 0 and pred.heatmap.max() == pytest.approx(p, rel=1e-5)  # CAM in [0, 1] x P
    assert pred.heatmap[labels == 0].max() == 0  # the heat map speaks about the lungs only
    assert set(np.unique(pred.lesion_mask)) <= {0, 3, 4}
    assert not (pred.lesion_mask.astype(bool) & (labels == 0)).any()
    assert len(pred.zones) == 6 and 0 <= pred.severity <= 30
    assert pred.localization["depth"] in CAM_DEPTHS and pred.localization["positive"]
    z, y, x = (int(round(c)) for c in pred.lesion_centre)
    assert centre_in_box(pred.lesion_centre, pred.localization["bbox"])
    assert labels[z, max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].any()  # a lung lesion
    assert np.all(np.diff(seen) >= 0) and seen[-1] == 1.0
    summary = json.loads(json.dumps(pred.summary()))
    assert summary["slices_classified"] == 0 and summary["input_kind"] == "volume"
    assert summary["lesion_centre"] is not None and summary["localization"]["depth"] == pred.localization["depth"]
    assert {"lung_segmentation", "classification", "heatmap", "localization", "lesions", "total"} <= set(pred.timings)


def test_strided_cam_sampling_matches_to_ct_grid(classifier, phantom):
    prepared = classifier.preprocessor(phantom.volume.array, SPACING, lung_labels(phantom) > 0)
    cam = torch.rand(prepared.grid.shape, generator=torch.Generator().manual_seed(1))
    full = to_ct_grid(cam, prepared.grid)
    for steps in ((1, 1, 1), (2, 3, 2)):
        assert np.abs(sample_map(cam, prepared.grid, steps) - full[::steps[0], ::steps[1], ::steps[2]]).max() < 1e-5
        box = ((3, 31), (10, 90), (7, 80))
        sl = tuple(slice(a, b, s) for (a, b), s in zip(box, steps))
        assert np.abs(sample_map(cam, prepared.grid, steps, box) - full[sl]).max() < 1e-5
    assert work_steps((1.0, 0.7, 0.7), (2.0, 1.4)) == (2, 2, 2) and work_steps(SPACING, (2.0, 1.4)) == (1, 1, 1)


def _fixed_cam(clf: VolumeClassifier, maps: dict[str, np.ndarray], logits=(-3.0, 3.0)) -> VolumeClassifier:
    """`clf` standing in for DeCoVNet: fixed logits and per-depth maps on the network grid (what Grad-CAM gives)."""
    fixed = {d: torch.as_tensor(m, dtype=torch.float32) for d, m in maps.items()}
    p = float(torch.softmax(torch.tensor([logits]), dim=1)[0, clf.positive_index])

    def predict_with_cam(x, cancel=None, progress=None):
        assert tuple(x.shape[1:]) == tuple(next(iter(fixed.values())).shape)
        return p, {d: fixed[d] for d in clf.cam_depths}

    clf.predict_with_cam = predict_with_cam  # type: ignore[method-assign]
    return clf


def test_a_cam_on_the_lesion_lands_on_its_ct_voxels_and_localizes_it(spec):
    """CAM alignment end to end: blobs drawn on the network grid at a phantom lesion (and a decoy) come back on
    the CT grid where the lesion is; localization picks the lesion, not the decoy; the lesion mask covers it."""
    ph = make_phantom(PhantomConfig(shape=(40, 128, 128), spacing=(6.0, 2.7, 2.7), n_ggo=1, n_consolidation=0,
                                    seed=4))
    (lesion,) = ph.lesions
    labels = lung_labels(ph)
    clf = VolumeClassifier(spec, device="cpu", module=decovnet())
    grid = clf.preprocessor.grid(labels > 0, ph.config.spacing)
    centre = [(a + b - 1) / 2 for a, b in lesion.bbox]
    decoy = (centre[0], centre[1], ph.volume.shape[2] - 1 - centre[2])  # the mirror place in the other lung
    t, h, w = np.ogrid[: grid.shape[0], : grid.shape[1], : grid.shape[2]]
    lo, hi = (grid.to_network_index([a for a, _ in lesion.bbox]), grid.to_network_index([b for _, b in lesion.bbox]))
    r = np.maximum((hi - lo) / 2, 1.0)  # the lesion's half size on the network grid

    def blob(ct_index):
        q = grid.to_network_index(ct_index)
        return np.exp(-(((t - q[0]) / r[0]) ** 2 + ((h - q[1]) / r[1]) ** 2 + ((w - q[2]) / r[2]) ** 2))

    maps = {"res_b": blob(decoy), "clf1": blob(centre), "clf2": blob(centre)}
    _fixed_cam(clf, maps)
    paper = VolumeScreeningConfig(lesions=ScreeningConfig(lesion_model=None))  # the paper's mask: HU rule + region
    pred = run_volume(ph.volume.array, ph.config.spacing, clf, lung_labels=labels, config=paper)
    assert pred.lesion_method == "HU range inside the heat map"
    peak = np.unravel_index(int(pred.heatmap.argmax()), pred.heatmap.shape)
    assert centre_in_box(peak, lesion.bbox)
    assert pred.localization["depth"] in ("clf1", "clf2") and pred.localization["overlap_ml"] > 0
    assert centre_in_box(pred.lesion_centre, lesion.bbox)
    assert (pred.lesion_mask.astype(bool) & ph.masks["ggo"]).sum() > 0.3 * ph.masks["ggo"].sum()
    negative = _fixed_cam(VolumeClassifier(spec, device="cpu", module=decovnet()), maps, logits=(3.0, -3.0))
    quiet = run_volume(ph.volume.array, ph.config.spacing, negative, lung_labels=labels, config=paper)
    assert quiet.lesion_centre is None and not quiet.localization["positive"]
    assert quiet.heatmap.max() < 0.01 and not quiet.lesion_mask.any()  # heat x P(COVID) ~ 0.0025
    # by default the lesion mask comes from DCN, whatever DeCoVNet's P(COVID): the lesion is still there
    default = run_volume(ph.volume.array, ph.config.spacing, negative, lung_labels=labels)
    assert default.lesion_method == "dcn" and set(np.unique(default.lesion_mask)) <= {0, 3, 4}
    assert not (default.lesion_mask.astype(bool) & (labels == 0)).any()


def test_cancel_stops_the_analysis(classifier, phantom):
    labels = lung_labels(phantom)
    with pytest.raises(Cancelled):
        run_volume(phantom.volume.array, SPACING, classifier, lung_labels=labels, cancel=lambda: True)
    seen: list[tuple[float, str]] = []
    with pytest.raises(Cancelled):  # inside the forward pass, at a layer
        run_volume(phantom.volume.array, SPACING, classifier, lung_labels=labels,
                   progress=lambda f, m: seen.append((f, m)), cancel=lambda: any("res_b" in m for _, m in seen))
    assert seen[-1][0] < 0.75 and "res_b" in seen[-1][1]
    with pytest.raises(Cancelled):  # during the lung segmentation
        run_volume(phantom.volume.array, SPACING, classifier, cancel=lambda: True)


def test_run_dispatches_volume_models(registered, phantom):
    labels = lung_labels(phantom)
    volume = phantom.volume.array
    by_spec = run(volume, SPACING, registered, device="cpu", lung_labels=labels)
    by_name = run(volume, SPACING, "decovnet", device="cpu", lungs="threshold")  # lungs segmented here
    assert by_spec.input_kind == by_name.input_kind == "volume" and by_spec.model == "decovnet"
    assert set(np.unique(by_name.lung_mask)) <= {0, 1, 2} and by_name.lung_mask.any()
    assert isinstance(load_model("decovnet", device="cpu"), VolumeClassifier)
    with pytest.raises(ValueError, match="torch only"):
        load_model("decovnet", backend="onnx")
    with pytest.raises(ValueError, match="not a screening model"):
        run(volume, SPACING, dataclasses.replace(registered, screens=False))
    with pytest.raises(ValueError, match="unknown lung"):
        run(volume, SPACING, "decovnet", device="cpu", lungs="magic")
    cfg = VolumeScreeningConfig(positive_threshold=1.1)  # never positive: no localized lesion
    assert run_volume(volume, SPACING, "decovnet", device="cpu", lung_labels=labels, config=cfg).lesion_centre is None


def _nifti_case(tmp_path, phantom):
    from viewer.io.volumes import write_volume

    return write_volume(phantom.volume, tmp_path / "in" / "case1.nii.gz")


def test_screen_command_with_decovnet_writes_aligned_outputs(registered, phantom, tmp_path, capsys):
    from app.cli import main
    from viewer.io.volumes import read_volume_file

    path = _nifti_case(tmp_path, phantom)
    out = tmp_path / "out"
    assert main(["screen", str(path), "--out", str(out), "--model", "decovnet", "--lungs", "threshold",
                 "--device", "cpu"]) == 0
    assert "p=" in capsys.readouterr().out
    with open(out / "results.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["case"] == "case1" and row["slices"] == "0" and 0.5 < float(row["probability"]) <= 1
    data = json.loads((out / "results.json").read_text())
    assert data["model"] == "decovnet" and data["input_kind"] == "volume" and data["lungs"] == "threshold"
    assert data["heatmap"] == "grad-cam"
    summary = json.loads((out / "case1" / "prediction.json").read_text())
    assert summary["input_kind"] == "volume" and summary["localization"]["depth"] in CAM_DEPTHS
    ct = read_volume_file(path)
    for name in ("heatmap", "lesions", "lungs"):
        mask = read_volume_file(out / "case1" / f"{name}.nii.gz")
        assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine, atol=1e-3)
    lungs = read_volume_file(out / "case1" / "lungs.nii.gz").array
    assert read_volume_file(out / "case1" / "heatmap.nii.gz").array[lungs == 0].max() == 0


def test_screen_command_rejects_bad_lungs_and_models(registered, tmp_path, capsys, monkeypatch):
    from app.cli import EXIT_BAD_INPUT, EXIT_USAGE, LUNG_METHODS, main
    from inference.lungs.select import LUNG_METHODS as INFERENCE_LUNG_METHODS

    assert LUNG_METHODS == INFERENCE_LUNG_METHODS
    with pytest.raises(SystemExit) as info:
        main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), "--lungs", "magic"])
    assert info.value.code == EXIT_USAGE and "invalid choice" in capsys.readouterr().err
    assert main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "nope"]) == EXIT_USAGE
    assert "decovnet" in capsys.readouterr().err
    monkeypatch.setitem(_REGISTRY, "decovnet", dataclasses.replace(registered, weights=None))
    assert main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "decovnet"]) == EXIT_BAD_INPUT
    assert "no shipped weights" in capsys.readouterr().err
    monkeypatch.setitem(_REGISTRY, "decovnet", registered)
    assert main(["screen", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "decovnet",
                 "--heatmap", "cam"]) == EXIT_BAD_INPUT  # the paper's CAM is a slice model's
    assert "makes Grad-CAM heat maps only, not 'cam'" in capsys.readouterr().err


def test_models_command_lists_decovnet_with_its_card(registered, capsys):
    from app.cli import main

    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["decovnet"]["weights"].endswith("decovnet.pt")
    assert rows["decovnet"]["validation_metrics"]["roc_auc"] == 0.5


def test_gui_picker_offers_decovnet_and_analyze_adds_its_overlays(qtbot, registered, phantom, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("LUNGLENS_CONFIG_DIR", str(tmp_path / "cfg"))
    from app.gui.analysis import HEATMAP_LAYER, MASK_LAYER, usable_models
    from app.gui.main_window import MainWindow

    assert "decovnet" in usable_models()
    path = _nifti_case(tmp_path, phantom)
    win = MainWindow(interactive=False)
    qtbot.addWidget(win)
    models = [win.model_box.itemText(i) for i in range(win.model_box.count())]
    lung_methods = [win.lung_box.itemData(i) for i in range(win.lung_box.count())]
    assert "decovnet" in models and lung_methods[0] == "threshold"
    win.model_box.setCurrentText("decovnet")
    assert not win.heatmap_box.isEnabled()  # a volume model makes Grad-CAM only
    with qtbot.waitSignal(win.volume_loaded, timeout=20000):
        win.open_path(str(path))
    failures = []
    win.analysis_failed.connect(failures.append)
    with qtbot.waitSignal(win.analysis_done, timeout=60000) as blocker:
        win.analyze()  # the pickers' choices, in the worker thread (Grad-CAM needs autograd there)
    pred = blocker.args[0]
    assert failures == [] and pred.model == "decovnet" and pred.input_kind == "volume"
    assert pred.heatmap_method == "grad-cam"
    assert HEATMAP_LAYER in win.state.layers and MASK_LAYER in win.state.layers
    assert "P(COVID)" in win.results.headline.text()
    assert "volumetric" in win.results.plot.getPlotItem().titleLabel.text
    assert len(win.results.plot_x) > 0
    k = int(win.results.plot_x[len(win.results.plot_x) // 2])
    win.results.jump_to_slice(k + 0.3)
    assert win.state.cursor[0] == k
    assert not win.results.lesion_button.isHidden()
    win.results.lesion_button.click()
    assert win.state.cursor == tuple(int(round(c)) for c in pred.lesion_centre)
    win.close()

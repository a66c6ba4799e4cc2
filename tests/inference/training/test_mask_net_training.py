"""Training COVID-CT-Mask-Net's segmentation model: augmentation that keeps boxes and masks together, the
cross-validation run writing weights and a card that load back, bad folders refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from app.cli import EXIT_BAD_INPUT, EXIT_OK, main
from inference.inferers.instances import InstanceSegmenter
from inference.models._api import load_weights
from inference.models.covid_ct_mask_net import lesion_segmentation_model
from inference.training.datasets.lesion_instances import InstanceSample, target_of
from inference.training.recipes.mask_net import MODEL_NAME, MaskNetTrainConfig, _augmented, cross_validate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _semiseg(root, n: int = 4, size: int = 64) -> None:
    """A COVID-SemiSeg-style folder: n slices with one or two bright lesions each (binary masks in GT/)."""
    (root / "Imgs").mkdir(parents=True)
    (root / "GT").mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        image = rng.uniform(0.05, 0.2, (size, size))
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 24, 2)
        mask[y:y + 16, x:x + 14] = 255
        if k % 2:
            mask[2:14, 2:12] = 255
        image[mask > 0] = 0.8
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "Imgs" / f"{k + 1}.png")
        Image.fromarray(mask).save(root / "GT" / f"{k + 1}.png")


def test_a_flipped_sample_keeps_each_box_around_its_mask():
    masks = np.zeros((2, 30, 40), bool)
    masks[0, 5:15, 2:12] = True
    masks[1, 18:28, 25:39] = True
    sample = InstanceSample("s", torch.rand(3, 30, 40), target_of(masks))
    cfg = MaskNetTrainConfig(hflip=1.0)
    image, target = _augmented(sample, cfg, torch.Generator().manual_seed(0))
    assert image.shape == (3, 30, 40) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    np.testing.assert_array_equal(target["masks"].numpy(), masks[:, :, ::-1])
    for box, m in zip(target["boxes"].numpy(), target["masks"].numpy()):
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
    np.testing.assert_array_equal(sample.target["masks"].numpy(), masks)  # the sample itself is untouched


def test_cross_validation_writes_weights_and_a_card_that_load_back(tmp_path):
    _semiseg(tmp_path / "data")
    cfg = MaskNetTrainConfig(epochs=2, folds=2, short_side=64, warmup_steps=2, device="cpu")
    card = cross_validate(tmp_path / "data", tmp_path / "out", cfg, log=lambda _: None)
    written = json.loads((tmp_path / "out" / f"{MODEL_NAME}.card.json").read_text())
    assert written["sha256"] == card["sha256"]
    assert written["not_for_clinical_diagnosis"] is True and set(written["validation_metrics"]) == {
        "cv_map", "cv_ap50", "cv_ap75", "cv_dice"}
    folds = written["cross_validation"]["folds"]
    assert len(folds) == 2 and all(0.0 <= f["dice"] <= 1.0 and 0.0 <= f["map"] <= 1.0 for f in folds)
    assert written["recipe"]["short_side"] == 64 and len(written["history"]) == 2
    stored = torch.load(tmp_path / "out" / f"{MODEL_NAME}.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    model = lesion_segmentation_model(short_side=64)
    model.load_state_dict(load_weights(tmp_path / "out" / f"{MODEL_NAME}.pt", written["sha256"]))
    found = InstanceSegmenter(device="cpu", module=model).find(np.full((64, 64), 0.1, np.float32))
    assert found.masks.shape[1:] == (64, 64)


def test_the_cli_trains_and_refuses_a_folder_without_masks(tmp_path, capsys):
    _semiseg(tmp_path / "data", n=2)
    assert main(["train", "covid-ct-mask-net", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                 "--epochs", "1", "--folds", "1", "--short-side", "64", "--device", "cpu"]) == EXIT_OK
    assert (tmp_path / "o" / f"{MODEL_NAME}.pt").is_file()
    (tmp_path / "bare" / "Imgs").mkdir(parents=True)
    assert main(["train", "covid-ct-mask-net", "--data", str(tmp_path / "bare"), "--out",
                 str(tmp_path / "o2")]) == EXIT_BAD_INPUT
    assert "no mask folder" in capsys.readouterr().err
    assert main(["train", "covid-ct-mask-net", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o3"),
                 "--folds", "3"]) == EXIT_BAD_INPUT  # 2 slices cannot make 3 folds

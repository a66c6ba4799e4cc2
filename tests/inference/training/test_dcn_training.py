"""DCN training recipe (issue 15) on phantom slices in the COVID-SemiSeg layout: a tiny model trained in seconds."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.models._api import sha256_of
from inference.models.dcn import DCN
from inference.training.datasets.ct_crops import jpeg_roundtrip, lung_crops
from inference.training.datasets.phantom_lesions import EXPORT_WINDOW_HU, lesion_labels, volume_slices, window01
from inference.training.datasets.volumes import DatasetError
from inference.training.recipes.dcn import (
    ALL_SLICES,
    CHECKPOINT,
    OUT_OF_FOLD,
    DCNTrainConfig,
    SelfTraining,
    _split_negatives,
    augment,
    cross_validate,
    slice_dice,
    train,
)
from viewer.synthetic.phantom import make_phantom

SHAPE, SPACING = (16, 64, 64), (18.0, 3.5, 3.5)  # small volumes whose lesions still span several pixels
# held-out mean per-slice Dice after FAST: measured 0.147, 0.144, 0.220 (seeds 0, 1, 2); untrained ~0.02-0.05
DICE_FLOOR = 0.08
FAST = dict(size=64, base=8, epochs=20, folds=3, batch_size=4, lr=3e-3, seed=0, negatives_per_positive=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _phantom(seed: int):
    p = make_phantom(shape=SHAPE, spacing=SPACING, seed=seed, n_ggo=6, n_consolidation=3)
    return p.volume.array, p.masks["ggo"], p.masks["consolidation"]


@pytest.fixture(scope="module")
def semiseg(tmp_path_factory) -> Path:
    """A COVID-SemiSeg-layout folder: the lesion slices of three phantoms (8-bit JPEGs, palette masks)."""
    root = tmp_path_factory.mktemp("semiseg")
    (root / "Imgs").mkdir()
    (root / "GT-multiclass").mkdir()
    n = 0
    for seed in (0, 1, 2):
        for image, labels, _ in volume_slices(*_phantom(seed), True, lesions="with"):
            Image.fromarray(np.round(255 * image).astype(np.uint8)).save(root / "Imgs" / f"{n}.jpg", quality=95)
            mask = Image.fromarray(labels, mode="P")
            mask.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
            mask.save(root / "GT-multiclass" / f"{n}.png")
            n += 1
    return root


@pytest.fixture(scope="module")
def negatives() -> list:
    """Clean phantom slices (no lesions) as the negatives COVID-SemiSeg lacks."""
    return volume_slices(*_phantom(5), False, lesions="without")


def test_phantom_slices_helpers():
    hu = np.array([[-1080.0, 200.0, 2000.0]])
    assert window01(hu).tolist() == [[0.0, 1.0, 1.0]] and EXPORT_WINDOW_HU == (-1080.0, 200.0)
    assert lesion_labels(np.array([True, True, False]), np.array([False, True, False])).tolist() == [1, 2, 0]
    vol = np.zeros((3, 4, 4))
    ggo = np.zeros((3, 4, 4), bool)
    ggo[1, 1, 1] = True
    assert len(volume_slices(vol, ggo, ~np.ones_like(ggo), True, lesions="with")) == 1
    assert len(volume_slices(vol, ggo, ~np.ones_like(ggo), False, lesions="without")) == 2


def test_augment_keeps_labels_aligned():
    cfg = DCNTrainConfig(intensity=0.0, scale=(1.0, 1.0), rotate_deg=0.0, elastic=0.0, gamma=(1.0, 1.0), noise=0.0)
    x = torch.zeros(4, 16, 16)
    x[:, 2:5, 3:9] = 1.0
    y = (x > 0).to(torch.uint8)
    xa, ya = augment(x, y, cfg, torch.Generator().manual_seed(0))
    assert xa.shape == (4, 1, 16, 16) and ya.shape == (4, 16, 16)
    assert torch.equal(xa[:, 0] > 0.5, ya > 0) and int(ya.sum()) == int(y.sum())


def test_augment_warps_image_and_labels_together():
    """Rotation, scale and the elastic warp move labels with the image; grey-level jitter leaves labels alone."""
    cfg = DCNTrainConfig(intensity=0.0, gamma=(1.0, 1.0), noise=0.0, rotate_deg=30.0, elastic=0.05)
    x = torch.zeros(8, 64, 64)
    x[:, 20:40, 16:44] = 1.0
    y = (x > 0).to(torch.uint8)
    xa, ya = augment(x, y, cfg, torch.Generator().manual_seed(1))
    img, lab = xa[:, 0] > 0.5, ya > 0
    iou = (img & lab).sum((1, 2)).float() / (img | lab).sum((1, 2)).float()
    assert float(iou.min()) > 0.9 and not torch.equal(lab, y > 0)  # moved, and moved together
    jitter = DCNTrainConfig(rot90=False, flip_p=0.0, scale=(1.0, 1.0), rotate_deg=0.0, elastic=0.0)
    xj, yj = augment(x, y, jitter, torch.Generator().manual_seed(2))
    assert torch.equal(yj, y.long()) and not torch.equal(xj[:, 0], x)
    assert 0.0 <= float(xj.min()) <= float(xj.max()) <= 1.0


def test_slice_dice():
    p = torch.tensor([[[1, 0], [0, 0]], [[0, 0], [0, 0]]])
    t = torch.tensor([[[2, 0], [0, 1]], [[0, 0], [0, 0]]])
    assert slice_dice(p, t).tolist() == pytest.approx([2 / 3, 1.0])


def test_train_writes_fp16_weights_card_and_history(semiseg, negatives, tmp_path):
    logs: list[str] = []
    ticks: list[float] = []
    res = train(semiseg, tmp_path, DCNTrainConfig(**{**FAST, "epochs": 2}), extra=negatives,
                progress=lambda f, _: ticks.append(f), log=logs.append)
    assert res.weights == tmp_path / "dcn.pt" and res.card == tmp_path / "dcn.card.json"
    state = torch.load(res.weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    card = json.loads(res.card.read_text())
    assert set(card["validation_metrics"]) == {"dice_mean", "dice_sd", "dice_ggo", "dice_consolidation"}
    assert set(card["validation_metrics_fp16_tta"]) == set(card["validation_metrics"])
    assert card["preprocessing"]["ct_window_hu"] == [-1080.0, 200.0] and card["not_for_clinical_diagnosis"]
    assert any("512" in d for d in card["deviations"]) and any("scratch" in d for d in card["deviations"])
    assert "non-commercial" in card["training_data"]["terms"] and card["training_data"]["extra_negatives"] > 0
    history = json.loads((tmp_path / "dcn.history.json").read_text())
    assert len(history) == 2 and 1 <= res.best_epoch <= 2
    assert ticks[-1] == pytest.approx(1.0) and any("best epoch" in m for m in logs)


def test_finds_phantom_lesions(semiseg, negatives, tmp_path):
    """A tiny DCN finds phantom lesions on the held-out fold (see DICE_FLOOR); a seed gives the same run."""
    res = train(semiseg, tmp_path / "a", DCNTrainConfig(**FAST), extra=negatives, log=lambda _: None)
    assert res.metrics["dice_mean"] > DICE_FLOOR
    again = train(semiseg, tmp_path / "b", DCNTrainConfig(**{**FAST, "epochs": 1}), extra=negatives,
                  log=lambda _: None)
    assert again.history[0] == pytest.approx({**res.history[0], "seconds": again.history[0]["seconds"]})


def test_time_limit_stops_after_one_epoch(semiseg, tmp_path):
    res = train(semiseg, tmp_path, DCNTrainConfig(**{**FAST, "time_limit_min": 1e-6}), log=lambda _: None)
    assert len(res.history) == 1 and res.weights.is_file()


def test_cross_validate_reports_mean_and_sd(semiseg, tmp_path):
    res = cross_validate(semiseg, tmp_path, DCNTrainConfig(**{**FAST, "epochs": 1}), log=lambda _: None)
    card = json.loads((tmp_path / "dcn.card.json").read_text())
    cv = card["cross_validation"]
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3 and cv["dice_sd"] >= 0
    assert {"dice_ggo_mean", "dice_consolidation_mean", "tta_dice_mean", "tta_dice_ggo_mean"} <= set(cv)
    assert res.metrics["cv_dice_mean"] == cv["dice_mean"]
    assert all((tmp_path / f"fold{k}" / "dcn.pt").is_file() for k in range(3))
    assert (tmp_path / "dcn.pt").is_file() and (tmp_path / "dcn.history.json").is_file()


def test_cli_trains_dcn(semiseg, tmp_path, capsys):
    from app.cli import main

    rc = main(["train", "dcn", "--data", str(semiseg), "--out", str(tmp_path), "--epochs", "1", "--size", "64",
               "--base", "8", "--fold", "1", "--threads", "1"])
    assert rc == 0 and (tmp_path / "dcn.pt").is_file()
    assert json.loads((tmp_path / "dcn.card.json").read_text())["config"]["fold"] == 1
    assert "wrote" in capsys.readouterr().out


def test_resume_continues_the_same_run(semiseg, negatives, tmp_path):
    """Stopped by the time limit after epoch 1 and resumed: the same two epochs as one uninterrupted run."""
    cfg = DCNTrainConfig(**{**FAST, "epochs": 2})
    whole = train(semiseg, tmp_path / "whole", cfg, extra=negatives, log=lambda _: None)
    train(semiseg, tmp_path / "split", replace(cfg, time_limit_min=1e-6), extra=negatives, log=lambda _: None)
    assert len(json.loads((tmp_path / "split" / "dcn.history.json").read_text())) == 1
    logs: list[str] = []
    resumed = train(semiseg, tmp_path / "split", replace(cfg, resume=True), extra=negatives, log=logs.append)
    assert any("resumed after epoch 1" in m for m in logs)
    assert len(resumed.history) == len(whole.history) == 2
    for a, b in zip(resumed.history, whole.history):
        assert {**a, "seconds": 0} == pytest.approx({**b, "seconds": 0})
    with pytest.raises(DatasetError, match="resume with the same settings"):
        train(semiseg, tmp_path / "split", replace(cfg, resume=True, lr=1e-4), extra=negatives, log=lambda _: None)


def test_cross_validation_resumes_finished_folds_and_trains_a_final_model(semiseg, negatives, tmp_path):
    cfg = DCNTrainConfig(**{**FAST, "epochs": 2})
    cross_validate(semiseg, tmp_path, cfg, extra=negatives, log=lambda _: None)
    (tmp_path / "fold1" / CHECKPOINT).unlink()  # as an earlier run without checkpoints left it
    before = (tmp_path / "fold1" / "dcn.pt").read_bytes()
    logs: list[str] = []
    res = cross_validate(semiseg, tmp_path, replace(cfg, resume=True), extra=negatives, final=True, log=logs.append)
    assert any("fold 2 was finished by an earlier run" in m for m in logs)
    assert (tmp_path / "fold1" / "dcn.pt").read_bytes() == before
    assert any("resumed after epoch 2" in m for m in logs)  # folds 0 and 2 from their checkpoints
    card = json.loads((tmp_path / "dcn.card.json").read_text())
    assert card["shipped_fold"] == "final (every slice)" and "every slice" in card["training_data"]["dataset"]
    cv = card["cross_validation"]
    assert cv["folds"] == 3 and card["validation_metrics"] == {
        "cv_dice": cv["dice_mean"], "cv_dice_ggo": cv["dice_ggo_mean"],
        "cv_dice_consolidation": cv["dice_consolidation_mean"]}
    assert card["patient_level"]["composed_cases"] > 0 and "out-of-fold" in card["patient_level"]["slices"]
    blocks = [json.loads((tmp_path / f"fold{k}" / OUT_OF_FOLD).read_text()) for k in range(3)]
    assert sum(len(b["negative"]) for b in blocks) == len(negatives)  # each negative held out once
    assert card["sha256"] == sha256_of(tmp_path / "dcn.pt") and res.weights == tmp_path / "dcn.pt"
    history = json.loads((tmp_path / "final" / "dcn.history.json").read_text())
    assert 1 <= len(history) <= 2 and "dice_mean" not in history[0]


def test_patient_level_is_fitted_and_shipped_with_the_weights(semiseg, negatives, tmp_path):
    res = train(semiseg, tmp_path, DCNTrainConfig(**{**FAST, "epochs": 1}), extra=negatives, log=lambda _: None)
    card = json.loads(res.card.read_text())
    level = card["patient_level"]
    assert 0.0 <= level["composed_val_roc_auc"] <= 1.0 and level["composed_cases"] > 0
    state = torch.load(res.weights, weights_only=True)
    model = DCN(base=8)
    model.load_state_dict(state)  # strict: the SPM is in the file
    assert torch.equal(state["spm.net.0.weight"].float(), model.spm.net[0].weight.data)
    assert card["sha256"] == sha256_of(res.weights)
    alone = train(semiseg, tmp_path / "alone", DCNTrainConfig(**{**FAST, "epochs": 1}), log=lambda _: None)
    assert json.loads(alone.card.read_text())["patient_level"]["fitted"] is False


def test_self_training_learns_from_a_teachers_labels(semiseg, negatives, tmp_path):
    """Unlabelled slices train with the teacher's labels; per fold the teacher is that fold's model."""
    cfg = DCNTrainConfig(**{**FAST, "epochs": 1})
    cross_validate(semiseg, tmp_path / "teacher", cfg, extra=negatives, log=lambda _: None)
    unlabelled = [(image, k % 2 == 0) for k, (image, _, _) in enumerate(negatives[:6])]
    st = SelfTraining(unlabelled, tmp_path / "teacher", "phantoms")
    logs: list[str] = []
    res = cross_validate(semiseg, tmp_path / "student", cfg, extra=negatives, self_training=st, log=logs.append)
    assert sum("self-training: 6 slices labelled by" in m and "fold" in m for m in logs) == 3
    info = json.loads(res.card.read_text())["training_data"]["self_training"]
    assert info["pseudo_labelled_slices"] == 6 and info["covid_flagged"] == 3 and info["source"] == "phantoms"
    assert info["teacher_sha256"] == sha256_of(tmp_path / "teacher" / "fold0" / "dcn.pt")
    with pytest.raises(DatasetError, match="not DCN weights"):
        train(semiseg, tmp_path / "bad", cfg, self_training=SelfTraining(unlabelled, semiseg / "Imgs" / "0.jpg"),
              log=lambda _: None)


def test_negatives_are_held_out_in_contiguous_blocks_per_fold():
    extra = [(np.full((2, 2), i, np.float32), np.zeros((2, 2), np.uint8), i in (0, 5)) for i in range(12)]
    held = [_split_negatives(extra, DCNTrainConfig(folds=3, fold=k))[1] for k in range(3)]
    ids = [[int(e[0][0, 0]) for e in h] for h in held]
    assert ids == [[1, 2, 3, 4], [6, 7, 8], [9, 10, 11]]  # positives (0, 5) always train
    kept, none = _split_negatives(extra, DCNTrainConfig(folds=3, fold=ALL_SLICES))
    assert len(kept) == 12 and none == []
    kept, held0 = _split_negatives(extra, DCNTrainConfig(folds=3, fold=0))
    assert len(kept) + len(held0) == 12 and not {id(e) for e in kept} & {id(e) for e in held0}


def test_jpeg_roundtrip_quantizes_like_the_annotated_images():
    rng = np.random.default_rng(0)
    image = np.clip(0.5 + 0.2 * rng.standard_normal((64, 80)), 0, 1).astype(np.float32)
    out = jpeg_roundtrip(image)
    assert out.shape == image.shape and out.dtype == np.float32 and 0.0 <= out.min() <= out.max() <= 1.0
    assert np.allclose(out * 255, np.rint(out * 255), atol=1e-4)  # 8-bit levels
    err = float(np.abs(out - image).mean())
    assert 0.005 < err < 0.15  # lossy at quality 75, yet the same image
    assert float(np.abs(jpeg_roundtrip(image, 100) - image).mean()) < err
    hu = np.full((3, 20, 20), 200.0, np.float32)
    crops = lung_crops(hu, np.ones(hu.shape, bool), False, jpeg_quality=75)
    assert len(crops) == 3 and np.allclose(crops[0][0], 1.0, atol=2 / 255)


def test_lung_crops_cut_the_lung_box_in_the_export_window():
    hu = np.full((6, 40, 50), -1080.0, np.float32)
    lungs = np.zeros(hu.shape, bool)
    lungs[1:5, 10:30, 5:45] = True
    lungs[1, 10:12, 5:7] = False  # a small slice: under the share, left out
    lungs[1] = False
    lungs[1, 10:12, 5:7] = True
    hu[lungs] = 200.0
    crops = lung_crops(hu, lungs, is_covid=False)
    assert len(crops) == 3  # slices 2-4
    image, labels, covid = crops[0]
    assert image.shape == labels.shape == (20 + 2 * 2, 40 + 2 * 4)  # the box grown by 12 % of its size
    assert image.max() == 1.0 and image.min() == 0.0 and not labels.any() and covid is False
    assert lung_crops(hu, np.zeros_like(lungs), True) == []
    with pytest.raises(ValueError, match="shape"):
        lung_crops(hu, lungs[:-1], True)


def test_config_fields_are_the_cli_defaults():
    from inference.core.choices import DCN_TRAIN

    assert set(DCN_TRAIN) <= {f.name for f in fields(DCNTrainConfig)}

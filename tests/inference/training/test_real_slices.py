"""Real-CT slice training data (as screening sees the slices) and the slice fusion with the lesion share."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inference.core.metrics import roc_auc
from inference.screening.config import ScreeningConfig
from inference.screening.fusion import SliceFusion, fit_fusion, lesion_share
from inference.screening.steps import slice_image, slice_plan
from inference.training.datasets.real_slices import RealSlices, slice_labels, volume_slices
from inference.transforms.common import LUNG_WINDOW
from viewer.synthetic.phantom import PhantomConfig, make_phantom

SHAPE, SPACING = (40, 96, 96), (5.0, 3.6, 3.6)


@pytest.fixture(scope="module")
def phantom():
    ph = make_phantom(PhantomConfig(shape=SHAPE, spacing=SPACING, n_ggo=4, n_consolidation=2, seed=3))
    labels = ph.label_map()
    return ph.volume.array, labels > 0, np.isin(labels, (3, 4))


def test_slices_are_the_pictures_screening_classifies(phantom):
    hu, lungs, _ = phantom
    infected = np.zeros(len(hu), bool)
    infected[10:20] = True
    got = volume_slices(hu, SPACING, lungs, kind="covid", window=LUNG_WINDOW, infected=infected, case="c")
    plan = slice_plan(lungs, SPACING, ScreeningConfig())
    assert np.array_equal(got.index, plan.lung_slices) and len(got) > 20
    for image, k in zip(got.images, got.index):
        assert np.array_equal(image, slice_image(hu, int(k), plan.box, LUNG_WINDOW))
    assert np.array_equal(got.labels, infected[got.index].astype(int))
    assert set(got.case) == {"c"} and np.isnan(got.share).all()


def test_kinds_label_or_leave_out_the_infected_slices(phantom):
    hu, lungs, _ = phantom
    infected = np.zeros(len(hu), bool)
    infected[10:20] = True
    pneumonia = volume_slices(hu, SPACING, lungs, kind="pneumonia", window=LUNG_WINDOW, infected=infected)
    negative = volume_slices(hu, SPACING, lungs, kind="negative", window=LUNG_WINDOW)
    assert not pneumonia.labels.any() and not pneumonia.infected.any()
    assert set(pneumonia.index) == set(negative.index) - set(range(10, 20))
    assert not negative.labels.any() and len(negative) > len(pneumonia)
    with pytest.raises(ValueError, match="needs its slice labels"):
        volume_slices(hu, SPACING, lungs, kind="covid", window=LUNG_WINDOW)
    with pytest.raises(ValueError, match="kind must be one of"):
        volume_slices(hu, SPACING, lungs, kind="flu", window=LUNG_WINDOW)
    with pytest.raises(ValueError, match="slice labels for"):
        volume_slices(hu, SPACING, lungs, kind="covid", window=LUNG_WINDOW, infected=np.zeros(3, bool))


def test_held_out_slabs_are_contiguous_and_every_fifth(phantom):
    hu, lungs, _ = phantom
    got = volume_slices(hu, SPACING, lungs, kind="negative", window=LUNG_WINDOW, slab_mm=20.0, folds=5, fold=1)
    slab = (got.index * SPACING[0] // 20).astype(int)
    assert np.array_equal(got.val, slab % 5 == 1) and got.val.any() and not got.val.all()
    both = RealSlices.empty()
    both.extend(got)
    both.extend(got)
    held = both.subset(both.val)
    assert len(held) == 2 * got.val.sum() and len(held.images) == len(held)


def test_slice_labels_count_from_the_top_and_reject_outside_indices():
    infected, sides = slice_labels({"infected_slices": [0, 2], "lobes_per_slice": {"2": [1, 0, 0, 0, 1]}}, 10)
    assert np.flatnonzero(infected).tolist() == [7, 9]
    assert sides[7].tolist() == [False, True, True] and not sides[9].any()
    with pytest.raises(ValueError, match="outside a volume of 10 slices"):
        slice_labels({"infected_slices": [10]}, 10)


def test_lesion_share_is_per_slice_fraction_of_the_lung(phantom):
    _, lungs, lesions = phantom
    share = lesion_share(lesions, lungs, np.arange(len(lungs)))
    expected = [(lesions[k] & lungs[k]).sum() / lungs[k].sum() if lungs[k].any() else 0.0 for k in range(len(lungs))]
    assert np.allclose(share, expected) and share.max() > 0


def test_fusion_learns_from_both_signals_and_round_trips_through_a_card():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    share = np.where(y, rng.uniform(0.01, 0.3, 400), rng.uniform(0, 0.02, 400) * (rng.random(400) < 0.3))
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, 400) + 1.5 * y)))
    fusion = fit_fusion(p, share, y)
    assert fusion.w_classifier > 0 and fusion.w_share > 0
    fused = fusion(p, share)
    assert fused.dtype == np.float32 and ((fused > 0) & (fused < 1)).all()
    assert roc_auc(y, fused) > max(roc_auc(y, p), roc_auc(y, share))
    assert SliceFusion.from_card(json.loads(json.dumps(fusion.to_card()))) == fusion
    assert SliceFusion.from_card({"w_classifier": "x"}) is None and SliceFusion.from_card(None) is None
    with pytest.raises(ValueError, match="both classes"):
        fit_fusion(p, share, np.zeros(400, bool))


def test_training_with_real_slices_selects_on_both_val_sets_and_ships_the_fusion(phantom, tmp_path):
    from inference.training.recipes.light_squeezenet import TrainConfig, train
    from tests.inference.models.test_light_squeezenet import make_folder

    hu, lungs, lesions = phantom
    infected = lesions.any(axis=(1, 2))
    real = volume_slices(hu, SPACING, lungs, kind="covid", window=LUNG_WINDOW, infected=infected, lesions=lesions,
                         case="ph", slab_mm=10.0, folds=3)
    assert 0 < real.labels[real.val].sum() < real.val.sum() and np.isfinite(real.share).all()
    make_folder(tmp_path / "data")
    cfg = TrainConfig(size=32, pre_size=40, epochs=2, batch_size=8, lr=0.02, warmup_epochs=1, ema_decay=0.0)
    result = train(tmp_path / "data", tmp_path / "out", cfg, log=lambda _m: None, real=real,
                   real_sources=["ph (covid): test"])
    assert all("real_val_slice_auc" in h for h in result.history)
    card = json.loads(result.card.read_text())
    held = card["training_data"]["real_ct_slices"]
    assert held["sources"] == ["ph (covid): test"] and held["val"]["slices"] == int(real.val.sum())
    assert held["train"]["covid"] == int(real.labels[~real.val].sum())
    assert "mean of two validation ROC AUCs" in card["selection"]
    fusion = SliceFusion.from_card(card["slice_fusion"])
    assert fusion is not None and fusion.lesion_model == "dcn"
    assert set(card["slice_fusion"]["held_out_slice_auc"]) == {"classifier", "lesion_share", "fused"}


def test_distillation_pulls_only_the_chosen_rows_toward_the_teacher():
    import torch

    from inference.models.light_squeezenet import light_squeezenet
    from inference.training.recipes.light_squeezenet import distillation

    torch.manual_seed(0)
    teacher = light_squeezenet(num_classes=2).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        same = teacher(x)
    rows = torch.tensor([True, True, False, False])
    assert float(distillation(same, teacher, x, rows, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(same, teacher, x, torch.zeros(4, dtype=torch.bool), 2.0)) == 0.0
    student = (same + torch.tensor([[3.0, -3.0]])).requires_grad_(True)
    loss = distillation(student, teacher, x, rows, 2.0)
    loss.backward()
    assert float(loss.detach()) > 0.1
    assert student.grad[:2].abs().sum() > 0 and student.grad[2:].abs().sum() == 0  # the real slices are left alone

"""A light SqueezeNet trained here, on phantom slices, through the shipped training and screening code.

The training set is built the way a hospital would build one from its own volumes: the slices the
screening pipeline shows the model (`slice_image` in the lung crop), written as a COVID-CT-style folder
and trained with `train_slice.train`. Lesion cases are phantoms with ground-glass opacities and
consolidations; each has a clean twin (same anatomy and noise, no lesions), so the only thing that
separates the classes is the lesions. Held-out anatomies are then screened end to end.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from inference.inferers.slice import SliceClassifier
from inference.models._api import get_model
from inference.models.light_squeezenet import light_squeezenet
from inference.screening.config import ScreeningConfig
from inference.screening.run import run
from inference.screening.steps import slice_image
from inference.training.recipes.light_squeezenet import TrainConfig, train
from inference.transforms.crop import lung_crop_box
from viewer.synthetic.phantom import PhantomConfig, make_phantom

SHAPE, SPACING = (48, 128, 128), (4.5, 2.6, 2.6)
SIZE = 64
TRAIN_SEEDS, VAL_SEED, TEST_SEEDS = range(7), 7, (100, 101, 102)
LESION_LABELS = (3, 4)


def _phantom(seed: int, lesions: bool):
    return make_phantom(PhantomConfig(shape=SHAPE, spacing=SPACING, seed=seed, n_ggo=6 if lesions else 0,
                                      n_consolidation=3 if lesions else 0))


def _lung_labels(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == 2, 2, labels > 0).astype(np.uint8)


def _write_slices(root: Path) -> None:
    """COVID: lesion-case slices with lesions on at least 5 % of the lung; NonCOVID: every clean-twin slice."""
    lists: dict[tuple[str, str], list[str]] = {}
    for cls in ("COVID", "NonCOVID"):
        (root / f"CT_{cls}").mkdir(parents=True)
        (root / "Data-split" / cls).mkdir(parents=True)
    for seed in [*TRAIN_SEEDS, VAL_SEED]:
        split = "val" if seed == VAL_SEED else "train"
        for lesions in (True, False):
            ph = _phantom(seed, lesions)
            labels = ph.label_map()
            lungs = labels > 0
            box = lung_crop_box(lungs)
            area = lungs.sum(axis=(1, 2))
            lesion_area = np.isin(labels, LESION_LABELS).sum(axis=(1, 2))
            keep = (area * SPACING[1] * SPACING[2] >= 400) & ((lesion_area >= 0.05 * area) if lesions else True)
            cls = "COVID" if lesions else "NonCOVID"
            for k in np.nonzero(keep)[0]:
                name = f"s{seed}_{k}.png"
                pixels = (slice_image(ph.volume.array, int(k), box) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / f"CT_{cls}" / name)
                lists.setdefault((cls, split), []).append(name)
    for (cls, split), names in lists.items():
        (root / "Data-split" / cls / f"{split}CT_{cls}.txt").write_text("\n".join(names))


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory) -> SliceClassifier:
    root = tmp_path_factory.mktemp("phantom-slices")
    _write_slices(root)
    # small input and a gentle recipe: 64 px slices, no zoom (the twins differ only in lesions)
    cfg = TrainConfig(size=SIZE, pre_size=72, epochs=40, batch_size=8, lr=0.02, momentum=0.9, warmup_epochs=1,
                      lr_drop_every=100, rotation_deg=5, scale=(1.0, 1.0), shift=0.02, ema_decay=0.0,
                      label_smoothing=0.0, contrast=0.1, noise_sd=0.03, tta=False, normalize="fixed", seed=0)
    torch.manual_seed(0)
    result = train(root, root / "out", cfg, log=lambda _m: None)
    card = json.loads(result.card.read_text())  # the card names this folder, never COVID-CT
    assert card["training_data"]["dataset"] == str(root) and "COVID-CT" not in json.dumps(card["training_data"])
    base = get_model("light-squeezenet")
    spec = dataclasses.replace(base, weights=None, transforms=dataclasses.replace(
        base.transforms, resize=cfg.pre_size, crop=SIZE, normalize=cfg.normalize))
    net = light_squeezenet()
    net.load_state_dict({k: v.float() for k, v in torch.load(result.weights, weights_only=True).items()})
    return SliceClassifier(spec, device="cpu", tta=False, module=net, backend="torch")


@pytest.mark.training
@pytest.mark.timeout(1800)  # the training fixture takes 4 min on 2 idle cores and far longer beside a CPU hog
def test_lesion_cases_score_higher_than_their_clean_twins(phantom_model):
    """Held-out anatomies, screened end to end (case probability = mean over lung slices).

    Measured when written (2026-11-23, fixed normalization, the default Grad-CAM heat map): lesion minus
    clean twin = +0.114, +0.108, +0.130; mean heat in lesions / in the rest of the lungs = 3.72, 3.38,
    2.80; the heat map's peak 0.0, 5.2 and 2.6 mm from a lesion. The paper's CAM on the same model gave
    enrichments 1.97, 1.86, 1.40 and peaks 25, 34 and 0 mm away (its upsampled Fire 9 maps are 4 x 4 at
    this input size); with per-image standardization the gaps were +0.067, +0.039, +0.081 and the CAM
    enrichment 1.02-1.18 (a lesion brightens the whole standardized slice, so the evidence spreads).
    The top-k mean the GUI uses saturates near 1 for both twins with a model this small and this
    briefly trained.

    Rerun 2026-12-02 on a fresh install (same seeds, HEAD and the working tree alike): gaps +0.086,
    +0.078, +0.111; enrichments 4.17, 3.64, 3.88; peaks 3.7, 14.7 and 0.0 mm. A single argmax voxel moves
    a model-input pixel or three with the package versions, so the test asserts on the hottest 1 % of the
    lungs instead: median distance to a lesion 5.2, 10.4 and 0.0 mm where any lung voxel lies 29.8, 29.1
    and 24.0 mm from one (ratios 0.17, 0.36, 0.00).

    Rerun 2026-12-02 later on another fresh install: the same code (the previous commit gave identical figures)
    measured gaps +0.049, +0.046, +0.122; enrichments 1.77, 2.06, 2.10; hottest 1 % 8.4, 11.6 and 4.5 mm
    (ratios 0.28, 0.40, 0.19). The package versions a fresh install picks change this briefly trained model
    that much, so the enrichment floor is 1.5 (chance is 1.0) and the localization check carries the rest.
    """
    config = ScreeningConfig(aggregation="mean")
    gaps, enrichments, hot_ratios = [], [], []
    for seed in TEST_SEEDS:
        probs = {}
        for lesions in (True, False):
            ph = _phantom(seed, lesions)
            labels = ph.label_map()
            pred = run(ph.volume.array, SPACING, phantom_model, lung_labels=_lung_labels(labels), config=config)
            probs[lesions] = pred.positive_probability
            assert pred.heatmap.shape == pred.lesion_mask.shape == labels.shape
            if lesions:  # the lesion mask is enriched in true lesion voxels (CAM-gated abnormal density)
                found, truth = pred.lesion_mask > 0, np.isin(labels, LESION_LABELS)
                precision, prevalence = truth[found].mean(), truth.sum() / (labels > 0).sum()
                assert found.any() and precision > 3 * prevalence, (precision, prevalence)
                print(f"seed {seed}: lesion-mask precision {precision:.2f}, lesion share of the lungs {prevalence:.3f}")
                heat, lungs = pred.heatmap, labels > 0
                enrichment = heat[truth].mean() / max(heat[lungs & ~truth].mean(), 1e-9)
                to_lesion = ndimage.distance_transform_edt(~truth, sampling=SPACING)
                peak = to_lesion[np.unravel_index(np.argmax(heat), heat.shape)]
                hottest = to_lesion[lungs & (heat >= np.quantile(heat[lungs], 0.99))]
                chance = float(np.median(to_lesion[lungs]))
                print(f"seed {seed}: heat in lesions / heat in the rest of the lungs = {enrichment:.2f}; hottest 1 % "
                      f"of the lungs {np.median(hottest):.1f} mm from a lesion (median; any lung voxel {chance:.1f} "
                      f"mm); peak {peak:.1f} mm")
                enrichments.append(enrichment)
                hot_ratios.append(float(np.median(hottest)) / chance)
        gaps.append(probs[True] - probs[False])
    print("lesion minus clean twin:", [round(g, 3) for g in gaps])
    assert min(gaps) > 0 and float(np.mean(gaps)) > 0.02, gaps
    print("CAM enrichment in lesions:", [round(float(e), 2) for e in enrichments])
    assert min(enrichments) > 1.5, enrichments  # the heat map sits on the lesions more than on the rest
    # and its hottest voxels lie at lesions: far closer to one than lung voxels at random
    print("hottest 1 % distance / chance:", [round(r, 2) for r in hot_ratios])
    assert max(hot_ratios) < 0.5, hot_ratios

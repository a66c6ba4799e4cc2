"""Classic lung segmentation (inference.lungs.threshold) against the phantom's ground truth."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from inference.core.types import Cancelled
from inference.lungs.common import LungMasks
from inference.lungs.threshold import segment_lungs
from viewer.synthetic.phantom import Phantom, PhantomConfig, make_phantom

SHAPE = (48, 128, 128)
SPACING = (6.0, 2.7, 2.7)


@cache
def phantom(seed: int, n_consolidation: int = 1, n_ggo: int = 2, shape: tuple[int, int, int] = SHAPE,
            spacing: tuple[float, float, float] = SPACING) -> Phantom:
    return make_phantom(PhantomConfig(shape=shape, spacing=spacing, n_ggo=n_ggo, n_consolidation=n_consolidation,
                                      seed=seed))


@cache
def segmented(seed: int, n_consolidation: int = 1, n_ggo: int = 2, shape: tuple[int, int, int] = SHAPE,
              spacing: tuple[float, float, float] = SPACING) -> LungMasks:
    ph = phantom(seed, n_consolidation, n_ggo, shape, spacing)
    return segment_lungs(ph.volume.array, ph.volume.spacing)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def fraction_inside(part: np.ndarray, mask: np.ndarray) -> float:
    return float((part & mask).sum()) / max(int(part.sum()), 1)


def mean_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[2].mean())


# ----------------------------------------------------------------------------------------------
# accuracy on the phantom


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_lung_matches_the_phantom(seed):
    ph, masks = phantom(seed), segmented(seed)
    assert dice(masks.left, ph.masks["lung_left"]) >= 0.97
    assert dice(masks.right, ph.masks["lung_right"]) >= 0.97
    assert mean_x(masks.left) > mean_x(masks.right)  # x grows toward the patient's left


@pytest.mark.parametrize("seed", [0, 1])
def test_consolidation_at_the_pleura_stays_in_the_lung(seed):
    ph, masks = phantom(seed, n_consolidation=4), segmented(seed, n_consolidation=4)
    assert ph.masks["consolidation"].sum() > 200
    assert fraction_inside(ph.masks["consolidation"], masks.lungs) >= 0.95
    assert dice(masks.left, ph.masks["lung_left"]) >= 0.97
    assert dice(masks.right, ph.masks["lung_right"]) >= 0.97


def test_ground_glass_is_inside_and_the_central_airways_are_not():
    ph, masks = phantom(0), segmented(0)
    assert ph.masks["ggo"].sum() > 50
    assert fraction_inside(ph.masks["ggo"], masks.lungs) >= 0.95
    assert 1.0 - fraction_inside(ph.masks["airway"], masks.lungs) >= 0.9
    assert dice(masks.airways, ph.masks["airway"]) >= 0.8


def test_thick_slices():
    shape, spacing = (36, 128, 128), (8.0, 2.7, 2.7)
    ph, masks = phantom(3, 1, 1, shape, spacing), segmented(3, 1, 1, shape, spacing)
    assert dice(masks.left, ph.masks["lung_left"]) >= 0.97
    assert dice(masks.right, ph.masks["lung_right"]) >= 0.97


def test_lungs_that_touch_are_split():
    ph = phantom(0)
    hu = ph.volume.array.copy()
    left, right = ph.masks["lung_left"], ph.masks["lung_right"]
    for k in range(26, 33):  # a band of aerated lung across the front of the mediastinum
        front = int(np.flatnonzero((left[k] | right[k]).any(axis=1)).min()) + 2
        band = np.zeros(hu.shape[1:], bool)
        band[front:front + 3, 40:90] = True
        hu[k][band & ~left[k] & ~right[k]] = -850
    masks = segment_lungs(hu, ph.volume.spacing)
    assert dice(masks.left, left) >= 0.97
    assert dice(masks.right, right) >= 0.97


@pytest.mark.parametrize("gone, kept", [("lung_right", "lung_left"), ("lung_left", "lung_right")])
def test_a_single_lung_keeps_its_side(gone, kept):
    ph = phantom(0)
    hu = ph.volume.array.copy()
    hu[ph.masks[gone]] = 40  # collapsed or removed
    masks = segment_lungs(hu, ph.volume.spacing)
    found = {"lung_left": masks.left, "lung_right": masks.right}
    assert not found[gone].any()
    assert dice(found[kept], ph.masks[kept]) >= 0.97


def test_masks_are_consistent():
    masks = segmented(1)
    assert masks.left.dtype == masks.right.dtype == masks.airways.dtype == bool
    assert not (masks.left & masks.right).any()
    assert not (masks.airways & masks.lungs).any()
    lab = masks.label_map()
    assert lab.dtype == np.uint8
    assert np.array_equal(lab == 1, masks.left) and np.array_equal(lab == 2, masks.right)


# ----------------------------------------------------------------------------------------------
# odd inputs


def assert_empty(masks: LungMasks, shape: tuple[int, ...]) -> None:
    assert masks.left.shape == masks.right.shape == masks.airways.shape == shape
    assert not masks.lungs.any() and not masks.airways.any()


@pytest.mark.parametrize("value", [-1000, 40])
def test_uniform_volumes_have_no_lungs(value):
    hu = np.full((20, 64, 64), value, np.int16)
    assert_empty(segment_lungs(hu, (2.0, 1.5, 1.5)), hu.shape)


def test_random_noise_gives_no_lungs():
    hu = np.random.default_rng(0).integers(-1024, 1500, (24, 96, 96)).astype(np.int16)
    masks = segment_lungs(hu, (2.0, 0.8, 0.8))
    assert masks.lungs.shape == hu.shape
    assert masks.lungs.mean() < 0.01


def test_a_volume_without_lungs():
    ph = phantom(0)
    below = ph.volume.array[:5]  # upper abdomen, under the lung bases
    assert not (ph.masks["lung_left"][:5] | ph.masks["lung_right"][:5]).any()
    assert_empty(segment_lungs(below, ph.volume.spacing), below.shape)


@pytest.mark.parametrize("shape", [(1, 1, 1), (0, 8, 8), (1, 4, 200)])
def test_degenerate_shapes(shape):
    assert_empty(segment_lungs(np.full(shape, -1000, np.int16), (1.0, 1.0, 1.0)), shape)


def test_a_single_slice():
    ph = phantom(0)
    k = 24
    masks = segment_lungs(ph.volume.array[k:k + 1], ph.volume.spacing)
    assert dice(masks.left[0], ph.masks["lung_left"][k]) >= 0.95
    assert dice(masks.right[0], ph.masks["lung_right"][k]) >= 0.95


def test_fine_grid_float_input():
    """Sub-2 mm voxels take the downsampled path with the boundary refined on the CT grid."""
    shape, spacing = (40, 288, 288), (6.0, 1.2, 1.2)
    ph = phantom(4, 2, 1, shape, spacing)
    masks = segment_lungs(ph.volume.array.astype(np.float32), spacing)
    assert dice(masks.left, ph.masks["lung_left"]) >= 0.97
    assert dice(masks.right, ph.masks["lung_right"]) >= 0.97
    assert dice(masks.airways, ph.masks["airway"]) >= 0.8


@pytest.mark.parametrize("hu, spacing", [
    (np.zeros((8, 8)), (1.0, 1.0, 1.0)),
    (np.zeros((4, 8, 8)), (1.0, 1.0)),
    (np.zeros((4, 8, 8)), (1.0, 0.0, 1.0)),
    (np.zeros((4, 8, 8)), (1.0, float("nan"), 1.0)),
])
def test_bad_arguments_are_rejected(hu, spacing):
    with pytest.raises(ValueError):
        segment_lungs(hu, spacing)


# ----------------------------------------------------------------------------------------------
# progress and cancel


def test_progress_is_monotonic_and_ends_at_one():
    ph = phantom(0)
    seen: list[float] = []
    segment_lungs(ph.volume.array, ph.volume.spacing, progress=lambda f, msg: seen.append(f))
    assert len(seen) >= 3
    assert seen == sorted(seen)
    assert seen[0] >= 0.0 and seen[-1] == 1.0


@pytest.mark.parametrize("after", [0, 3])
def test_cancel_raises(after):
    ph = phantom(0)
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > after

    with pytest.raises(Cancelled):
        segment_lungs(ph.volume.array, ph.volume.spacing, cancel=cancel)


def test_cancel_that_never_fires_changes_nothing():
    ph = phantom(0)
    masks = segment_lungs(ph.volume.array, ph.volume.spacing, cancel=lambda: False)
    assert np.array_equal(masks.left, segmented(0).left)


def test_a_mass_at_the_hilum_is_lung_but_the_heart_and_the_liver_dome_are_not():
    """`_enclosed_masses` on a drawn right lung: a dense mass joined to the mediastinum by a narrow neck joins
    the lung; a broad indentation (the heart) and an island of liver that rests on liver (the dome) do not."""
    from inference.lungs.threshold import _enclosed_masses

    wsp = (2.0, 2.0, 2.0)
    nz, ny, nx = 12, 80, 80
    yy, xx = np.mgrid[:ny, :nx]
    lung = np.zeros((nz, ny, nx), bool)
    lung[:] = ((yy - 40) / 30) ** 2 + ((xx - 30) / 22) ** 2 <= 1  # an ellipse, x 8..52
    heart = ((yy - 40) / 12) ** 2 + ((xx - 56) / 10) ** 2 <= 1  # a broad dent in the medial side
    mass = (yy - 22) ** 2 + (xx - 40) ** 2 <= 6**2  # inside the lung near its medial edge (x 47) ...
    neck = (abs(yy - 22) <= 1) & (xx >= 40) & (xx <= 56)  # ... joined to the mediastinum by a 3 px neck
    dome = (yy - 58) ** 2 + (xx - 30) ** 2 <= 6**2
    for k in range(nz):
        lung[k] &= ~heart
        if 3 <= k <= 8:
            lung[k] &= ~mass
            lung[k][neck] = False
        if k <= 6:  # the dome: liver from the bottom up to slice 6, joined to the outside through a narrow neck
            lung[k] &= ~dome
            lung[k][(abs(yy - 58) <= 1) & (xx >= 30) & (xx <= 52)] = False
    allowed = ~lung
    allowed[:, :, 62:] = False  # beyond the mediastinum
    central = np.zeros(nx, bool)
    central[66:] = True
    got = _enclosed_masses(lung, allowed, central, wsp)
    assert got[3:9][:, mass].mean() >= 0.95  # the mass, in every slice it is cut out of the lung
    assert not got[:, heart].any()
    assert not got[:7][:, dome].any()

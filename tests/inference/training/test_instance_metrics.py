"""COCO-style mask AP and Dice on hand-made instances whose answers are known."""

import numpy as np
import pytest

from inference.training.instance_metrics import dice, mask_average_precision, mask_iou


def _square(y: int, x: int, side: int, shape=(40, 40)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y:y + side, x:x + side] = True
    return m


def test_mask_iou_of_overlapping_squares():
    a, b = _square(0, 0, 10), _square(0, 5, 10)  # 50 shared of 150
    iou = mask_iou(np.stack([a, b]), np.stack([a]))
    assert iou.shape == (2, 1)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[1, 0] == pytest.approx(50 / 150)


def test_perfect_detections_score_one_and_misses_lower_recall():
    truths = [np.stack([_square(0, 0, 10), _square(20, 20, 10)]), np.stack([_square(5, 5, 8)])]
    perfect = [(np.array([0.9, 0.8]), truths[0]), (np.array([0.7]), truths[1])]
    assert mask_average_precision(perfect, truths)["map"] == pytest.approx(1.0)
    # one of the three lesions never found: precision 1 up to recall 2/3, nothing beyond
    missing = [(np.array([0.9]), truths[0][:1]), (np.array([0.7]), truths[1])]
    ap = mask_average_precision(missing, truths)
    assert ap["map"] == pytest.approx(67 / 101)


def test_a_shifted_mask_counts_only_at_thresholds_it_reaches():
    truth = [np.stack([_square(0, 0, 10)])]
    shifted = _square(0, 2, 10)  # IoU 80 / 120 = 0.667: a hit at 0.50, 0.55, 0.60, 0.65, a miss above
    ap = mask_average_precision([(np.array([0.9]), np.stack([shifted]))], truth)
    assert ap["ap50"] == pytest.approx(1.0)
    assert ap["ap75"] == pytest.approx(0.0)
    assert ap["map"] == pytest.approx(0.4)


def test_a_confident_false_positive_ranked_first_costs_precision():
    truth = [np.stack([_square(0, 0, 10)])]
    preds = [(np.array([0.95, 0.5]), np.stack([_square(25, 25, 10), _square(0, 0, 10)]))]
    # ranked: a false positive, then the hit: precision 1/2 at recall 1 (each threshold)
    assert mask_average_precision(preds, truth)["map"] == pytest.approx(0.5)


def test_one_detection_matches_one_lesion_only():
    truth = [np.stack([_square(0, 0, 10)])]
    dup = [(np.array([0.9, 0.8]), np.stack([_square(0, 0, 10), _square(0, 0, 10)]))]
    assert mask_average_precision(dup, truth)["map"] == pytest.approx(1.0)  # the duplicate comes after recall 1
    images_without_lesions = [(np.array([0.9]), np.stack([_square(0, 0, 5)]))]
    assert np.isnan(mask_average_precision(images_without_lesions, [np.zeros((0, 40, 40), bool)])["map"])


def test_dice():
    assert dice(_square(0, 0, 10), _square(0, 0, 10)) == pytest.approx(1.0)
    assert dice(_square(0, 0, 10), _square(0, 5, 10)) == pytest.approx(100 / 200)
    assert dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    assert dice(np.ones((4, 4)), np.zeros((4, 4))) == 0.0

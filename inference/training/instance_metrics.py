"""How well predicted lesion instances match the radiologists' ones: COCO's mask mAP@[.5:.95] and Dice.

`mask_average_precision` follows COCO's evaluation for one class (what Mask R-CNN papers, paper 3 included,
report): detections of every image ranked by score; at each IoU threshold 0.50, 0.55, ..., 0.95 a detection is
a true positive when it overlaps a not yet matched ground-truth instance of its image by at least the threshold
(greedy, best IoU first among the unmatched); precision made monotone and read at 101 recall points; the mean
over thresholds. COCO's area ranges, crowd regions and 100-detection cap per image are left out (none apply:
one class, no crowd labels, fewer than 100 detections).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def mask_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every predicted mask (P, H, W) with every true one (T, H, W): (P, T)."""
    p = pred.reshape(len(pred), -1).astype(np.float32)
    t = truth.reshape(len(truth), -1).astype(np.float32)
    inter = p @ t.T
    union = p.sum(1)[:, None] + t.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def mask_average_precision(predictions: Sequence[tuple[np.ndarray, np.ndarray]],
                           truths: Sequence[np.ndarray]) -> dict[str, float]:
    """COCO mask AP of one class over images.

    Args:
        predictions: per image (scores (P,), binary masks (P, H, W)).
        truths: per image its ground-truth instance masks (T, H, W).

    Returns:
        {"map": mean over IoU 0.50-0.95, "ap50": at IoU 0.5, "ap75": at 0.75}; NaN when there is no true instance.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} predictions for {len(truths)} images")
    n_true = sum(len(t) for t in truths)
    if n_true == 0:
        return {"map": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
    records = []  # (score, image, row of the IoU matrix)
    ious = []
    for img, ((scores, masks), truth) in enumerate(zip(predictions, truths)):
        iou = mask_iou(masks, truth) if len(masks) and len(truth) else np.zeros((len(masks), len(truth)))
        ious.append(iou)
        records += [(float(s), img, k) for k, s in enumerate(scores)]
    records.sort(key=lambda r: -r[0])
    aps = []
    for thr in IOU_THRESHOLDS:
        matched = [np.zeros(len(t), bool) for t in truths]
        tp = np.zeros(len(records), bool)
        for n, (_, img, k) in enumerate(records):
            row = np.where(matched[img], -1.0, ious[img][k]) if len(truths[img]) else np.zeros(0)
            if len(row) and row.max() >= thr:
                j = int(row.argmax())
                matched[img][j] = True
                tp[n] = True
        aps.append(_average_precision(tp, n_true))
    aps_arr = np.array(aps)
    return {"map": float(aps_arr.mean()), "ap50": float(aps_arr[0]), "ap75": float(aps_arr[5])}


def _average_precision(tp: np.ndarray, n_true: int) -> float:
    """COCO's 101-point interpolated AP of ranked detections flagged true/false positive."""
    if len(tp) == 0:
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_true
    precision = ctp / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone: the best precision at any higher recall
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), truth.astype(bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * float(np.count_nonzero(p & t)) / total

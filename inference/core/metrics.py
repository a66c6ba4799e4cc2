"""Binary classification metrics, computed with numpy only."""

from __future__ import annotations

import numpy as np


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds (descending), ties handled."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps = np.cumsum(y)[distinct]
    fps = (1 + distinct) - tps
    p, n = max(y.sum(), 1), max((~y).sum(), 1)
    tpr = np.r_[0.0, tps / p]
    fpr = np.r_[0.0, fps / n]
    return fpr, tpr, np.r_[np.inf, s[distinct]]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    y = np.asarray(labels).astype(bool)
    if y.all() or (~y).all():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, scores)
    return float(np.trapezoid(tpr, fpr))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 and ROC AUC for positive-class scores."""
    y = np.asarray(labels).astype(bool)
    pred = np.asarray(scores) >= threshold
    tp, tn = int((pred & y).sum()), int((~pred & ~y).sum())
    fp, fn = int((pred & ~y).sum()), int((~pred & y).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sens, prec = ratio(tp, tp + fn), ratio(tp, tp + fp)
    f1 = 2 * prec * sens / (prec + sens) if prec + sens > 0 else 0.0
    return {"accuracy": ratio(tp + tn, len(y)), "sensitivity": sens, "specificity": ratio(tn, tn + fp),
            "precision": prec, "f1": f1, "roc_auc": roc_auc(y, scores), "tp": tp, "tn": tn, "fp": fp, "fn": fn}

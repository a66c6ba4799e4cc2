"""A slice's probability from two signals: the slice classifier's probability and the slice's lesion share.

The DCN and the deployed-system papers both feed lesion information to their classifiers. Here the two meet
in one logistic model per slice:

    logit(p) = w_classifier * logit(p_classifier) + w_share * log10(share + share_floor) + bias

where `share` is the fraction of the slice's lung voxels that the lesion segmenter marks. The weights are
fitted on validation slices of real CT (`fit_fusion`, an L2-regularized logistic regression) and shipped in
the slice model's card under "slice_fusion"; screening applies them when its lesions come from the segmenter
they were fitted with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_LOGIT_CLIP = 12.0


@dataclass(frozen=True)
class SliceFusion:
    """The fitted weights (see the module docstring); `lesion_model` names the segmenter the shares came from."""

    w_classifier: float
    w_share: float
    bias: float
    share_floor: float = 1e-3
    lesion_model: str = "dcn"

    def features(self, p_classifier: np.ndarray, share: np.ndarray) -> np.ndarray:
        """(N, 2) features: the classifier's log-odds and log10 of the lesion share."""
        p = np.clip(np.asarray(p_classifier, np.float64), 1e-12, 1 - 1e-12)
        logit = np.clip(np.log(p / (1 - p)), -_LOGIT_CLIP, _LOGIT_CLIP)
        return np.stack([logit, np.log10(np.clip(np.asarray(share, np.float64), 0, 1) + self.share_floor)], axis=1)

    def __call__(self, p_classifier: np.ndarray, share: np.ndarray) -> np.ndarray:
        """Fused slice probabilities (float32) from classifier probabilities and lesion shares."""
        x = self.features(p_classifier, share)
        z = x @ np.array([self.w_classifier, self.w_share]) + self.bias
        return (1 / (1 + np.exp(-z))).astype(np.float32)

    def to_card(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_card(cls, entry: dict[str, Any] | None) -> SliceFusion | None:
        """The fusion stored in a model card's "slice_fusion", or None when there is none or it is malformed."""
        if not isinstance(entry, dict):
            return None
        try:
            return cls(float(entry["w_classifier"]), float(entry["w_share"]), float(entry["bias"]),
                       float(entry.get("share_floor", 1e-3)), str(entry.get("lesion_model", "dcn")))
        except (KeyError, TypeError, ValueError):
            return None


def fit_fusion(p_classifier: np.ndarray, share: np.ndarray, labels: np.ndarray, *, l2: float = 1.0,
               share_floor: float = 1e-3, lesion_model: str = "dcn", iterations: int = 50) -> SliceFusion:
    """Logistic regression of `labels` (1 positive) on the two features, L2 penalty `l2` on the weights (not
    the bias), by Newton's method; classes are weighted to equal total weight.

    Raises:
        ValueError: lengths differ, or the labels hold one class only.
    """
    y = np.asarray(labels, np.float64)
    if not len(y) == len(p_classifier) == len(share):
        raise ValueError(f"need one label per slice, got {len(y)}, {len(p_classifier)}, {len(share)}")
    if not 0 < y.sum() < len(y):
        raise ValueError("need slices of both classes to fit the fusion")
    x = SliceFusion(0, 0, 0, share_floor, lesion_model).features(p_classifier, share)
    mean, sd = x.mean(axis=0), x.std(axis=0) + 1e-9
    xs = np.column_stack([(x - mean) / sd, np.ones(len(y))])
    weight = np.where(y > 0, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    penalty = np.diag([l2, l2, 0.0])
    beta = np.zeros(3)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(xs @ beta)))
        grad = xs.T @ (weight * (p - y)) + penalty @ beta
        hess = (xs * (weight * p * (1 - p))[:, None]).T @ xs + penalty + 1e-9 * np.eye(3)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    w = beta[:2] / sd
    return SliceFusion(float(w[0]), float(w[1]), float(beta[2] - (w * mean).sum()), share_floor, lesion_model)


def lesion_share(lesions: np.ndarray, lungs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The fraction of each listed axial slice's lung voxels that are lesion (0 where a slice has no lung)."""
    out = np.zeros(len(indices), np.float64)
    for i, k in enumerate(np.asarray(indices, np.int64)):
        lung = np.count_nonzero(lungs[k])
        if lung:
            out[i] = np.count_nonzero(np.logical_and(lesions[k], lungs[k])) / lung
    return out

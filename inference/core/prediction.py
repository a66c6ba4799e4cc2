"""The result of screening one CT volume, as arrays on the volume's own grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ZoneInvolvement:
    """Lesion burden of one lung zone (upper, middle or lower third of one lung)."""

    lung: str  # "left" | "right"
    zone: str  # "upper" | "middle" | "lower"
    lung_ml: float
    lesion_ml: float
    percent: float
    score: int  # 0-5, see `zone_score`


@dataclass
class Prediction:
    """What a model says about one CT volume.

    Arrays lie on the input volume's grid (z, y, x): `heatmap` in [0, 1], `lung_mask` uint8
    (1 left, 2 right), `lesion_mask` uint8 (3 ground-glass, 4 consolidation, as the viewer's labels).
    A volume model (`input_kind` "volume") classifies no single slices: `slice_indices` and
    `slice_probabilities` are empty; it may report the localized lesion's centre, (z, y, x) voxels.
    """

    model: str
    classes: tuple[str, ...]
    probabilities: dict[str, float]
    slice_indices: np.ndarray  # axial slices that were classified (those with lung)
    slice_probabilities: np.ndarray  # positive-class probability of each of them
    heatmap: np.ndarray
    lung_mask: np.ndarray
    lesion_mask: np.ndarray
    zones: list[ZoneInvolvement] = field(default_factory=list)
    aggregation: str = ""
    device: str = "cpu"
    timings: dict[str, float] = field(default_factory=dict)
    input_kind: str = "slice"  # "slice" | "volume": what the model classified
    lesion_centre: tuple[float, float, float] | None = None  # (z, y, x) voxel of the localized lesion
    localization: dict[str, Any] = field(default_factory=dict)  # how the lesion was localized (volume models)
    heatmap_method: str = ""  # how `heatmap` was made, e.g. "grad-cam" or "cam"
    lesion_ml_by_kind: dict[str, float] = field(default_factory=dict)  # e.g. {"GGO": .., "consolidation": ..}
    lesion_method: str = ""  # where the lesion mask comes from: a lesion segmenter's name, or the HU rule
    slice_score: str = ""  # what the slice probabilities are: the classifier's, or fused with the lesion share
    instances: list[dict[str, Any]] | None = None  # lesion instances (COVID-CT-Mask-Net): id, slice, score, box, area
    instance_labels: np.ndarray | None = None  # uint16 (z, y, x): instance ids of `instances`, 0 elsewhere

    @property
    def positive_probability(self) -> float:
        return self.probabilities[self.classes[-1]]

    @property
    def lesion_ml(self) -> float:
        return float(sum(z.lesion_ml for z in self.zones))

    def involvement_percent(self, lung: str | None = None) -> float:
        zones = [z for z in self.zones if lung is None or z.lung == lung]
        total = sum(z.lung_ml for z in zones)
        return 100.0 * sum(z.lesion_ml for z in zones) / total if total > 0 else 0.0

    @property
    def severity(self) -> int:
        """Zone-based CT severity score, 0-30 (six zones scored 0-5)."""
        return int(sum(z.score for z in self.zones))

    def summary(self) -> dict[str, object]:
        return {
            "model": self.model,
            "probability": round(self.positive_probability, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "aggregation": self.aggregation,
            "heatmap": self.heatmap_method,
            "input_kind": self.input_kind,
            "slices_classified": int(len(self.slice_indices)),
            "lesion_ml": round(self.lesion_ml, 2),
            **({"lesion_ml_by_kind": {k: round(v, 2) for k, v in self.lesion_ml_by_kind.items()}}
               if self.lesion_ml_by_kind else {}),
            "lesion_method": self.lesion_method,
            **({"slice_score": self.slice_score} if self.slice_score else {}),
            "involvement_percent": round(self.involvement_percent(), 2),
            "involvement_left_percent": round(self.involvement_percent("left"), 2),
            "involvement_right_percent": round(self.involvement_percent("right"), 2),
            "severity": self.severity,
            "zones": [z.__dict__ for z in self.zones],
            "lesion_centre": [round(c, 2) for c in self.lesion_centre] if self.lesion_centre else None,
            "localization": _plain(self.localization),
            "device": self.device,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            **({"instances": _plain(self.instances)} if self.instances is not None else {}),
        }


def _plain(value: Any) -> Any:
    """JSON-ready copy: tuples become lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


MIN_ZONE_LESION_ML = 0.5  # a zone scores only with at least this much lesion (a 1 cm sphere); less is a speck


def zone_score(percent: float, lesion_ml: float | None = None) -> int:
    """0 none, 1 under 5 %, 2 5-25 %, 3 25-50 %, 4 50-75 %, 5 over 75 % (the lobar score of Pan et al. 2020);
    0 as well when `lesion_ml` is given and below `MIN_ZONE_LESION_ML`."""
    if percent <= 0 or (lesion_ml is not None and lesion_ml < MIN_ZONE_LESION_ML):
        return 0
    for score, upper in ((1, 5), (2, 25), (3, 50), (4, 75)):
        if percent < upper:
            return score
    return 5

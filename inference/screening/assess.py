"""Whether a CT can be screened at all: the rules that turn a volume into an honest "not assessable" instead
of a confident number. Each rule returns the reason in words, or None when the volume passes it."""

from __future__ import annotations

import numpy as np

from inference.core.prediction import Prediction

__all__ = ["MIN_CLASSIFIED_SLICES", "MIN_LUNG_ML", "MIN_SLICES", "NON_CHEST_PARTS", "STATUS_OK",
           "lung_problem", "lung_volume_ml", "prediction_problem", "voxel_problem"]

STATUS_OK = "ok"
MIN_SLICES = 3  # a case needs at least this many slices
MIN_LUNG_ML = 250.0  # both lungs of a small child; below it the mask is airway, bowel gas or a sliver of lung base
CHEST_LUNG_ML = 1000.0  # lungs this large outweigh a body-part tag that says otherwise (a mislabelled chest)
MIN_CLASSIFIED_SLICES = 3  # slice models: a case probability from fewer slices is not a case probability
#: BodyPartExamined values (upper case) of series that are not chest CTs
NON_CHEST_PARTS = frozenset({
    "HEAD", "BRAIN", "SKULL", "HEADNECK", "HEAD_NECK", "NECK", "ABDOMEN", "PELVIS", "ABDOMENPELVIS",
    "ABDOMEN_PELVIS", "KIDNEY", "LIVER", "EXTREMITY", "ARM", "LEG", "KNEE", "HIP", "ANKLE", "FOOT", "HAND",
    "WRIST", "ELBOW", "SHOULDER", "LSPINE", "CSPINE", "SACRUM",
})


def lung_volume_ml(lungs: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """The volume of a lung mask (non-zero voxels) in mL."""
    return float(np.count_nonzero(lungs) * float(np.prod(spacing)) / 1000.0)


def voxel_problem(volume: np.ndarray) -> str | None:
    """Why a (z, y, x) HU volume cannot be screened before any lung mask is made, or None: too few slices,
    or non-finite voxels (a rescale slope or intercept that is not a number)."""
    if volume.ndim != 3 or volume.shape[0] < MIN_SLICES:
        n = volume.shape[0] if volume.ndim == 3 else 0
        return f"too few slices ({n}; at least {MIN_SLICES})"
    if not np.isfinite(volume).all():
        return "non-finite voxel values (rescale slope or intercept not a number)"
    return None


def lung_problem(lungs: np.ndarray, spacing: tuple[float, float, float], body_part: str = "") -> str | None:
    """Why a CT with this lung mask cannot be screened, or None: no lungs; a BodyPartExamined that is not the
    chest, unless the lungs are chest-sized (`CHEST_LUNG_ML`); lungs smaller than `MIN_LUNG_ML`."""
    ml = lung_volume_ml(lungs, spacing)
    if ml == 0:
        return "no lungs found"
    part = body_part.strip().upper().replace(" ", "")
    if part in NON_CHEST_PARTS and ml < CHEST_LUNG_ML:
        return f"not a chest CT (BodyPartExamined {body_part.strip()}, lungs {ml:.0f} mL)"
    if ml < MIN_LUNG_ML:
        return f"lung volume {ml:.0f} mL, below the plausible minimum of {MIN_LUNG_ML:.0f} mL"
    return None


def prediction_problem(pred: Prediction) -> str | None:
    """Why a screening result carries no usable case probability, or None: a slice model that classified
    fewer than `MIN_CLASSIFIED_SLICES` slices."""
    if pred.input_kind == "slice" and len(pred.slice_indices) < MIN_CLASSIFIED_SLICES:
        return f"only {len(pred.slice_indices)} slice(s) classified (at least {MIN_CLASSIFIED_SLICES})"
    return None

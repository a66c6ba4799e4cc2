"""The per-slice list of a screening result: one entry per axial slice of the CT as loaded, for
prediction.json and the GUI's plot."""

from __future__ import annotations

import numpy as np

from inference.core.prediction import Prediction
from viewer.core.volume import Volume


def slice_table(pred: Prediction, volume: Volume) -> list[dict[str, object]]:
    """`{"index", "z_mm", "probability"}` for every axial slice of `volume` (canonical: index 0 is the most
    inferior, as the viewer shows it); z_mm is the LPS z of the slice centre; probability is None where the
    model classified no slice (no lung, a skipped thin slice, a volume model)."""
    nz, ny, nx = volume.shape
    centres = np.stack([np.arange(nz), np.full(nz, (ny - 1) / 2), np.full(nz, (nx - 1) / 2)], axis=1)
    z_mm = np.asarray(volume.index_to_lps(centres), float).reshape(-1, 3)[:, 2]
    probs: dict[int, float] = {int(k): float(p) for k, p in zip(pred.slice_indices, pred.slice_probabilities)}
    return [{"index": k, "z_mm": round(float(z_mm[k]), 3),
             "probability": round(probs[k], 6) if k in probs else None} for k in range(nz)]

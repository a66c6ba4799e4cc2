"""Fitting DCN's slice probability mapping (the patient level, section 2.4) from slice probabilities alone.

The paper trains the SPM on patients. No patient-level set with COVID-19 and other cases exists here, so
cases are composed: a negative case is 40-300 slice probabilities drawn from the negative slices' pool;
a positive case draws a share (3-60 %) of its slices from the positive pool and the rest from the negative
pool (an infected lung is mostly healthy slices). Each pool is split in half by slice, and cases composed
from the held-out halves measure the mapping (ROC AUC, accuracy at 0.5). Deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from inference.core.metrics import binary_metrics
from inference.models.dcn import SliceProbabilityMapping, resample_probabilities


@dataclass(frozen=True)
class SPMConfig:
    cases: int = 4000  # composed training cases (half positive)
    val_cases: int = 1000
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    slices: tuple[int, int] = (40, 300)  # slices with lung per case
    positive_share: tuple[float, float] = (0.03, 0.6)  # of a positive case's slices
    seed: int = 0

    def describe(self) -> dict[str, object]:
        return {"composed_cases": self.cases, "slices_per_case": list(self.slices),
                "positive_share": list(self.positive_share), "epochs": self.epochs, "lr": self.lr}


def composed_cases(pos: np.ndarray, neg: np.ndarray, n: int, cfg: SPMConfig,
                   rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` composed cases as resampled curves (n, 100) and their labels (n,), alternating negative, positive."""
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("composing cases needs positive and negative slice probabilities")
    curves, labels = [], []
    for i in range(n):
        m = int(rng.integers(cfg.slices[0], cfg.slices[1] + 1))
        k = max(1, int(round(m * rng.uniform(*cfg.positive_share)))) if i % 2 else 0
        p = np.concatenate([rng.choice(pos, k), rng.choice(neg, m - k)])
        curves.append(resample_probabilities(p))
        labels.append(i % 2)
    return torch.stack(curves), torch.tensor(labels, dtype=torch.float32)


def fit_spm(spm: SliceProbabilityMapping, pos: np.ndarray, neg: np.ndarray,
            cfg: SPMConfig | None = None) -> dict[str, float]:
    """Train `spm` in place on cases composed from the pools' halves; metrics on cases from the other halves."""
    cfg = cfg or SPMConfig()
    rng = np.random.default_rng([cfg.seed, 7])
    pos, neg = rng.permutation(np.asarray(pos, np.float64)), rng.permutation(np.asarray(neg, np.float64))
    if len(pos) < 2 or len(neg) < 2:
        raise ValueError(f"need at least 2 positive and 2 negative slices, got {len(pos)} and {len(neg)}")
    hp, hn = len(pos) // 2, len(neg) // 2
    x, y = composed_cases(pos[:hp], neg[:hn], cfg.cases, cfg, rng)
    xv, yv = composed_cases(pos[hp:], neg[hn:], cfg.val_cases, cfg, rng)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.Adam(spm.parameters(), lr=cfg.lr)
    spm.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            loss = spm.loss(spm(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    spm.eval()
    with torch.no_grad():
        scores = torch.sigmoid(spm(xv)).numpy()
    m = binary_metrics(yv.numpy().astype(int), scores)
    return {"val_roc_auc": float(m["roc_auc"]), "val_accuracy": float(m["accuracy"]),
            "positive_slices": len(pos), "negative_slices": len(neg)}

"""Exponential moving average of a model's weights, for scoring and shipping a smoother model than the last step."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_update"]


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for floating-point state (BatchNorm statistics too); integer
    state (BatchNorm's batch counts) is copied."""
    for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)
        else:
            e.copy_(p)

import torch
from torch import nn

from inference.training.averaging import ema_update


def test_ema_update_moves_floats_toward_the_model_and_copies_counts():
    ema, model = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
        model.running_mean.fill_(4.0)
    model.num_batches_tracked.fill_(7)
    ema_update(ema, model, 0.75)
    assert ema.weight.tolist() == [0.25, 0.25] and ema.running_mean.tolist() == [1.0, 1.0]
    assert int(ema.num_batches_tracked) == 7 and model.weight.tolist() == [1.0, 1.0]

"""Fixtures shared by the inference tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny batches: on a busy 2-core CPU more torch threads only wait for each other (20x slower here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

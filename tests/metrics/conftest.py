"""Shared fixtures for the metrics tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each metrics test on one intra-op thread, then restore the setting.

    The tensors here are tiny (hundreds of rows), so a second thread buys nothing, and when
    other jobs load the machine's 2 cores, OpenMP's spin-waits for a descheduled sibling thread
    turned a 0.3 s AIS run into 30 s of burnt CPU.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

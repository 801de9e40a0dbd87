"""``run_ranks``: results come back in rank order; a rank that dies before it has finished fails
the call; an abort inside gloo's teardown, after every rank finished, keeps the results."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raybm.distributed.spawn import run_ranks


def summed_rank(rank: int, world: int, abort_at: str | None = None):
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    if abort_at == "work" and rank == 1:
        os.abort()
    if abort_at == "teardown" and rank == 1:
        # What CI saw once: a C++ std::terminate while the group is being destroyed.
        dist.destroy_process_group = os.abort
    return rank, float(total)


def test_results_come_back_in_rank_order():
    assert run_ranks(2, summed_rank) == [(0, 3.0), (1, 3.0)]


def test_a_rank_dying_before_it_finished_fails_the_call():
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        run_ranks(2, summed_rank, "work")


def test_an_abort_in_teardown_after_all_ranks_finished_keeps_the_results():
    with pytest.warns(RuntimeWarning, match="gloo teardown"):
        assert run_ranks(2, summed_rank, "teardown") == [(0, 3.0), (1, 3.0)]

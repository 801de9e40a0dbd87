"""The exchange plan after a global resampling: sizes kept, the ancestors' multiset exact,
and only the copies that do not fit on their ancestor's shard moved."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raybm.distributed.exchange import offspring_counts, pack_rows, plan_exchange, unpack_rows
from raybm.walkers import WalkerState, shard_sizes, shard_slice
from tests.test_checkpoint import STATES, assert_same_walkers, make_walkers


def simulate(ancestors: torch.Tensor, sizes: list[int]) -> list[list[int]]:
    """Every rank's new shard as global ids, by carrying out all ranks' plans in one process."""
    offsets = [sum(sizes[:r]) for r in range(len(sizes))]
    plans = [plan_exchange(ancestors, sizes, r) for r in range(len(sizes))]
    held = []
    for dst, plan in enumerate(plans):
        ids = [offsets[dst] + int(i) for i in plan.keep]
        for src, other in enumerate(plans):  # what src sends to dst: its block for dst
            start = sum(other.send_counts[:dst])
            block = other.send[start : start + other.send_counts[dst]]
            assert len(block) == plan.recv_counts[src]
            ids += [offsets[src] + int(i) for i in block]
        held.append(ids)
    return held


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), world=st.integers(1, 5), seed=st.integers(0, 10_000),
       skew=st.floats(0.0, 6.0))
def test_plan_keeps_sizes_and_the_ancestor_multiset(n, world, seed, skew):
    sizes = shard_sizes(n, world)
    g = torch.Generator().manual_seed(seed)
    log_weight = skew * torch.randn(n, generator=g, dtype=torch.float64)
    ancestors = torch.multinomial(torch.softmax(log_weight, 0), n, True, generator=g)
    held = simulate(ancestors, sizes)
    assert [len(h) for h in held] == sizes
    assert Counter(i for h in held for i in h) == Counter(ancestors.tolist())
    # Moved rows: exactly each shard's excess of offspring over its slots.
    counts = offspring_counts(ancestors, sizes)
    offsets = [sum(sizes[:r]) for r in range(world)]
    excess = sum(max(int(counts[offsets[r]:offsets[r] + sizes[r]].sum()) - sizes[r], 0)
                 for r in range(world))
    assert sum(plan_exchange(ancestors, sizes, r).rows_moved for r in range(world)) == excess
    # A copy stays on its ancestor's shard whenever that shard has room for it.
    for r in range(world):
        local = [i for i in held[r] if offsets[r] <= i < offsets[r] + sizes[r]]
        mine = int(counts[offsets[r]:offsets[r] + sizes[r]].sum())
        assert len(local) == min(mine, sizes[r])


def test_uniform_weights_move_nothing():
    sizes = shard_sizes(1000, 4)
    ancestors = torch.arange(1000)
    assert all(plan_exchange(ancestors, sizes, r).rows_moved == 0 for r in range(4))


def test_rows_pack_and_unpack_bit_exactly():
    g = torch.Generator().manual_seed(0)
    w = WalkerState(x=torch.randint(0, 21, (9, 13), generator=g, dtype=torch.uint8),
                    log_weight=torch.randn(9, generator=g, dtype=torch.float64) * 1e3,
                    label=torch.randint(0, 10, (9,), generator=g))
    index = torch.tensor([3, 3, 0, 8])
    back = unpack_rows(pack_rows(w, index), w)
    assert torch.equal(back.x, w.x[index])
    assert torch.equal(back.log_weight, w.log_weight[index])
    assert torch.equal(back.label, w.label[index])
    unlabelled = w.replace(label=None)
    no_label = unpack_rows(pack_rows(unlabelled, index), unlabelled)
    assert no_label.label is None and torch.equal(no_label.x, w.x[index])


def test_a_float_condition_travels_bit_exactly_with_its_walker():
    """A noise level (or time) per walker, float64 or a float32 vector: packed after the
    label, unpacked bit for bit, with or without a label."""
    g = torch.Generator().manual_seed(3)
    index = torch.tensor([4, 1, 1, 6])
    for cond in (torch.rand(7, generator=g, dtype=torch.float64) * 1e-300,
                 torch.randn(7, 3, generator=g)):
        for label in (None, torch.arange(7)):
            w = WalkerState(torch.randn(7, 2, 2, generator=g), torch.randn(7, generator=g,
                            dtype=torch.float64), label, cond)
            back = unpack_rows(pack_rows(w, index), w)
            assert torch.equal(back.cond, cond[index]) and back.cond.dtype == cond.dtype
            assert (back.label is None) == (label is None) and torch.equal(back.x, w.x[index])


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("labelled", [False, True])
def test_rows_of_any_dtype_and_shape_pack_and_unpack_bit_exactly(state, labelled):
    w = make_walkers(state, labelled)
    shape, dtype = tuple(w.x.shape[1:]), w.x.dtype
    for index in (torch.tensor([3, 3, 0, 8, 4]), torch.tensor([5]),
                  torch.tensor([], dtype=torch.long)):  # repeats, one row, an empty send
        rows = pack_rows(w, index)
        assert rows.dtype == torch.uint8
        assert rows.shape == (len(index), w.x[0].numel() * w.x.element_size() + 8 + 8 * labelled)
        assert_same_walkers(unpack_rows(rows, w), w.take(index))
        # A one-row slice of a wider matrix starts at an odd byte: still unpacked exactly.
        padded = torch.cat([torch.zeros(len(index), 1, dtype=torch.uint8), rows], 1)
        assert_same_walkers(unpack_rows(padded[:, 1:], w), w.take(index))


GLOO_CASES = [("float32", True), ("float32", False), ("image", True), ("image", False),
              ("binary", True), ("potts", False)]


def exchange_states_rank(rank: int, world: int, n: int, seed: int):
    """For each of :data:`GLOO_CASES` (one spawn for all: starting ranks is the slow part),
    every rank builds the same population, keeps its shard, resamples to skewed ancestors
    (the shared seed) and exchanges through the real process group."""
    from raybm.distributed.comm import TorchComm

    g = torch.Generator().manual_seed(seed)
    ancestors = torch.multinomial(torch.softmax(3.0 * torch.randn(n, generator=g,
                                                                  dtype=torch.float64), 0),
                                  n, True, generator=g)
    out = []
    for state, labelled in GLOO_CASES:
        mine = make_walkers(state, labelled, n=n).take(torch.arange(n)[shard_slice(n, world, rank)])
        comm = TorchComm()
        out.append((comm.redistribute(mine, ancestors), comm.bytes_sent["exchange"]))
    return ancestors, out


@pytest.mark.parametrize("world, n", [(2, 40), (3, 61)])
def test_exchange_over_gloo_ranks_moves_any_state_bit_exactly(world, n):
    from raybm.distributed.spawn import run_ranks

    results = run_ranks(world, exchange_states_rank, n, 11)
    ancestors = results[0][0]
    sizes = shard_sizes(n, world)
    held = simulate(ancestors, sizes)  # kept rows in place, then received rows in rank order
    moved = [plan_exchange(ancestors, sizes, r).rows_moved for r in range(world)]
    assert sum(moved) > 0, "nothing moved: the exchange is untested"
    for case, (state, labelled) in enumerate(GLOO_CASES):
        whole = make_walkers(state, labelled, n=n)
        row = whole.x[0].numel() * whole.x.element_size() + 8 + 8 * labelled
        for rank, (_, per_case) in enumerate(results):
            got, nbytes = per_case[case]
            assert_same_walkers(got, whole.take(torch.tensor(held[rank])))
            assert nbytes == moved[rank] * row

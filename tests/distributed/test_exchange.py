"""The exchange plan after a global resampling: sizes kept, the ancestors' multiset exact,
and only the copies that do not fit on their ancestor's shard moved."""

from __future__ import annotations

from collections import Counter

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raybm.distributed.exchange import offspring_counts, pack_rows, plan_exchange, unpack_rows
from raybm.walkers import WalkerState, shard_sizes


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
    back = unpack_rows(pack_rows(w, index), 13, True)
    assert torch.equal(back.x, w.x[index])
    assert torch.equal(back.log_weight, w.log_weight[index])
    assert torch.equal(back.label, w.label[index])
    no_label = unpack_rows(pack_rows(w.replace(label=None), index), 13, False)
    assert no_label.label is None and torch.equal(no_label.x, w.x[index])

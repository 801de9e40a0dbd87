"""Moving walker rows between shards after a global resampling.

Every rank holds the same global ancestor vector ``a`` (drawn from a shared seed), where
``a[j]`` is the global index (rank order) of the walker whose copy fills slot ``j``. Walkers
are exchangeable, so *which* slot a copy fills does not matter, only how many copies of each
ancestor exist and that every shard keeps its size. :func:`plan_exchange` therefore keeps
each ancestor's copies on its own shard as far as that shard's size allows and sends only the
surplus copies to shards that lack walkers: a shard whose offspring outnumber its slots must
give the excess away, and nothing else moves (with a balanced population, almost nothing;
rows whose ancestor sits on this shard never travel). Ranks with a
surplus are matched to ranks with a deficit in rank order, so all ranks compute the same plan
from the same ancestors without talking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from raybm.walkers import WalkerState


@dataclass(frozen=True)
class ExchangePlan:
    """Rank ``rank``'s part of an exchange.

    keep:   local row indices copied in place (with repetition), in order;
    send:   local row indices to send, grouped by destination rank in rank order;
    send_counts / recv_counts: rows to each / from each rank (uneven all-to-all split sizes).
    The new shard is ``keep`` rows followed by the received rows in source-rank order.
    """

    keep: torch.Tensor
    send: torch.Tensor
    send_counts: list[int]
    recv_counts: list[int]

    @property
    def rows_moved(self) -> int:
        return int(self.send.numel())


def offspring_counts(ancestors: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Copies of each global walker that the ancestors ask for."""
    return torch.bincount(ancestors, minlength=sum(sizes))


def plan_exchange(ancestors: torch.Tensor, sizes: list[int], rank: int) -> ExchangePlan:
    """The minimal-movement exchange for shard ``rank`` (see the module docstring).

    ``sizes`` are the shard sizes before and after (resampling keeps each shard's size).
    """
    counts = offspring_counts(ancestors, sizes)
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    world = len(sizes)
    # Each rank's offspring, as local row indices repeated by their copy counts.
    offspring = [torch.repeat_interleave(torch.arange(sizes[r]), counts[offsets[r]:offsets[r + 1]])
                 for r in range(world)]
    kept = [min(len(offspring[r]), sizes[r]) for r in range(world)]
    surplus = [len(offspring[r]) - kept[r] for r in range(world)]
    deficit = [sizes[r] - kept[r] for r in range(world)]
    # Match the surplus rows (rank order) to the empty slots (rank order): flow[src][dst].
    flow = [[0] * world for _ in range(world)]
    dst = 0
    for src in range(world):
        left = surplus[src]
        while left:
            while deficit[dst] == 0:
                dst += 1
            n = min(left, deficit[dst])
            flow[src][dst] += n
            deficit[dst] -= n
            left -= n
    mine = offspring[rank]
    return ExchangePlan(
        keep=mine[: kept[rank]],
        send=mine[kept[rank]:],
        send_counts=flow[rank],
        recv_counts=[flow[src][rank] for src in range(world)],
    )


def pack_rows(walkers: WalkerState, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` as one uint8 matrix: visible bytes, log-weight (8), label (8 if any)."""
    parts = [walkers.x[index].to(torch.uint8),
             walkers.log_weight[index].double().contiguous().view(torch.uint8).reshape(-1, 8)]
    if walkers.label is not None:
        parts.append(walkers.label[index].long().contiguous().view(torch.uint8).reshape(-1, 8))
    return torch.cat(parts, 1)


def _columns(rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    # A fresh contiguous copy: a column slice (even a one-row one, which counts as
    # contiguous) starts at an odd byte offset, and a byte view as float64 needs 8-alignment.
    return rows[:, start:stop].clone(memory_format=torch.contiguous_format)


def unpack_rows(rows: torch.Tensor, n_visible: int, has_label: bool) -> WalkerState:
    x = _columns(rows, 0, n_visible)
    log_weight = _columns(rows, n_visible, n_visible + 8).view(torch.float64).reshape(-1)
    label = None
    if has_label:
        label = _columns(rows, n_visible + 8, n_visible + 16).view(torch.int64).reshape(-1)
    return WalkerState(x=x, log_weight=log_weight, label=label)

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

from raybm.walkers import WalkerState, row_bytes, rows_from_bytes, rows_to_bytes


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
    """Rows ``index`` as one uint8 matrix: the state's raw bytes (any dtype and per-walker
    shape), then the log-weight (8 bytes), then the label (8, if any), then the float
    condition's raw bytes (if any). Raw bytes, so what a peer unpacks is bit-for-bit what
    was sent, floats and images included."""
    parts = [rows_to_bytes(walkers.x[index]), rows_to_bytes(walkers.log_weight[index].double())]
    if walkers.label is not None:
        parts.append(rows_to_bytes(walkers.label[index].long()))
    if walkers.cond is not None:
        parts.append(rows_to_bytes(walkers.cond[index]))
    return torch.cat(parts, 1)


def unpack_rows(rows: torch.Tensor, like: WalkerState) -> WalkerState:
    """The walkers :func:`pack_rows` packed, laid out as ``like`` (the receiver's own
    walkers: every shard of a population has the same state shape and dtype, label and
    condition)."""
    x_shape, x_dtype = tuple(like.x.shape[1:]), like.x.dtype
    width = row_bytes(x_shape, x_dtype)
    log_weight = rows_from_bytes(rows[:, width:width + 8], (), torch.float64)
    at = width + 8
    label = cond = None
    if like.label is not None:
        label = rows_from_bytes(rows[:, at:at + 8], (), torch.int64)
        at += 8
    if like.cond is not None:
        shape = tuple(like.cond.shape[1:])
        cond = rows_from_bytes(rows[:, at:at + row_bytes(shape, like.cond.dtype)], shape,
                               like.cond.dtype)
    return WalkerState(x=rows_from_bytes(rows[:, :width], x_shape, x_dtype),
                       log_weight=log_weight, label=label, cond=cond)

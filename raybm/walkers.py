"""The walker population: one vocabulary for every sampler, algorithm and checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class WalkerState:
    """A population of Markov-chain states ("walkers").

    x:          ``(n, N)`` visible states, uint8 (0/1 for binary, state index for Potts).
    log_weight: ``(n,)`` float64 log importance weights (zero for unweighted walkers). Kept in
                float64 because Jarzynski work accumulates over thousands of updates.
    label:      ``(n,)`` int64 label of each walker, or None for RBMs without a label unit.
    """

    x: torch.Tensor
    log_weight: torch.Tensor
    label: torch.Tensor | None = None

    @property
    def n_walkers(self) -> int:
        return self.x.shape[0]

    def replace(self, **changes) -> "WalkerState":
        return replace(self, **changes)

    def take(self, index: torch.Tensor) -> "WalkerState":
        """The walkers ``index`` (ancestors after resampling, or a shard's rows)."""
        return WalkerState(
            x=self.x[index],
            log_weight=self.log_weight[index],
            label=None if self.label is None else self.label[index],
        )

    @staticmethod
    def unweighted(x: torch.Tensor, label: torch.Tensor | None = None) -> "WalkerState":
        return WalkerState(x=x, log_weight=torch.zeros(x.shape[0], dtype=torch.float64),
                           label=label)


def concat_walkers(parts: list[WalkerState]) -> WalkerState:
    """The populations ``parts`` one after the other (shards in rank order, kept + received)."""
    return WalkerState(
        x=torch.cat([w.x for w in parts]),
        log_weight=torch.cat([w.log_weight for w in parts]),
        label=None if parts[0].label is None else torch.cat([w.label for w in parts]),
    )


def shard_sizes(n: int, world_size: int) -> list[int]:
    """How ``n`` walkers (or minibatch rows) split over ``world_size`` shards: as evenly as
    possible, the first ``n % world_size`` shards one larger. Every rank computes the same."""
    base, extra = divmod(n, world_size)
    return [base + (r < extra) for r in range(world_size)]


def shard_slice(n: int, world_size: int, rank: int) -> slice:
    """The rows of shard ``rank`` in the rank-ordered concatenation of all shards."""
    sizes = shard_sizes(n, world_size)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])

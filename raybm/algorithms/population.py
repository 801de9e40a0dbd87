"""The global view of a walker population that may be split into shards.

Estimators see only their own shard of walkers, but the quantities they compute are global:
the negative phase ``sum_i softmax(A)_i dF(x_i)`` is normalised over *all* walkers, the ESS
and ``log mean exp(A)`` of the Jarzynski weights are population-wide, and resampling draws
ancestors from the whole population. :class:`Population` is the little they need for that;
the single-process :data:`LOCAL` does it with no communication, and
``raybm.distributed.comm.TorchComm`` does it with ``torch.distributed`` collectives. (The
estimators define this contract so that the distributed layer depends on them, never the
other way round, DESIGN.md "Layers".)
"""

from __future__ import annotations

from typing import Protocol

import torch

from raybm.walkers import WalkerState


class Population(Protocol):
    """Global reductions over the shards of one walker population."""

    rank: int
    world_size: int

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        """The 1-D ``values`` of every shard concatenated in rank order (sizes may differ)."""
        ...

    def redistribute(self, walkers: WalkerState, ancestors: torch.Tensor) -> WalkerState:
        """This shard after resampling: ``ancestors`` are global indices (the same on every
        rank) of the population in rank order; the result holds this shard's share of them."""
        ...

    def all_reduce_(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` over all ranks, in place (gradient averaging)."""
        ...


class LocalPopulation:
    """One shard holding the whole population: every reduction is the identity."""

    rank = 0
    world_size = 1

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def redistribute(self, walkers: WalkerState, ancestors: torch.Tensor) -> WalkerState:
        return walkers.take(ancestors)

    def all_reduce_(self, values: torch.Tensor) -> torch.Tensor:
        return values


LOCAL = LocalPopulation()

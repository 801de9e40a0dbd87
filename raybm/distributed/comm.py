"""``torch.distributed`` collectives for a sharded walker population.

:class:`TorchComm` implements the estimators' :class:`~raybm.algorithms.population.Population`
contract over the default process group (gloo on CPU, NCCL on GPU, as Ray Train sets it up):

- ``gather``: all-gather of a 1-D tensor whose length differs per shard (padded to the largest
  shard, then trimmed), e.g. the log-weights for the global softmax, ESS and resampling;
- ``redistribute``: the uneven all-to-all of :func:`~raybm.distributed.exchange.plan_exchange`;
- ``all_reduce_``: the sum of the flat gradient buffer.

It counts the bytes each rank sends and the seconds it spends per kind of collective
(``stats``), which ``benchmarks/distributed_overhead.py`` reports.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
import torch.distributed as dist

from raybm.distributed.exchange import pack_rows, plan_exchange, unpack_rows
from raybm.walkers import WalkerState, concat_walkers


class TorchComm:
    """The process group's ranks as shards of one walker population."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        if not dist.is_initialized():
            raise RuntimeError("TorchComm needs an initialised torch.distributed process group")
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        # NCCL moves only CUDA tensors: stage through the device, hand back on the caller's.
        self.device = torch.device(device)
        self.bytes_sent: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def _account(self, kind: str, t0: float, nbytes: int) -> None:
        self.seconds[kind] += time.perf_counter() - t0
        self.bytes_sent[kind] += nbytes

    def shard_sizes(self, n_local: int) -> list[int]:
        sizes = torch.tensor([n_local], dtype=torch.int64, device=self.device)
        out = [torch.empty_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(out, sizes)
        return [int(s) for s in out]

    def gather(self, values: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        sizes = self.shard_sizes(values.numel())
        padded = torch.zeros(max(sizes), dtype=values.dtype, device=self.device)
        padded[: values.numel()] = values.to(self.device)
        out = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(out, padded)
        result = torch.cat([o[:n] for o, n in zip(out, sizes)]).to(values.device)
        self._account("gather", t0, padded.numel() * padded.element_size() * (self.world_size - 1))
        return result

    def redistribute(self, walkers: WalkerState, ancestors: torch.Tensor) -> WalkerState:
        t0 = time.perf_counter()
        sizes = self.shard_sizes(walkers.n_walkers)
        plan = plan_exchange(ancestors.cpu(), sizes, self.rank)
        send = pack_rows(walkers, plan.send.to(walkers.x.device)).to(self.device)
        recv = torch.empty((sum(plan.recv_counts), send.shape[1]), dtype=torch.uint8,
                           device=self.device)
        dist.all_to_all_single(recv, send, plan.recv_counts, plan.send_counts)
        kept = walkers.take(plan.keep.to(walkers.x.device))
        got = unpack_rows(recv.to(walkers.x.device), walkers)
        out = concat_walkers([kept, got])
        self._account("exchange", t0, send.numel())
        return out

    def all_reduce_(self, values: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        staged = values.to(self.device)
        dist.all_reduce(staged)
        if staged is not values:
            values.copy_(staged)
        # A ring all-reduce sends about 2 (W-1)/W of the buffer from each rank.
        nbytes = values.numel() * values.element_size() * 2 * (self.world_size - 1) // max(
            self.world_size, 1)
        self._account("all_reduce", t0, nbytes)
        return values

"""The minibatches of a run: every rank computes the same global minibatch of update ``step``
from ``(seed, epoch)`` and takes its slice of the rows, so a run sees the same sequence of
minibatches whatever the number of workers; a shard's batch is normalised by the whole
minibatch's weight, so the shard losses sum to the single-process loss."""

from __future__ import annotations

import torch

from raybm.algorithms.base import Batch
from raybm.data.dataset import Dataset
from raybm.streams import generator
from raybm.walkers import shard_slice


class Minibatches:
    """Epoch permutations of ``data`` cut into batches of ``batch_size`` rows (at most the
    data's size), for shard ``rank`` of ``world_size``; labels when ``use_labels``."""

    def __init__(self, data: Dataset, batch_size: int, seed: int, world_size: int = 1,
                 rank: int = 0, use_labels: bool = False) -> None:
        self.data, self.seed = data, seed
        self.world_size, self.rank, self.use_labels = world_size, rank, use_labels
        self.batch_size = min(batch_size, data.n_samples)
        self.per_epoch = max(data.n_samples // self.batch_size, 1)
        self._epoch, self._perm = -1, torch.arange(0)

    def rows(self, step: int) -> torch.Tensor:
        """The rows of update ``step``'s whole minibatch (the same on every rank)."""
        epoch, index = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = generator(self.seed, "minibatch", epoch)
            self._perm = torch.randperm(self.data.n_samples, generator=g)
            self._epoch = epoch
        return self._perm[index * self.batch_size : (index + 1) * self.batch_size]

    def batch(self, step: int, shard: bool = True) -> Batch:
        """Update ``step``'s minibatch, or with ``shard`` this rank's slice of its rows
        (normalised by the whole minibatch's weight)."""
        rows = self.rows(step)
        ds = self.data
        total = float(len(rows)) if ds.weights is None else float(ds.weights[rows].double().sum())
        if shard:
            rows = rows[shard_slice(len(rows), self.world_size, self.rank)]
        # index_select, not x[rows]: the same rows, ~8x faster for uint8 images (0.06 against
        # 0.47 ms for 1,856 MNIST rows, Intel Xeon, 2026-12-07).
        take = lambda t: t.index_select(0, rows)  # noqa: E731
        return Batch(x=take(ds.x), label=take(ds.labels) if self.use_labels else None,
                     weight=None if ds.weights is None else take(ds.weights),
                     total_weight=total)

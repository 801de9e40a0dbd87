"""The gradient-estimator contract shared by every training algorithm.

An estimator turns (model, data batch, walkers) into a *surrogate loss* whose gradient is minus
the log-likelihood gradient estimate (DESIGN.md):

    L(theta) = sum_b w_b F_theta(v_b, l_b)  -  sum_i softmax(log_weight)_i F_theta(x_i, l_i)

with the data weights ``w_b`` normalised over the batch and the walkers detached. Autograd then
gives ``<dF/dtheta>_data - <dF/dtheta>_model``, and averaging losses (or gradients) across
workers is the same operation for RBMs and neural EBMs.

When the batch and the walkers are shards of a global batch and population, both terms are
normalised *globally* (``Batch.total_weight``, and the walkers' log-weights gathered over the
:class:`~raybm.algorithms.population.Population`), so that the shard losses *sum* to the
single-process loss and summing their gradients across workers gives exactly its gradient.

Some algorithms apply several updates per minibatch (F&F with labels: a generation update then
a classification update); ``phases`` names them and ``estimate`` is called once per phase, each
call seeing the parameters after the previous phase's update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from raybm.algorithms.population import LOCAL, Population
from raybm.models.rbm import RBM
from raybm.walkers import WalkerState


@dataclass
class Batch:
    """A minibatch of data: ``x (B, N)`` uint8, optional labels and per-sample weights."""

    x: torch.Tensor
    label: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    # The weight (or row count) of the whole minibatch when this is one worker's share of it;
    # None: this batch is the whole minibatch.
    total_weight: float | None = None

    @property
    def size(self) -> int:
        return self.x.shape[0]


@dataclass
class Estimate:
    """One phase's result: the surrogate loss, the walkers to keep, and diagnostics."""

    loss: torch.Tensor
    walkers: WalkerState | None
    info: dict[str, float] = field(default_factory=dict)


class GradientEstimator(Protocol):
    """What the training loop needs from an algorithm."""

    name: str
    phases: tuple[str, ...]

    def init_walkers(self, gen: torch.Generator, model: RBM, n_walkers: int) -> WalkerState | None:
        """The persistent walkers (None for algorithms that restart their chains)."""
        ...

    def estimate(
        self, gen: torch.Generator, model: RBM, batch: Batch, walkers: WalkerState | None,
        phase: str,
    ) -> Estimate:
        ...


def data_term(model: RBM, batch: Batch, label: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_b w_b F(v_b, l_b)`` with the batch weights normalised (uniform when absent) over the
    whole minibatch (``batch.total_weight`` when this batch is a shard of it)."""
    f = model.free_energy(batch.x, label if label is not None else batch.label)
    w = None if batch.weight is None else batch.weight.to(f.dtype)
    total = batch.total_weight
    if total is None:
        total = float(batch.size) if w is None else w.sum()
    return (f.sum() if w is None else (w * f).sum()) / total


def walker_term(model: RBM, walkers: WalkerState, population: Population = LOCAL,
                log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_i softmax(log_weight)_i F(x_i, l_i)``: the weighted model average, with the
    softmax normalised over the whole population (this shard's terms of the global sum).
    ``log_norm``: the population's ``logsumexp(log_weight)`` when the caller has it already
    (saves gathering the log-weights a second time)."""
    f = model.free_energy(walkers.x, walkers.label)
    if log_norm is None:
        log_norm = torch.logsumexp(population.gather(walkers.log_weight.double()), 0)
    w = torch.exp(walkers.log_weight.double() - log_norm).to(f.dtype)
    return (w * f).sum()

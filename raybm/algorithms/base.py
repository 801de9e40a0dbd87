"""The gradient-estimator contract shared by every training algorithm.

An estimator turns (model, data batch, walkers) into a *surrogate loss* whose gradient is minus
the log-likelihood gradient estimate (DESIGN.md):

    L(theta) = sum_b w_b F_theta(v_b, l_b)  -  sum_i softmax(log_weight)_i F_theta(x_i, l_i)

with the data weights ``w_b`` normalised over the batch and the walkers detached. Autograd then
gives ``<dF/dtheta>_data - <dF/dtheta>_model``, and averaging losses (or gradients) across
workers is the same operation for RBMs and neural EBMs.

Some algorithms apply several updates per minibatch (F&F with labels: a generation update then
a classification update); ``phases`` names them and ``estimate`` is called once per phase, each
call seeing the parameters after the previous phase's update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from raybm.models.rbm import RBM
from raybm.walkers import WalkerState


@dataclass
class Batch:
    """A minibatch of data: ``x (B, N)`` uint8, optional labels and per-sample weights."""

    x: torch.Tensor
    label: torch.Tensor | None = None
    weight: torch.Tensor | None = None

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
    """``sum_b w_b F(v_b, l_b)`` with the batch weights normalised (uniform when absent)."""
    f = model.free_energy(batch.x, label if label is not None else batch.label)
    if batch.weight is None:
        return f.mean()
    w = batch.weight.to(f.dtype)
    return (w * f).sum() / w.sum()


def walker_term(model: RBM, walkers: WalkerState) -> torch.Tensor:
    """``sum_i softmax(log_weight)_i F(x_i, l_i)``: the weighted model average."""
    f = model.free_energy(walkers.x, walkers.label)
    w = torch.softmax(walkers.log_weight, dim=0).to(f.dtype)
    return (w * f).sum()

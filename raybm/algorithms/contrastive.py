"""CD-k, PCD-k and out-of-equilibrium k-step training ("F&F").

- CD-k (Hinton 2002): negative chains start at the data batch, k sweeps, discarded.
- PCD-k (Tieleman 2008): persistent walkers, k sweeps per update; with a label unit the walkers
  sample visibles and labels jointly.
- F&F k-step (Carbone, Decelle, Rosset, Seoane 2023, arXiv 2307.06797): the negative chains
  restart from the uniform distribution at every update and run exactly k sweeps, so the model
  is trained to *generate in k steps* (never persistent). With a label unit, two updates per
  minibatch, in the order the authors' code applies them:
    1. generation: labels clamped to the batch labels, visibles from noise, k sweeps;
    2. classification: visibles clamped to the batch, labels from uniform, k label steps;
  each a contrastive loss ``F(data) - F(negatives)`` with the same (v or l) clamped on both
  sides, so only the sampled part contributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from raybm.algorithms.base import Batch, Estimate, data_term, walker_term
from raybm.algorithms.population import LOCAL, Population
from raybm.models.rbm import RBM
from raybm.samplers import gibbs
from raybm.walkers import WalkerState, shard_sizes


@dataclass
class ContrastiveDivergence:
    """CD-k: chains from the data batch (labels included), k sweeps."""

    k: int
    precision: str = "fp32"
    name: str = "cd"
    phases: tuple[str, ...] = ("joint",)
    population: Population = field(default=LOCAL, repr=False)

    def init_walkers(self, gen, model, n_walkers):
        return None

    def estimate(self, gen: torch.Generator, model: RBM, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        start = WalkerState.unweighted(batch.x, batch.label if model.n_labels else None)
        neg, _ = gibbs.step(gen, start, model, self.k, precision=self.precision)
        return Estimate(data_term(model, batch) - walker_term(model, neg, self.population), None)


@dataclass
class PersistentContrastiveDivergence:
    """PCD-k: persistent walkers from the uniform distribution, k sweeps per update."""

    k: int
    precision: str = "fp32"
    name: str = "pcd"
    phases: tuple[str, ...] = ("joint",)
    population: Population = field(default=LOCAL, repr=False)

    def init_walkers(self, gen, model, n_walkers):
        return gibbs.init_uniform(gen, model, n_walkers)

    def estimate(self, gen: torch.Generator, model: RBM, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        walkers, _ = gibbs.step(gen, walkers, model, self.k, precision=self.precision)
        loss = data_term(model, batch) - walker_term(model, walkers, self.population)
        return Estimate(loss, walkers)


@dataclass
class KStep:
    """F&F k-step: k sweeps from uniform noise, restarted every update.

    Without labels (or with ``classification=False``), one generation phase with the labels of
    the negative chains sampled freely (or clamped to the batch labels when the model has them).
    """

    k: int
    n_chains: int | None = None  # negatives per update; default: the batch size
    precision: str = "fp32"
    classification: bool = True
    name: str = "kstep"
    population: Population = field(default=LOCAL, repr=False)

    @property
    def phases(self) -> tuple[str, ...]:
        return ("generation", "classification") if self.classification else ("generation",)

    def init_walkers(self, gen, model, n_walkers):
        return None

    def estimate(self, gen: torch.Generator, model: RBM, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        if phase == "classification":
            if not model.n_labels:
                return Estimate(torch.zeros((), requires_grad=False), None)
            start = gibbs.init_uniform(gen, model, batch.size)
            start = start.replace(x=batch.x)
            neg, _ = gibbs.step(gen, start, model, self.k, clamp_visible=True,
                                precision=self.precision)
            # Same visibles on both sides: only the label (and its coupling) part remains.
            loss = data_term(model, batch) - data_term(model, batch, label=neg.label)
            acc = float((neg.label == batch.label).float().mean())
            return Estimate(loss, None, {"train_label_accuracy": acc})
        if model.n_labels:
            # Generation: the negatives are generated for the batch's labels.
            label = batch.label
            start = gibbs.init_uniform(gen, model, batch.size, label=label)
            neg, _ = gibbs.step(gen, start, model, self.k, clamp_label=True,
                                precision=self.precision)
        else:
            # n_chains counts the whole population: this shard runs its share of them.
            n = batch.size if self.n_chains is None else shard_sizes(
                self.n_chains, self.population.world_size)[self.population.rank]
            neg, _ = gibbs.step(gen, gibbs.init_uniform(gen, model, n), model, self.k,
                                precision=self.precision)
        return Estimate(data_term(model, batch) - walker_term(model, neg, self.population), None)


def build_estimator(name: str, k: int, precision: str = "fp32", **options):
    """The estimator for an ``algorithm.name`` of the config."""
    if name == "cd":
        return ContrastiveDivergence(k=k, precision=precision)
    if name == "pcd":
        return PersistentContrastiveDivergence(k=k, precision=precision)
    if name in ("kstep", "ff"):
        return KStep(k=k, precision=precision, **options)
    if name == "jarzynski":
        from raybm.algorithms.jarzynski import Jarzynski

        return Jarzynski(k=k, precision=precision, **options)
    raise ValueError(f"unknown algorithm {name!r}")

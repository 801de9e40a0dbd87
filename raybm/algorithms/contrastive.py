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
from typing import TYPE_CHECKING, ClassVar

import torch

from raybm.algorithms.base import Batch, Estimate, Estimator, data_term, walker_term
from raybm.algorithms.population import LOCAL, Population
from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.samplers.gibbs import GibbsKernel
from raybm.walkers import WalkerState, shard_sizes

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig
    from raybm.data.dataset import Dataset


@dataclass
class ContrastiveDivergence(Estimator):
    """CD-k: chains from the data batch (labels included), k kernel steps."""

    k: int
    kernel: Kernel = field(default_factory=GibbsKernel)
    phases: tuple[str, ...] = ("joint",)
    population: Population = field(default=LOCAL, repr=False)
    name: ClassVar[str] = "cd"

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> ContrastiveDivergence:
        return cls(k=algorithm.k, kernel=kernel, population=population)

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        start = WalkerState.unweighted(batch.x, batch.label if model.n_labels else None)
        neg, moved = self.kernel.step(gen, start, model, self.k)
        loss = data_term(model, batch) - walker_term(model, neg, self.population)
        return Estimate(loss, None, moved.metrics())


@dataclass
class PersistentContrastiveDivergence(Estimator):
    """PCD-k: persistent walkers from the kernel's initial distribution, k steps per update."""

    k: int
    kernel: Kernel = field(default_factory=GibbsKernel)
    phases: tuple[str, ...] = ("joint",)
    population: Population = field(default=LOCAL, repr=False)
    # Where the walkers start: the kernel's initial distribution, or training samples drawn
    # with replacement (the Jarzynski research's GMM study starts PCD at the data).
    walker_init: str = "kernel"
    name: ClassVar[str] = "pcd"
    persistent: ClassVar[bool] = True

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> PersistentContrastiveDivergence:
        return cls(k=algorithm.k, kernel=kernel, population=population,
                   walker_init=algorithm.walker_init)

    def init_walkers(self, gen: torch.Generator, model: EnergyModel, n_walkers: int,
                     data: Dataset | None = None) -> WalkerState:
        if self.walker_init != "data":
            return self.kernel.init(gen, model, n_walkers)
        if data is None:
            raise ValueError("walkers that start at the data need the training set")
        # Drawn with replacement by this rank's generator, with their labels when the model
        # has a label unit.
        rows = torch.randint(data.n_samples, (n_walkers,), generator=gen)
        label = data.labels[rows] if model.n_labels > 0 else None
        return WalkerState.unweighted(data.x[rows].clone(), label)

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        walkers, moved = self.kernel.step(gen, walkers, model, self.k)
        loss = data_term(model, batch) - walker_term(model, walkers, self.population)
        return Estimate(loss, walkers, moved.metrics())


@dataclass
class KStep(Estimator):
    """F&F k-step: k sweeps from uniform noise, restarted every update.

    Without labels (or with ``classification=False``), one generation phase with the labels of
    the negative chains sampled freely (or clamped to the batch labels when the model has them).
    Clamping a label or the visibles is a Gibbs feature: with a label unit this estimator
    needs a :class:`~raybm.samplers.gibbs.GibbsKernel`; without one, any kernel (short-run
    k-step training of a continuous energy from the kernel's initial noise).
    """

    k: int
    n_chains: int | None = None  # negatives per update; default: the batch size
    classification: bool = True
    kernel: Kernel = field(default_factory=GibbsKernel)
    population: Population = field(default=LOCAL, repr=False)
    name: ClassVar[str] = "kstep"
    generates_in_k: ClassVar[bool] = True

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> KStep:
        return cls(k=algorithm.k, classification=algorithm.classification, kernel=kernel,
                   population=population)

    @property
    def phases(self) -> tuple[str, ...]:
        return ("generation", "classification") if self.classification else ("generation",)

    def reported(self, model: EnergyModel) -> list[str]:
        # The classification phase has nothing to step without a label unit.
        return ["loss_generation"] + (["loss_classification"]
                                      if self.classification and model.n_labels else [])

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        if phase == "classification":
            if not model.n_labels:
                return Estimate(torch.zeros((), requires_grad=False), None)
            start = self.kernel.init(gen, model, batch.size)
            start = start.replace(x=batch.x)
            neg, _ = self.kernel.step(gen, start, model, self.k, clamp_visible=True)
            # Same visibles on both sides: only the label (and its coupling) part remains.
            loss = data_term(model, batch) - data_term(model, batch, label=neg.label)
            acc = float((neg.label == batch.label).float().mean())
            return Estimate(loss, None, {"train_label_accuracy": acc})
        if model.n_labels:
            # Generation: the negatives are generated for the batch's labels.
            start = self.kernel.init(gen, model, batch.size, label=batch.label)
            neg, _ = self.kernel.step(gen, start, model, self.k, clamp_label=True)
        else:
            # n_chains counts the whole population: this shard runs its share of them.
            n = batch.size if self.n_chains is None else shard_sizes(
                self.n_chains, self.population.world_size)[self.population.rank]
            neg, moved = self.kernel.step(gen, self.kernel.init(gen, model, n), model, self.k)
            loss = data_term(model, batch) - walker_term(model, neg, self.population)
            return Estimate(loss, None, moved.metrics())
        return Estimate(data_term(model, batch) - walker_term(model, neg, self.population), None)

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

from raybm.algorithms.base import Batch, Estimate, Estimator
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
        return Estimate(*self._contrast(model, batch, neg, None, moved.metrics()))


@dataclass
class PersistentContrastiveDivergence(Estimator):
    """PCD-k: persistent walkers from the kernel's initial distribution, k steps per update.

    With ``walkers_per_update`` the population is a *persistent buffer* (the replay buffer
    of image EBMs: Du & Mordatch 2019, "Implicit generation and generalization in
    energy-based models"): ``n_walkers`` are kept, and each update draws
    ``walkers_per_update`` of them at random without replacement (each shard its share, from
    its own part of the buffer), restarts each with probability ``reinit_fraction`` from the
    kernel's start distribution, moves them by ``k`` kernel steps, uses them for the negative
    phase and writes them back; the rest wait. A walker's chain is then long on average
    (``k n_walkers / walkers_per_update`` steps between restarts of a given slot, spread over
    many parameter values) while an update costs only the walkers it moves. Nothing makes
    the buffer a sample of the model: with a biased kernel (short-run Langevin) it holds what
    the recipe trains towards, the data's look and, in the buffer recipe, its class
    proportions (README, "Digits on 2 cores").
    """

    k: int
    kernel: Kernel = field(default_factory=GibbsKernel)
    phases: tuple[str, ...] = ("joint",)
    population: Population = field(default=LOCAL, repr=False)
    # Where the walkers start: the kernel's initial distribution, or training samples drawn
    # with replacement (the Jarzynski research's GMM study starts PCD at the data).
    walker_init: str = "kernel"
    # A persistent buffer (the class docstring): the walkers the whole population moves per
    # update (None: all of them), and the probability that each of them first restarts from
    # the kernel's start distribution.
    walkers_per_update: int | None = None
    reinit_fraction: float = 0.0
    name: ClassVar[str] = "pcd"
    persistent: ClassVar[bool] = True

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> PersistentContrastiveDivergence:
        return cls(k=algorithm.k, kernel=kernel, population=population,
                   walker_init=algorithm.walker_init,
                   walkers_per_update=algorithm.walkers_per_update,
                   reinit_fraction=algorithm.reinit_fraction)

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
        if self.walkers_per_update is None and not self.reinit_fraction:
            walkers, moved = self.kernel.step(gen, walkers, model, self.k)
            return Estimate(*self._contrast(model, batch, walkers, walkers, moved.metrics()))
        # A buffer: this shard moves its share of walkers_per_update, drawn from its own
        # walkers without replacement, a reinit_fraction of them restarted first.
        n = walkers.n_walkers
        if self.walkers_per_update is None:
            rows = None
            chosen = walkers
        else:
            m = shard_sizes(self.walkers_per_update, self.population.world_size)[
                self.population.rank]
            if not 0 < m <= n:  # the config refuses it first (walkers_per_update, workers)
                raise ValueError(f"this shard holds {n} walkers and would move {m}")
            rows = torch.randperm(n, generator=gen)[:m]
            chosen = walkers.take(rows)
        info: dict[str, float] = {}
        if self.reinit_fraction:
            # Restarted as the kernel starts a walker, labels included (a label unit's is
            # drawn afresh, not kept from the walker it replaces).
            fresh = self.kernel.init(gen, model, chosen.n_walkers)
            restart = torch.rand(chosen.n_walkers, generator=gen) < self.reinit_fraction
            where = restart.nonzero().squeeze(1)
            chosen = chosen.put(where, fresh.take(where))
            # The share over the whole population (the same on every rank).
            counts = torch.tensor([float(where.numel()), float(chosen.n_walkers)],
                                  dtype=torch.float64)
            self.population.all_reduce_(counts)
            info["reinitialised"] = counts[0] / counts[1]
        moved_walkers, moved = self.kernel.step(gen, chosen, model, self.k)
        kept = moved_walkers if rows is None else walkers.put(rows, moved_walkers)
        return Estimate(*self._contrast(model, batch, moved_walkers, kept,
                                        {**moved.metrics(), **info}))

    @property
    def info_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("reinitialised",) if self.reinit_fraction else ()


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
            kernel = self.kernel
            if not isinstance(kernel, GibbsKernel):
                raise TypeError(f"F&F's classification phase samples labels with the visibles "
                                f"clamped, which {type(kernel).__name__} cannot: needs a "
                                "Gibbs kernel")
            # Labels from uniform, visibles clamped to the batch (no visibles drawn to be
            # discarded); the chain's x W is the contrast's too (same parameters).
            start = torch.randint(0, model.n_labels, (batch.size,), generator=gen,
                                  device=gen.device).to(batch.x.device)
            labels, field = kernel.label_chain(gen, model, batch.x, start, self.k)
            # Same visibles on both sides: only the label (and its coupling) part remains.
            # (A kernel whose auto precision no run resolved drew in a precision of its own
            # choosing: its x W is not the contrast's.)
            loss, grads = self.label_contrast(model, batch, labels,
                                              None if kernel.precision == "auto" else field)
            acc = float((labels == batch.label).float().mean())
            return Estimate(loss, None, {"train_label_accuracy": acc}, grads)
        if model.n_labels:
            # Generation: the negatives are generated for the batch's labels.
            start = self.kernel.init(gen, model, batch.size, label=batch.label)
            neg, _ = self.kernel.step(gen, start, model, self.k, clamp_label=True)
        else:
            # n_chains counts the whole population: this shard runs its share of them.
            n = batch.size if self.n_chains is None else shard_sizes(
                self.n_chains, self.population.world_size)[self.population.rank]
            neg, moved = self.kernel.step(gen, self.kernel.init(gen, model, n), model, self.k)
            return Estimate(*self._contrast(model, batch, neg, None, moved.metrics()))
        return Estimate(*self._contrast(model, batch, neg, None, {}))

"""Jarzynski-weighted persistent walkers (Carbone, Hua, Coste, Vanden-Eijnden 2023,
arXiv 2305.19414).

Walkers carry log-weights ``A_i``. Across a parameter update ``theta -> theta'`` each walker
absorbs the work ``A_i += -(F_theta'(x_i) - F_theta(x_i))`` (:meth:`Jarzynski.reweight`, called
by the training loop around the optimizer step); the walkers are then moved by k steps of the
kernel under the current parameters. A kernel that leaves them invariant (Gibbs, MALA) does no
work; one that does not (ULA) reports the log-weight increment that makes the move an
annealed-importance-sampling step (``samplers.langevin``), added here. By Jarzynski's
equality the weighted walkers stay unbiased for ``p_theta'`` however far the chains lag, so

    negative phase = sum_i softmax(A)_i dE(x_i)/dtheta,
    log Z_t = log Z_0 + log mean_i exp(A_i)

(the second carried across resamplings), which gives a live log-likelihood at no extra cost.
Walkers start *exactly* from the initial model (``samplers.exact``: an RBM without couplings,
which the trainer builds so, or a Gaussian / Gaussian mixture), whose ``log Z_0`` is known in
closed form. When ESS / n drops below ``ess_threshold`` the walkers are resampled (systematic
by default) and the weights reset.

Sharded populations: every global quantity (the softmax normaliser, ESS, ``log mean exp A``,
the ancestors) is computed from the log-weights gathered over the
:class:`~raybm.algorithms.population.Population`. The ancestors are drawn from a generator
seeded by ``(resample_seed, n_resamplings)``, so every rank draws the same ones without a
broadcast (the ``"resample"`` stream of ``raybm.streams``); rank 0 is the coordinator of
record that logs the decision. The population layer then moves only the rows whose ancestor
sits on another shard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from raybm.algorithms.base import Batch, Estimate, Estimator
from raybm.algorithms.population import LOCAL, Population
from raybm.algorithms.resample import ess_fraction, log_mean_weight, resample
from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.samplers.exact import exact_start
from raybm.samplers.gibbs import GibbsKernel
from raybm.streams import generator
from raybm.walkers import WalkerState

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig
    from raybm.data.dataset import Dataset


@dataclass
class Jarzynski(Estimator):
    """Jarzynski-weighted persistent walkers with ESS-triggered resampling, for any model
    and kernel.

    The weights carry the work of every parameter change, and, for a kernel that does not
    leave the current model invariant (ULA), the increment the kernel reports: the move then
    counts as an annealed-importance-sampling step with the kernel run backwards as backward
    kernel (``samplers.langevin``). Walkers start as exact draws of the initial model
    (``samplers.exact``), so ``log Z_0`` is known.
    """

    weighs_moves: ClassVar[bool] = True
    k: int
    ess_threshold: float = 0.5
    resampling: str = "systematic"
    phases: tuple[str, ...] = ("joint",)
    resample_seed: int = 0  # with n_resamplings: the shared seed of each resampling's draw
    kernel: Kernel = field(default_factory=GibbsKernel)
    population: Population = field(default=LOCAL, repr=False)
    log_z_base: float = field(default=float("nan"))  # log Z_0 + increments banked at resampling
    n_resamplings: int = 0
    # No resampling before this many updates (the research's MNIST runs wait); ``updates``
    # counts them (checkpointed).
    resample_after: int = 0
    updates: int = 0
    info_names: ClassVar[tuple[str, ...]] = ("ess", "log_z", "weight_entropy",
                                              "n_resamplings", "resampled")
    plots: ClassVar[dict[str, tuple[str, ...]]] = {
        "jarzynski.png": ("ess", "log_z", "weight_entropy", "test_loglik_jarzynski")}
    plot_events: ClassVar[str | None] = "n_resamplings"
    name: ClassVar[str] = "jarzynski"
    persistent: ClassVar[bool] = True
    starts_exact: ClassVar[bool] = True

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> Jarzynski:
        return cls(k=algorithm.k, ess_threshold=algorithm.ess_threshold,
                   resampling=algorithm.resampling, resample_seed=seed, kernel=kernel,
                   population=population, resample_after=algorithm.resample_after)

    def __post_init__(self) -> None:
        if not self.kernel.exact_weights:  # the config refuses it first, naming the key
            raise ValueError(f"jarzynski cannot weight the moves of {self.kernel.name} (no "
                             "known transition density): use ula or mala")

    def init_walkers(self, gen: torch.Generator, model: EnergyModel, n_walkers: int,
                     data: Dataset | None = None) -> WalkerState:
        walkers, self.log_z_base = exact_start(gen, model, n_walkers, self.kernel.box)
        return walkers

    def log_z(self, walkers: WalkerState) -> float:
        """The running estimate ``log Z_t`` (over the whole population)."""
        return self.log_z_base + log_mean_weight(self.population.gather(walkers.log_weight))

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        log_weight = self.population.gather(walkers.log_weight)  # the whole population's
        info: dict[str, float] = {"ess": ess_fraction(log_weight), "resampled": 0.0}
        self.updates += 1
        if info["ess"] < self.ess_threshold and self.updates > self.resample_after:
            self.log_z_base += log_mean_weight(log_weight)
            shared = generator(self.resample_seed, "resample", self.n_resamplings)
            ancestors = resample(shared, log_weight, log_weight.numel(), self.resampling)
            walkers = self.population.redistribute(walkers, ancestors)
            walkers = walkers.replace(log_weight=torch.zeros_like(walkers.log_weight))
            log_weight = torch.zeros_like(log_weight)
            info["resampled"] = 1.0
            self.n_resamplings += 1
        # The gradient comes from the walkers *before* this update's sweeps (their weights are
        # already those of the current model), and the trainer charges the work of the update
        # to the walkers *after* them. Were the same walkers to set theta' and absorb its work,
        # each would see its own push on F (O(lr / n) per update): a feedback that breaks
        # Jarzynski's equality and, on a bimodal target, under-weights the minor mode
        # (benchmarks/bimodal_modes.py measured +0.07..+0.11 on its weight, 2k walkers).
        loss, grads = self.contrast(model, batch, walkers,
                                    torch.logsumexp(log_weight.double(), 0))
        walkers, moved = self.kernel.step(gen, walkers, model, self.k)
        if moved.log_weight_increment is not None:  # a kernel that is not invariant (ULA)
            walkers = walkers.replace(
                log_weight=walkers.log_weight + moved.log_weight_increment)
        info.update(moved.metrics())
        w = torch.softmax(log_weight, 0)  # the kernel moves walkers, never their weights
        info["weight_entropy"] = float(-(w * torch.log(w.clamp_min(1e-300))).sum())
        info["n_resamplings"] = float(self.n_resamplings)
        return Estimate(loss, walkers, info, grads)

    def update_info(self, model: EnergyModel, walkers: WalkerState | None) -> dict[str, float]:
        """``log Z`` of the parameters this update set: the log-weights have absorbed its
        work (:meth:`after_update`), so this is the value a checkpoint of the step holds and
        the one a live log-likelihood with the new parameters needs. (The weights ``estimate``
        saw belong to the parameters before the update: pairing them with the new model read
        the test log-likelihood 0.2-0.5 nats too high on a training MLP.)"""
        return {"log_z": self.log_z(walkers)}

    def start(self, gen: torch.Generator, model: EnergyModel, walkers: WalkerState | None,
              weight_std: float) -> WalkerState | None:
        """A fresh run: :meth:`kick` by ``weight_std`` (nothing when 0)."""
        if walkers is None or weight_std <= 0:
            return walkers
        return self.kick(gen, model, walkers, weight_std)

    def before_update(self, model: EnergyModel, walkers: WalkerState | None) -> Any:
        """What the work of the update needs of the parameters about to change
        (``EnergyModel.before_change``)."""
        return self.before_change(model, walkers)

    def after_update(self, model: EnergyModel, walkers: WalkerState | None,
                     token: torch.Tensor) -> WalkerState:
        """Charge the update's work to the walkers (:meth:`reweight`)."""
        return self.reweight(model, walkers, token)

    @torch.no_grad()
    def kick(self, gen: torch.Generator, model: EnergyModel, walkers: WalkerState,
             std: float) -> WalkerState:
        """Leave the exactly-sampled start by the model's declared ``kick_`` (an RBM adds
        ``N(0, std^2)`` to its couplings) and charge the work to the walkers, as for any
        update (so ``log Z_0`` stays exact).

        Zero couplings with data-fitted visible biases are a stationary point of the
        likelihood (exactly so for the centred gradient): without a kick, training leaves it
        only through rounding noise, thousands of updates late. ``gen`` must be the same on
        every rank (the kick is a parameter change)."""
        before = self.before_change(model, walkers)
        model.kick_(gen, std)
        return self.reweight(model, walkers, before)

    def before_change(self, model: EnergyModel, walkers: WalkerState) -> Any:
        """The start of a parameter change's work (``EnergyModel.before_change``), with the
        products in the kernel's matmul precision."""
        return model.before_change(walkers.x, walkers.condition, self.kernel.precision)

    @torch.no_grad()
    def reweight(self, model: EnergyModel, walkers: WalkerState, before: Any) -> WalkerState:
        """Add the work of the update just made: ``A += -(F_new(x) - F_old(x))``, from what
        :meth:`before_change` kept (``EnergyModel.energy_change``)."""
        work = model.energy_change(before, walkers.x, walkers.condition)
        return walkers.replace(log_weight=walkers.log_weight - work)

    def state_dict(self) -> dict[str, float]:
        state = {"log_z_base": self.log_z_base, "n_resamplings": self.n_resamplings}
        if self.resample_after:  # (only then: the state of other runs is what it was)
            state["updates"] = self.updates
        return state

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.log_z_base = float(state["log_z_base"])
        self.n_resamplings = int(state["n_resamplings"])
        # A checkpoint without the count was written with resample_after 0, by a run that
        # resampled whenever the ESS said so: it waits no longer.
        self.updates = int(state.get("updates", self.resample_after))

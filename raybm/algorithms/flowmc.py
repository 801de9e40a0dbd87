"""FlowMC-EBM: an energy trained jointly with a normalizing flow that samples for it
(Grenioux, Moulines, Gabrié 2023, "Balanced training of energy-based models with adaptive
flow sampling", arXiv 2306.00684).

Persistent walkers are moved by FlowMC (``samplers.flowmc``: flow-IMH steps interleaved with
MALA), whose flow is a second trained module of the run (``raybm.models.flow``). Each update:

1. ``joint`` (steps the energy): the walkers take ``k`` FlowMC rounds under the current
   energy, and the contrastive loss ``<E>_data - <E>_walkers`` (plus the energy penalty, if
   any) gives the log-likelihood gradient, as in PCD;
2. ``fit`` x ``flow_steps`` (steps the flow): maximum likelihood of the flow on the walkers
   just moved, ``-<log q(x)>_walkers``, the research's "likelihood ascent" on the sampler's
   output (section 3.2), optionally mixed with the data's likelihood:

       L_flow = (1 - lambda) (-<log q>_walkers) + lambda (-<log q>_data),   lambda = ``flow_data_weight``.

   Fitting on the walkers makes the flow follow the *model*, which is what an IMH proposal
   needs; the data term helps early, while the model is still far from the data (default 0:
   the research's choice for the mixtures).

The energy starts at its Gaussian base (the read-out of a neural energy at zero:
``Estimator.starts_exact``) and the flow at the identity, so model, base and flow agree at
the start and the walkers start as exact draws of the model (section 3.2). The flow has its
own optimizer, learning rate and schedule (``optimizers.flow``): the research's warning is
that the two rates must stay matched (section 4.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from raybm.algorithms.base import ENERGY, Batch, Estimate, Estimator, Phase
from raybm.algorithms.population import LOCAL, Population
from raybm.models.base import EnergyModel
from raybm.models.flow import Flow
from raybm.samplers.base import Kernel
from raybm.samplers.exact import exact_start
from raybm.walkers import WalkerState

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig
    from raybm.data.dataset import Dataset


@dataclass
class FlowMCEBM(Estimator):
    """PCD with FlowMC walkers and a flow fitted to them (module docstring)."""

    k: int
    kernel: Kernel
    population: Population = field(default=LOCAL, repr=False)
    flow_family: str = "maf"
    flow_transforms: int = 3
    flow_hidden: tuple[int, ...] = (64, 64)
    flow_steps: int = 2
    flow_data_weight: float = 0.0
    flow_warmup: int = 0
    flow_warmup_lr: float = 1e-3
    imh_floor: float = 0.05
    flow: Flow | None = field(default=None, repr=False)
    # IMH acceptances summed over this shard's updates since the last logged one, and their
    # count: the window whose mean says whether the flow keeps up. Checkpointed from rank 0:
    # a run resumed between two logs counts rank 0's part of that window for every rank (a
    # diagnostic, never a gradient; checkpoints fall on log steps in every shipped config).
    _window: list[float] = field(default_factory=lambda: [0.0, 0.0], repr=False)
    name: ClassVar[str] = "flowmc_ebm"
    persistent: ClassVar[bool] = True
    starts_exact: ClassVar[bool] = True
    modules: ClassVar[tuple[str, ...]] = ("flow",)
    proposal: ClassVar[str | None] = "flow"
    plots: ClassVar[dict[str, tuple[str, ...]]] = {
        "flowmc.png": ("imh_acceptance", "acceptance", "loss_fit")}

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> "FlowMCEBM":
        return cls(k=algorithm.k, kernel=kernel, population=population,
                   flow_family=algorithm.flow_family,
                   flow_transforms=algorithm.flow_transforms,
                   flow_hidden=tuple(algorithm.flow_hidden), flow_steps=algorithm.flow_steps,
                   flow_data_weight=algorithm.flow_data_weight,
                   flow_warmup=algorithm.flow_warmup, flow_warmup_lr=algorithm.flow_warmup_lr,
                   imh_floor=algorithm.imh_floor)

    @property
    def phases(self) -> tuple[Phase, ...]:  # type: ignore[override]
        return (Phase("joint", (ENERGY,)),) + (Phase("fit", ("flow",)),) * self.flow_steps

    def build_modules(self, gen: torch.Generator, model: EnergyModel,
                      data: Dataset) -> dict[str, nn.Module]:
        self.flow = Flow(math.prod(data.event_shape), self.flow_family, self.flow_transforms,
                         self.flow_hidden, gen=gen, identity=True)
        return {"flow": self.flow}

    def init_walkers(self, gen: torch.Generator, model: EnergyModel, n_walkers: int,
                     data: Dataset | None = None) -> WalkerState:
        walkers, _ = exact_start(gen, model, n_walkers, None)
        return walkers

    # Exact draws of the initial model per warm-up step
    WARMUP_DRAWS: ClassVar[int] = 512

    def start(self, gen: torch.Generator, model: EnergyModel, walkers: WalkerState | None,
              weight_std: float) -> WalkerState | None:
        """A fresh run's flow warm-up: ``flow_warmup`` Adam steps (rate ``flow_warmup_lr``) of
        maximum likelihood, each on fresh exact draws of the initial model (``gen`` is the
        same on every rank, so every rank fits the same flow). An energy that starts at its Gaussian base
        needs none (the flow starts at the identity, already the model: section 3.2); a
        model that starts elsewhere (a mixture at k-means centres) would otherwise meet a
        flow whose proposals are all refused until the fit catches up."""
        if not self.flow_warmup:
            return walkers
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.flow_warmup_lr)
        for _ in range(self.flow_warmup):
            # Fresh draws every step: the expectation itself, never a fixed sample the flow
            # could overfit (a fixed 4,096 in d = 64 left IMH accepting 0.1%).
            draws, _ = exact_start(gen, model, self.WARMUP_DRAWS, None)
            optimizer.zero_grad()
            (-self.flow.log_prob(draws.x).mean()).backward()
            optimizer.step()
        self.flow.zero_grad(set_to_none=True)
        return walkers

    def update_info(self, model: EnergyModel, walkers: WalkerState | None) -> dict[str, float]:
        """The IMH acceptance over all shards' updates since the last log
        (``imh_acceptance_window``) and ``flow_lagging`` (1 when it is below ``imh_floor``).

        The research's warning (arXiv 2306.00684, section 4.1): with the energy's learning
        rate too large for the flow's, the flow falls behind the model it should propose from,
        its proposals are all refused, the walkers lose the jumps between modes, and the two
        modules drift apart. A collapsing IMH acceptance is the symptom, seen in the logs
        before the mode weights go wrong."""
        window = torch.tensor(self._window, dtype=torch.float64)
        self.population.all_reduce_(window)
        self._window = [0.0, 0.0]
        if window[1] == 0:
            return {}
        mean = float(window[0] / window[1])
        return {"imh_acceptance_window": mean, "flow_lagging": float(mean < self.imh_floor)}

    def alarms(self, info: dict[str, float]) -> list[str]:
        if not info.get("flow_lagging"):
            return []
        return [f"the flow is not keeping up with the energy: IMH acceptance "
                f"{info['imh_acceptance_window']:.3f} since the last log, below "
                f"algorithm.imh_floor {self.imh_floor:g}; lower optimizer.lr, or raise "
                "optimizers.flow.lr_ratio or algorithm.flow_steps (arXiv 2306.00684, 4.1)"]

    def reported(self, model: EnergyModel) -> list[str]:
        return super().reported(model) + ["imh_acceptance_window", "flow_lagging"]

    def state_dict(self) -> dict[str, Any]:
        return {"imh_window": list(self._window)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._window = [float(v) for v in state.get("imh_window", (0.0, 0.0))]

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        if phase == "joint":
            walkers, moved = self.kernel.step(gen, walkers, model, self.k)
            info = moved.metrics()
            self._window[0] += info.get("imh_acceptance", 0.0)
            self._window[1] += 1
            return Estimate(*self._contrast(model, batch, walkers, walkers, info))
        # fit: this shard's terms of the flow's mean negative log-likelihood over the whole
        # population (and over the whole minibatch for the data term).
        n = self.population.gather(walkers.log_weight).numel()
        nll = -self.flow.log_prob(walkers.x).sum() / n
        loss = nll
        if self.flow_data_weight:
            total = batch.total_weight if batch.total_weight is not None else batch.size
            data_nll = -self.flow.log_prob(batch.x).sum() / total
            loss = (1 - self.flow_data_weight) * nll + self.flow_data_weight * data_nll
        # (Logged as loss_fit, summed over the shards by the trainer.)
        return Estimate(loss, None)

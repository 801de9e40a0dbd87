"""FlowMC: independent Metropolis-Hastings with normalizing-flow proposals, interleaved with
MALA (Gabrié, Rotskoff, Vanden-Eijnden 2022, "Adaptive Monte Carlo augmented with normalizing
flows", PNAS 119; Grenioux, Moulines, Gabrié 2023, arXiv 2306.00684, algorithm 1), a
``samplers.base.Kernel``.

One round, per walker: an **IMH step** proposes ``y ~ q`` from the run's flow, independent of
the walker ``x``, and accepts it with probability

    min(1, [pi(y) q(x)] / [pi(x) q(y)]),   log = -E(y) + E(x) - log q(y) + log q(x),

which leaves ``pi ~ exp(-E)`` exactly invariant for any proposal density ``q`` (Tierney 1994,
"Markov chains for exploring posterior distributions"): a poor flow only lowers the
acceptance. Then ``n_mala`` **MALA steps** (``samplers.langevin.MALA``) explore locally.
The flow's jumps move walkers between modes that Langevin steps alone cross in exponential
time, so persistent walkers keep the modes' weights while the energy trains. ``step(gen,
state, model, k)`` runs ``k`` rounds; the info holds the IMH acceptance (``imh_acceptance``)
and MALA's (``acceptance``).

The flow is a trained module of the run (``raybm.models.flow``), handed to the kernel's
builder by the trainer (``samplers.registry.build_kernel``); the kernel only reads it. Draws
come from the generator it is given, so runs resume exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch

from raybm.models.base import EnergyModel
from raybm.samplers.base import KernelBase, KernelInfo
from raybm.samplers.langevin import MALA, NoiseStart
from raybm.walkers import WalkerState


@dataclass(frozen=True)
class FlowMC(NoiseStart, KernelBase):
    """``k`` rounds of one flow-IMH step then ``n_mala`` MALA steps of size ``step_size``."""

    step_size: float
    n_mala: int = 10
    # Adapt the MALA step after every update towards this acceptance (samplers.langevin.MALA:
    # log h += adapt_rate (acceptance - target)); None: a fixed step.
    target_acceptance: float | None = None
    adapt_rate: float = 0.05
    # The run's flow (``models.flow.Flow``: ``sample(gen, n)``, ``log_prob(x)``), or None
    # before the trainer has built it: such a kernel starts walkers but cannot move them.
    flow: Any = field(default=None, compare=False, repr=False)
    box: tuple[float, float] | None = None  # flows live on R^d: no box
    name: ClassVar[str] = "flowmc"
    invariant: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.n_mala < 0:
            raise ValueError(f"n_mala must be >= 0, got {self.n_mala}")
        if self.box is not None:
            raise ValueError("flowmc proposes on R^d: it takes no box")
        self.mala  # the same checks of the step size

    @property
    def mala(self) -> MALA:
        """The local moves: MALA of this step size (and its adaptation)."""
        return MALA(self.step_size, target_acceptance=self.target_acceptance,
                    adapt_rate=self.adapt_rate)

    @property
    def adapts_on(self) -> tuple[str, ...]:
        return self.mala.adapts_on if self.n_mala else ()

    @property
    def info_names(self) -> tuple[str, ...]:
        return ("imh_acceptance",) + self.mala.info_names

    def adapted(self, means: dict[str, float]) -> tuple["FlowMC", dict[str, float]]:
        if not self.adapts_on:
            return self, {}
        mala, info = self.mala.adapted(means)
        return replace(self, step_size=mala.step_size), info

    def state_dict(self) -> dict[str, float]:
        return self.mala.state_dict()

    def with_state(self, state: dict[str, float]) -> "FlowMC":
        return replace(self, step_size=self.mala.with_state(state).step_size)

    @torch.no_grad()
    def imh(self, gen: torch.Generator, state: WalkerState,
            model: EnergyModel) -> tuple[WalkerState, torch.Tensor]:
        """One independent Metropolis-Hastings step with flow proposals; the walkers and the
        mean acceptance (a 0-d tensor: read on the host only when logged)."""
        if self.flow is None:
            raise ValueError("the flowmc kernel proposes from the run's flow: use it with an "
                             "algorithm that trains one (algorithm.name: flowmc_ebm)")
        x, cond = state.x, state.condition
        n = x.shape[0]
        y, log_q_y = self.flow.sample(gen, n)
        y = y.reshape(x.shape).to(x.dtype)
        log_q_x = self.flow.log_prob(x)
        log_ratio = (-model.energy(y, cond).double() + model.energy(x, cond).double()
                     - log_q_y.double() + log_q_x.double())
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        keep = torch.log(u) < log_ratio  # NaN (an overflow) compares False: rejected
        x = torch.where(keep.view(-1, *[1] * (x.dim() - 1)), y, x)
        return state.replace(x=x), keep.double().mean()

    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int, *,
             clamp_label: bool = False) -> tuple[WalkerState, KernelInfo]:
        mala = self.mala
        accepted, local = torch.zeros((), dtype=torch.float64), 0.0
        for _ in range(k):
            state, a = self.imh(gen, state, model)
            accepted += a
            if self.n_mala:
                state, info = mala.step(gen, state, model, self.n_mala)
                local += info.acceptance
        extra = {"imh_acceptance": float(accepted) / k if k else math.nan}
        return state, KernelInfo(acceptance=local / k if k and self.n_mala else None,
                                 extra=extra)

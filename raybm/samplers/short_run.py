"""Short-run Langevin for image energies: a stable, biased sampler with its own noise scale
(``samplers.base.Kernel``).

One step, for an energy ``E`` on walkers in a box ``[low, high]``:

    x <- clamp(x + s xi),                          xi ~ N(0, I),   s = ``noise_std``
    x <- clamp(x - h clamp(grad E(x), -c, c)),                     h = ``step_size``, c = ``grad_clamp``

the recipe of short-run and persistent-buffer image EBMs (Nijkamp, Hill, Zhu, Wu 2019,
"Learning non-convergent non-persistent short-run MCMC toward energy-based model"; Du &
Mordatch 2019, "Implicit generation and generalization in energy-based models": step sizes
far above the noise, gradients clipped per coordinate, samples clamped to the data range).
The noise and the step are decoupled on purpose: with ``s^2 = 2 h`` (the Langevin diffusion
at temperature 1) the walkers of a 784-pixel image energy stay noise; with ``s`` far below
``sqrt(2 h)`` they descend the energy like a noisy gradient flow and become digits in tens of
steps.

It is **not** a sampler of ``exp(-E)``: it leaves no known distribution invariant, and the
clamps make the transition density of a move unknown, so it has no Jarzynski log-weight
increment. It declares so (``invariant = False``, ``exact_weights = False``), and an estimator
whose weights need exact moves refuses it (``algorithm.name: jarzynski`` with
``sampler.name: short_run`` is a one-line config error). What it gives is what PCD with a
persistent buffer trains with: the model learns an energy whose short runs from the buffer
look like the data (the buffer recipe, configs/mnist236_conv_buffer.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from raybm.models.base import EnergyModel
from raybm.samplers.base import KernelBase, KernelInfo
from raybm.samplers.langevin import NoiseStart
from raybm.walkers import WalkerState


@dataclass(frozen=True)
class ShortRunLangevin(NoiseStart, KernelBase):
    """Noisy clipped gradient descent on the energy (module docstring)."""

    step_size: float
    noise_std: float
    grad_clamp: float | None = None
    box: tuple[float, float] | None = None
    name: ClassVar[str] = "short_run"
    invariant: ClassVar[bool] = False
    exact_weights: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be a positive number, got {self.step_size}")
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise ValueError(f"noise_std must be a number >= 0, got {self.noise_std}")
        if self.grad_clamp is not None and not (self.grad_clamp > 0
                                                and math.isfinite(self.grad_clamp)):
            raise ValueError(f"grad_clamp must be a positive number, got {self.grad_clamp}")
        if self.box is not None and not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {self.box}")

    def _clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.box is None else x.clamp_(*self.box)

    @torch.no_grad()
    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int, *,
             clamp_label: bool = False) -> tuple[WalkerState, KernelInfo]:
        # The condition (label) is never moved: clamp_label changes nothing.
        x, cond = state.x.clone(), state.condition
        for _ in range(k):
            if self.noise_std > 0:
                noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
                x = self._clamp(x.add_(noise, alpha=self.noise_std))
            _, grad = model.energy_and_grad(x, cond)
            if self.grad_clamp is not None:
                grad = grad.clamp(-self.grad_clamp, self.grad_clamp)
            x = self._clamp(x.sub_(grad, alpha=self.step_size))
        return state.replace(x=x.detach()), KernelInfo()

"""DCD-VE: diffusion contrastive divergence with a variance-exploding perturbation (Luo, Jiang,
Wang, Zhou, Wang 2023, "Training energy-based models with diffusion contrastive divergences",
arXiv 2307.01668).

**The objective.** Let ``Phi`` be a parameter-free kernel, here the variance-exploding
perturbation ``y = x + sigma eps``, ``eps ~ N(0, I)`` (a Gaussian convolution), and
``p_theta = exp(-E_theta) / Z_theta``. The diffusion contrastive divergence is

    D(theta) = KL(p_d || p_theta) - KL(Phi p_d || Phi p_theta)  >= 0

(non-negative by the data-processing inequality, zero only at ``p_theta = p_d`` since a
Gaussian convolution is injective; the research's section 3). Write ``q_theta = Phi p_theta``,
``q_theta(y) = Z_theta^-1 int exp(-E_theta(x)) k(y | x) dx``. Both KLs contain ``log Z_theta``
with the same sign and weight one (``-<log p_theta>_{p_d}`` and ``-<log q_theta>_{Phi p_d}``
each carry ``+log Z_theta``), so it **cancels** in the difference:

    D = <E(x)>_{p_d} - <-log int exp(-E(x')) k(y | x') dx'>_{y ~ Phi p_d} + const,
    grad D = <grad E(x)>_{p_d} - <<grad E(x')>_{x' ~ p_theta(x' | y)}>_{y ~ Phi p_d},

with the posterior ``p_theta(x' | y) ∝ exp(-E(x') - |y - x'|^2 / (2 sigma^2))``. No sample of
``p_theta`` itself is needed: the negatives stay within ``sigma`` of the data, where a few
Langevin steps suffice (the research's point: CD's long chains replaced by a short diffusion).

**Two estimators** (``algorithm.route``):

- ``taylor`` (default): the heat equation. ``Phi_sigma p = p + (sigma^2 / 2) Lap p + O(sigma^4)``
  and ``Lap p / p = |grad E|^2 - Lap E`` for ``p ∝ exp(-E)``, so

      log q_theta(y) = -E(y) - log Z + (sigma^2 / 2) (|grad E(y)|^2 - Lap E(y)) + O(sigma^4),
      D ~= <E(x) - E(y) + (sigma^2 / 2) (|grad E(y)|^2 - Lap E(y))>_{x ~ p_d, y = x + sigma eps},

  a loss in closed form (``log Z`` gone), differentiated by autograd through the energy's
  gradient and Laplacian (``EnergyModel.score`` / ``laplacian`` with ``create_graph``; the
  Laplacian exact, or by Hutchinson's estimator with ``algorithm.probes`` Rademacher probes).
  One step, no sampler. As ``sigma -> 0`` it is ``sigma^2`` times the Hyvarinen
  score-matching loss ``<|grad E|^2 / 2 - Lap E>_{p_d}`` (``E(x) - E(y)`` averages to
  ``-(sigma^2/2) Lap E``). Its truncation biases the fixed point by ``O(sigma^2)``: for a
  Gaussian energy on Gaussian data of variance ``s^2`` it learns the variance ``s^2 +
  sigma^2`` (the tests check that closed form).
- ``posterior``: the gradient above with ``x'`` from ``k`` steps of the run's Langevin kernel
  (``sampler``: ULA or MALA) on the posterior energy ``E(x') + |y - x'|^2 / (2 sigma^2)``,
  started at the noised data ``y`` (``posterior_start: noised``, the research's) or at the
  clean data ``x`` (``data``). From ``x``, noising and then sampling the posterior is one
  Gibbs sweep of ``p_theta(x) k(y | x)``, which leaves ``p_theta`` invariant: the estimator is
  CD-k with a noise-and-denoise kernel, and with MALA its fixed point is exact. The step must
  stay below the posterior's width ``~sigma^2`` (the quadratic term's curvature is
  ``1 / sigma^2``): the route is stable at small noise only, as the issue's check found.

**Noise scale.** In units of the training data's width ``w`` (``sigma_unit: width``, the
default; ``Dataset.width``: the RMS of the per-coordinate standard deviations), so one default
fits data of any scale: ``sigma = 0.05 w`` is about a third of an 8-Gaussians mode's width and
keeps the heat expansion's ``O(sigma^2)`` bias small on every 2-D set. ``sigma_unit:
absolute`` takes it in the data's units. The posterior route's Langevin step is
``posterior_step`` times ``sigma^2`` (0.1 by default), below the posterior's width squared at
any scale. ``sigma`` fixed, or with ``sigma_max`` a VE schedule ``sigma_t = sigma
(sigma_max / sigma)^t``, ``t ~ U(0, 1)`` per data point (Song et al. 2021's VE SDE; taylor
only: the posterior route's step is tied to one ``sigma``). Each point's term is divided by
its ``sigma^2``, so the loss has the scale of score matching at every noise level (and one
learning rate fits any ``sigma``).

Walker-less: nothing persists between updates; on Ray workers each shard estimates on its
part of the minibatch and the trainer sums the shards' gradients (data-parallel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import torch

from raybm.algorithms.base import Batch, Estimate, Estimator
from raybm.algorithms.population import LOCAL, Population
from raybm.data.dataset import Dataset
from raybm.errors import InputError
from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.walkers import WalkerState

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig


class PosteriorEnergy(EnergyModel):
    """The noise-conditioned posterior of ``model`` given noised points ``y`` (one per
    walker): ``E(x) + |y - x|^2 / (2 sigma^2)``, an energy a Langevin kernel moves walkers
    on. Its gradient is the model's plus ``(x - y) / sigma^2``."""

    def __init__(self, model: EnergyModel, y: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.model = model
        self.event_shape = model.event_shape
        self.y = y.detach()
        self.inv_var = 1.0 / (sigma * sigma)

    def spec(self) -> dict:
        return {"kind": type(self).__name__, "model": self.model.spec(),
                "sigma": (1.0 / self.inv_var) ** 0.5}

    @classmethod
    def from_spec(cls, spec: dict) -> "PosteriorEnergy":
        # Built per update around the noised batch; never checkpointed, so never restored.
        raise TypeError("a posterior energy is built from its model and noised points, "
                        "not from a spec")

    def _pull(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.inv_var * (x - self.y).reshape(x.shape[0], -1).square().sum(1)

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.energy(x, cond) + self._pull(x)

    def energy_and_grad(self, x: torch.Tensor, cond: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        e, grad = self.model.energy_and_grad(x, cond)
        return e + self._pull(x), grad + self.inv_var * (x - self.y)


def batch_mean(batch: Batch, values: torch.Tensor) -> torch.Tensor:
    """``sum_b w_b v_b / W``: the mean over the whole minibatch of per-point ``values``
    (``W``: ``batch.total_weight`` when this batch is a shard of it), as ``data_term``
    normalises, so the shards' sums make the global mean."""
    w = None if batch.weight is None else batch.weight.to(values.dtype)
    total = batch.total_weight
    if total is None:
        total = float(batch.size) if w is None else w.sum()
    return (values.sum() if w is None else (w * values).sum()) / total


@dataclass
class DiffusionCD(Estimator):
    """DCD-VE (module docstring): ``k`` posterior steps (route ``posterior``)."""

    k: int
    kernel: Kernel
    population: Population = field(default=LOCAL, repr=False)
    route: str = "taylor"
    sigma: float = 0.1
    sigma_max: float | None = None
    probes: int = 0
    posterior_start: str = "noised"
    # Built by hand, sigma is absolute and the kernel's step is kept; a config's defaults
    # (DCDConfig) are the width unit and a step of 0.1 sigma^2.
    sigma_unit: str = "absolute"
    posterior_step: float | None = None
    # The unit sigma is measured in: the data's width (set by read_data) or 1.
    scale: float | None = None
    phases: tuple[str, ...] = ("joint",)
    name: ClassVar[str] = "dcd_ve"
    info_names: ClassVar[tuple[str, ...]] = ("dcd_sigma",)

    @property
    def samples(self) -> bool:
        return self.route == "posterior"

    @classmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> "DiffusionCD":
        return cls(k=algorithm.k, kernel=kernel, population=population, route=algorithm.route,
                   sigma=algorithm.sigma, sigma_max=algorithm.sigma_max,
                   probes=algorithm.probes, posterior_start=algorithm.posterior_start,
                   sigma_unit=algorithm.sigma_unit, posterior_step=algorithm.posterior_step)

    def read_data(self, data: Dataset) -> None:
        """``sigma_unit: width``: the unit of ``sigma`` is the training data's width."""
        if self.sigma_unit == "width":
            self.scale = data.width()
            if not self.scale > 0:
                raise InputError(data.source, "algorithm.sigma_unit", "width, but the "
                                 "training data has none (every point the same): set "
                                 "absolute")

    def __post_init__(self) -> None:
        if self.sigma_unit not in ("width", "absolute"):
            raise ValueError(f"sigma_unit must be width or absolute, got {self.sigma_unit!r}")
        if self.sigma_unit == "absolute":
            self.scale = 1.0

    @property
    def noise(self) -> float:
        """The noise scale ``sigma`` in the data's units."""
        if self.scale is None:
            raise RuntimeError("sigma is in units of the data's width: read_data first")
        return self.sigma * self.scale

    def posterior_kernel(self) -> Kernel:
        """The kernel of the posterior route: the run's, with the step ``posterior_step
        sigma^2`` when that is set (a Langevin kernel then: ``DCDConfig.check_sampler``)."""
        if self.posterior_step is None:
            return self.kernel
        return replace(self.kernel, step_size=self.posterior_step * self.noise ** 2)

    def noise_scales(self, gen: torch.Generator, n: int) -> torch.Tensor:
        """``(n,)`` the noise scale of each point in the data's units: ``sigma``, or
        ``sigma (sigma_max / sigma)^t`` with ``t ~ U(0, 1)`` from ``gen``."""
        if self.sigma_max is None:
            return torch.full((n,), self.noise)
        t = torch.rand(n, generator=gen)
        return self.noise * (self.sigma_max / self.sigma) ** t

    def perturb(self, gen: torch.Generator, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The noised points ``y = x + sigma eps`` and each point's ``sigma`` ``(n,)``."""
        sigma = self.noise_scales(gen, x.shape[0])
        shape = (-1,) + (1,) * (x.dim() - 1)
        return x + sigma.reshape(shape) * torch.randn(x.shape, generator=gen,
                                                      dtype=x.dtype), sigma

    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        x = batch.x
        y, sigma = self.perturb(gen, x)
        var = sigma.to(x.dtype).square()
        e_x = model.energy(x, batch.condition)
        if self.route == "taylor":
            e_y = model.energy(y, batch.condition)
            score = model.score(y, batch.condition, create_graph=True)
            if self.probes:
                lap = model.hutchinson_laplacian(gen, y, batch.condition, self.probes,
                                                 create_graph=True)
            else:
                lap = model.laplacian(y, batch.condition, create_graph=True)
            sq = score.reshape(x.shape[0], -1).square().sum(1)
            per_point = (e_x - e_y) / var + 0.5 * (sq - lap)
            penalty = e_x.square() + e_y.square()
        else:
            start = y if self.posterior_start == "noised" else x
            posterior = PosteriorEnergy(model, y, self.noise)
            state = WalkerState.unweighted(start.detach(), batch.condition)
            moved, _ = self.posterior_kernel().step(gen, state, posterior, self.k)
            e_neg = model.energy(moved.x.detach(), batch.condition)
            per_point = (e_x - e_neg) / var
            penalty = e_x.square() + e_neg.square()
        if self.energy_penalty:
            per_point = per_point + self.energy_penalty * penalty
        loss = batch_mean(batch, per_point)
        return Estimate(loss, None, {"dcd_sigma": float(sigma.mean())})

"""Test-only training methods, added the way a new method is added: this file plus a
registration (``raybm.algorithms.registry.register``), named by a config's ``plugins:``.

- ``pcd_affine_flow``: PCD on the energy plus a second trained module, an affine "flow" (a
  diagonal Gaussian ``N(mean, exp(2 log_scale))``) fitted by maximum likelihood to the
  walkers, in two phases of its own per energy phase ("two flow steps per energy step") at
  its own rate (``optimizers.flow``).
- ``flow_ula`` (a kernel, ``sampler.name``): ULA whose walkers start as draws of the run's
  ``flow`` module, which its builder is handed (``samplers.registry.register``).
- ``pcd_analytic``: PCD for Bernoulli RBMs without labels whose estimate hands the trainer the
  gradient in closed form instead of a surrogate loss,

      dF/da = -v,  dF/db = -sigma(b + v W),  dF/dW = -v^T sigma(b + v W),

  the data average minus the walkers' (``Estimate.grads``); its twin is plain ``pcd``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from raybm.algorithms.base import Batch, Estimate, Phase
from raybm.algorithms.contrastive import PersistentContrastiveDivergence
from raybm.algorithms.registry import ESTIMATORS, register
from raybm.config import PCDConfig, ULASamplerConfig
from raybm.samplers import registry as kernels
from raybm.samplers.langevin import ULA
from raybm.walkers import WalkerState


class AffineFlow(nn.Module):
    """``log q(x) = sum_d [-(x_d - m_d)^2 / (2 s_d^2) - log s_d - log(2 pi) / 2]``."""

    def __init__(self, dim: int, gen: torch.Generator) -> None:
        super().__init__()
        self.mean = nn.Parameter(0.1 * torch.randn(dim, generator=gen))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.reshape(x.shape[0], -1) - self.mean) * torch.exp(-self.log_scale)
        return (-0.5 * z**2 - self.log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)


class AffineFlowPCDConfig(PCDConfig):
    name: Literal["pcd_affine_flow"] = "pcd_affine_flow"


@dataclass
class AffineFlowPCD(PersistentContrastiveDivergence):
    flow: AffineFlow | None = None
    name: ClassVar[str] = "pcd_affine_flow"
    modules: ClassVar[tuple[str, ...]] = ("flow",)
    info_names: ClassVar[tuple[str, ...]] = ("flow_nll",)
    plots: ClassVar[dict[str, tuple[str, ...]]] = {"flow.png": ("flow_nll", "lr/flow")}
    phases: tuple[Phase, ...] = (Phase("fit", ("flow",)), Phase("fit", ("flow",)),
                                 Phase("joint"))

    @classmethod
    def from_config(cls, algorithm, kernel, seed, population=None):
        from raybm.algorithms.population import LOCAL

        return cls(k=algorithm.k, kernel=kernel, population=population or LOCAL,
                   walker_init=algorithm.walker_init)

    def build_modules(self, gen, model, data) -> dict[str, nn.Module]:
        self.flow = AffineFlow(math.prod(data.event_shape), gen)
        return {"flow": self.flow}

    def estimate(self, gen: torch.Generator, model, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        if phase != "fit":
            return super().estimate(gen, model, batch, walkers, phase)
        # Mean negative log-likelihood of the whole population (this shard's terms of it).
        n = self.population.gather(walkers.log_weight).numel()
        nll = -self.flow.log_prob(walkers.x).sum() / n
        return Estimate(nll, None, {"flow_nll": float(nll.detach())})


class AnalyticPCDConfig(PCDConfig):
    name: Literal["pcd_analytic"] = "pcd_analytic"


@dataclass
class AnalyticPCD(PersistentContrastiveDivergence):
    name: ClassVar[str] = "pcd_analytic"

    @classmethod
    def from_config(cls, algorithm, kernel, seed, population=None):
        from raybm.algorithms.population import LOCAL

        return cls(k=algorithm.k, kernel=kernel, population=population or LOCAL,
                   walker_init=algorithm.walker_init)

    @staticmethod
    def _mean_grads(model, v: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """``sum_b w_b dF(v_b)/dtheta`` for a Bernoulli RBM without labels."""
        v = v.to(model.weight.dtype)
        h = torch.sigmoid(model.hbias + v @ model.weight)
        return {"vbias": -(w @ v), "hbias": -(w @ h), "weight": -(v.T * w) @ h}

    @torch.no_grad()
    def estimate(self, gen: torch.Generator, model, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        walkers, moved = self.kernel.step(gen, walkers, model, self.k)
        dtype = model.weight.dtype
        total = batch.total_weight if batch.total_weight is not None else float(batch.size)
        w_data = (torch.ones(batch.size, dtype=dtype) if batch.weight is None
                  else batch.weight.to(dtype)) / total
        log_w = walkers.log_weight.double()
        log_norm = torch.logsumexp(self.population.gather(log_w), 0)
        w_walk = torch.exp(log_w - log_norm).to(dtype)
        data = self._mean_grads(model, batch.x, w_data)
        neg = self._mean_grads(model, walkers.x, w_walk)
        grads = {k: data[k] - neg[k] for k in data}
        return Estimate(None, walkers, moved.metrics(), grads={"energy": grads})


class FlowULAConfig(ULASamplerConfig):
    name: Literal["flow_ula"] = "flow_ula"


@dataclass(frozen=True)
class FlowStartULA(ULA):
    """ULA whose walkers start as draws of the affine flow (a trained module of the run)."""

    flow: AffineFlow | None = None
    name: ClassVar[str] = "flow_ula"

    @property
    def start(self) -> str:
        return "the run's flow"

    @torch.no_grad()
    def init(self, gen, model, n, label=None, shape=None) -> WalkerState:
        z = torch.randn((n, self.flow.mean.numel()), generator=gen)
        x = self.flow.mean + torch.exp(self.flow.log_scale) * z
        return WalkerState.unweighted(x.reshape(n, *model.event_shape), label)


for _estimator, _section in ((AffineFlowPCD, AffineFlowPCDConfig),
                             (AnalyticPCD, AnalyticPCDConfig)):
    if _estimator.name not in ESTIMATORS:
        register(_estimator, _section)
if "flow_ula" not in kernels.KERNELS:
    kernels.register("flow_ula", FlowULAConfig,
                     # The flow where the run has built it (modules are {} before then).
                     lambda c, model, modules: FlowStartULA(c.step_size,
                                                            flow=modules.get("flow")))

"""Exact draws of models that can be sampled without a Markov chain, with their log Z.

Jarzynski walkers must start as exact draws of the initial model, whose ``log Z_0`` is then
known, so that the running ``log Z_t`` (and the live log-likelihood) is unbiased from the
first update (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414). Which models can be
drawn exactly is declared here, one function per model class (looked up along the class's
MRO), not probed on the model:

- an RBM without couplings (W = 0, D = 0): independent sites and label;
- a diagonal Gaussian; an isotropic Gaussian mixture (component, then Gaussian);
- a neural energy ``net(x) + base_scale |x|^2 / 2`` whose read-out is zero: ``N(0, I /
  base_scale)`` (the trainer builds it so for Jarzynski).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.models.neural import NeuralEnergy
from raybm.models.rbm import RBM, BernoulliRBM
from raybm.samplers.random_bits import categorical_logits
from raybm.walkers import WalkerState

Start = Callable[[torch.Generator, EnergyModel, int], tuple[WalkerState, float]]
BoxedStart = Callable[[torch.Generator, EnergyModel, int, tuple[float, float]],
                      tuple[WalkerState, float]]
_BOXED: dict[type, BoxedStart] = {}
_STARTS: dict[type, Start] = {}


def _register_boxed(cls: type) -> Callable[[BoxedStart], BoxedStart]:
    def wrap(fn: BoxedStart) -> BoxedStart:
        _BOXED[cls] = fn
        return fn
    return wrap


def _register(cls: type) -> Callable[[Start], Start]:
    def wrap(fn: Start) -> Start:
        _STARTS[cls] = fn
        return fn
    return wrap


def exact_start(gen: torch.Generator, model: EnergyModel, n: int,
                box: tuple[float, float] | None = None) -> tuple[WalkerState, float]:
    """``n`` exact, unweighted draws of ``model`` and its ``log Z``, or, with ``box``, of the
    model restricted to that box (the target of a kernel with a box) and its log Z; ValueError
    for a model that cannot be drawn exactly (as it stands, or inside a box)."""
    for cls in type(model).__mro__:
        if box is not None and cls in _BOXED:
            with torch.no_grad():
                return _BOXED[cls](gen, model, n, box)
        if box is None and cls in _STARTS:
            with torch.no_grad():
                return _STARTS[cls](gen, model, n)
    if box is not None:
        raise ValueError(f"{type(model).__name__} cannot be sampled exactly inside the box "
                         f"{box}: Jarzynski walkers with a boxed kernel need a model that can")
    raise ValueError(f"{type(model).__name__} cannot be sampled exactly: Jarzynski walkers "
                     "need an initial model they can be drawn from")


def independent_log_partition(model: RBM) -> float:
    """``log Z`` of an RBM whose couplings (W, D) are zero: a product of site terms."""
    with torch.no_grad():
        if isinstance(model, BernoulliRBM):
            vis = F.softplus(model.vbias.double()).sum()
        else:
            vis = torch.logsumexp(model.vbias.double(), -1).sum()
        out = vis + F.softplus(model.hbias.double()).sum()
        if model.n_labels:
            out = out + torch.logsumexp(model.lbias.double(), 0)
    return float(out)


def sample_independent(gen: torch.Generator, model: RBM, n: int) -> WalkerState:
    """Exact samples of a zero-coupling RBM: independent sites (and label)."""
    with torch.no_grad():
        if isinstance(model, BernoulliRBM):
            p = torch.sigmoid(model.vbias.float()).expand(n, -1)
            x = (torch.rand(p.shape, generator=gen) < p).to(torch.uint8)
        else:
            x = categorical_logits(gen, model.vbias.float().expand(n, -1, -1))
        label = None
        if model.n_labels:
            label = categorical_logits(gen, model.lbias.float().expand(n, -1)).long()
    return WalkerState.unweighted(x, label)


@_register(RBM)
def _rbm(gen: torch.Generator, model: RBM, n: int) -> tuple[WalkerState, float]:
    coupled = [model.weight] + ([model.label_weight] if model.n_labels else [])
    if any(bool(p.detach().abs().max() > 0) for p in coupled):
        raise ValueError("an RBM is drawn exactly only without couplings (weight_std 0)")
    return sample_independent(gen, model, n), independent_log_partition(model)


@_register(GaussianEnergy)
def _gaussian(gen: torch.Generator, model: GaussianEnergy, n: int) -> tuple[WalkerState, float]:
    std = (-0.5 * model.log_precision.detach()).exp()
    x = model.mean.detach() + std * torch.randn((n, *model.event_shape), generator=gen)
    return WalkerState.unweighted(x), model.log_partition()


@_register(GaussianMixtureEnergy)
def _mixture(gen: torch.Generator, model: GaussianMixtureEnergy, n: int
             ) -> tuple[WalkerState, float]:
    component = categorical_logits(gen, model.log_weights.detach().float().expand(n, -1)).long()
    noise = torch.randn((n, *model.event_shape), generator=gen)
    x = model.means.detach()[component] + model.stds().detach()[component].unsqueeze(1) * noise
    return WalkerState.unweighted(x), model.log_partition()


@_register(NeuralEnergy)
def _neural(gen: torch.Generator, model: NeuralEnergy, n: int) -> tuple[WalkerState, float]:
    log_z = model.log_partition()
    if log_z is None:
        raise ValueError("a neural energy is drawn exactly only with its read-out at zero and "
                         "base_scale > 0")
    x = torch.randn((n, *model.event_shape), generator=gen) / model.base_scale**0.5
    return WalkerState.unweighted(x), log_z


@_register_boxed(NeuralEnergy)
def _neural_boxed(gen: torch.Generator, model: NeuralEnergy, n: int,
                  box: tuple[float, float]) -> tuple[WalkerState, float]:
    """``N(0, I / s)`` restricted to ``[low, high]^d``: independent truncated normals drawn by
    the inverse CDF, with

        log Z = d [ log(2 pi / s) / 2 + log(Phi(high sqrt s) - Phi(low sqrt s)) ]."""
    log_z = model.log_partition()
    if log_z is None:
        raise ValueError("a neural energy is drawn exactly only with its read-out at zero and "
                         "base_scale > 0")
    root = model.base_scale**0.5
    lo, hi = (torch.special.ndtr(torch.tensor(v * root, dtype=torch.float64)) for v in box)
    u = torch.rand((n, *model.event_shape), generator=gen, dtype=torch.float64)
    x = torch.special.ndtri(lo + (hi - lo) * u) / root
    x = x.clamp(*box).float()  # rounding at the ends must not leave the box
    d = math.prod(model.event_shape)
    return WalkerState.unweighted(x), log_z + d * math.log(float(hi - lo))

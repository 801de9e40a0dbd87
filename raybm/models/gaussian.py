"""Energies with a closed-form normalisation: a diagonal Gaussian and a mixture of isotropic
Gaussians with trainable means, log-weights and (optionally) widths.

They are the continuous models whose answers are known exactly: samplers are checked against
their moments, and the running log Z of Jarzynski walkers against ``log_partition`` while the
parameters move. The mixture is the student of the Jarzynski research's mode-weight study
(Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414): unit-variance components whose
means and weights are learned, where the weight of each mode is what CD and PCD get wrong.
"""

from __future__ import annotations

from typing import ClassVar

import math

import torch
from torch import nn

from raybm.models.base import EnergyModel


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


class GaussianEnergy(EnergyModel):
    """``E(x) = 1/2 sum_i exp(log_precision_i) (x_i - mean_i)^2``, i.e. ``N(mean, diag(1 /
    exp(log_precision)))`` unnormalised, with

        log Z = sum_i [ log(2 pi) / 2 - log_precision_i / 2 ].
    """

    closed_form_log_z: ClassVar[bool] = True

    def __init__(self, dim: int, mean: torch.Tensor | None = None,
                 log_precision: torch.Tensor | None = None) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"dim must be > 0, got {dim}")
        self.event_shape = (dim,)
        self.mean = nn.Parameter(torch.zeros(dim) if mean is None else mean.clone().float())
        self.log_precision = nn.Parameter(
            torch.zeros(dim) if log_precision is None else log_precision.clone().float())

    def spec(self) -> dict:
        return {"kind": type(self).__name__, "dim": self.event_shape[0]}

    @classmethod
    def from_spec(cls, spec: dict) -> "GaussianEnergy":
        return cls(int(spec["dim"]))

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        d = _flat(x) - self.mean
        return 0.5 * (self.log_precision.exp() * d * d).sum(-1)

    @torch.no_grad()
    def energy_and_grad(self, x: torch.Tensor, cond: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: ``grad E = exp(log_precision) (x - mean)``."""
        scaled = self.log_precision.exp() * (_flat(x) - self.mean)
        return 0.5 * (scaled * (_flat(x) - self.mean)).sum(-1), scaled.view_as(x)

    def laplacian(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                  create_graph: bool = False) -> torch.Tensor:
        """Closed form: ``sum_i exp(log_precision_i)``, the same for every walker."""
        total = self.log_precision.exp().sum().to(x.dtype).expand(x.shape[0])
        return total if create_graph else total.detach()

    @torch.no_grad()
    def log_partition(self) -> float:
        lp = self.log_precision.double()
        return float((0.5 * math.log(2 * math.pi) - 0.5 * lp).sum())


class GaussianMixtureEnergy(EnergyModel):
    """``K`` isotropic Gaussian components with trainable ``means (K, d)`` and ``log_weights
    (K,)``, of one fixed ``std`` or, with ``learn_std``, each of its own trainable width
    ``sigma_k = exp(log_stds_k)`` (started at ``std``):

        E(x) = -log sum_k exp(t_k(x)),
        t_k(x) = log_weight_k - d log(sigma_k / std) - |x - mean_k|^2 / (2 sigma_k^2),
        Z = (2 pi std^2)^(d/2) sum_k exp(log_weight_k),   mode weights = softmax(log_weights).

    The ``-d log(sigma_k / std)`` keeps each component's mass at ``exp(log_weight_k)`` whatever
    its width, so the mode weights stay a softmax (the FlowMC research's mixtures have
    components of unequal widths: Grenioux, Moulines, Gabrié 2023, arXiv 2306.00684, section
    5.1); with equal widths the term is zero and the energy is the fixed-std one.
    """

    closed_form_log_z: ClassVar[bool] = True

    def __init__(self, means: torch.Tensor, log_weights: torch.Tensor | None = None,
                 std: float = 1.0, learn_std: bool = False) -> None:
        super().__init__()
        if means.dim() != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(means.shape)}")
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        k, d = means.shape
        self.event_shape = (d,)
        self.std = float(std)
        self.means = nn.Parameter(means.clone().float())
        self.log_weights = nn.Parameter(
            torch.zeros(k) if log_weights is None else log_weights.clone().float())
        self.learn_std = bool(learn_std)
        # Registered only when learned: a fixed-std mixture's state is what it always was.
        self.log_stds = (nn.Parameter(torch.full((k,), math.log(self.std)))
                         if self.learn_std else None)

    def spec(self) -> dict:
        k, d = self.means.shape
        out = {"kind": type(self).__name__, "n_components": k, "dim": d, "std": self.std}
        return out | ({"learn_std": True} if self.learn_std else {})

    @classmethod
    def from_spec(cls, spec: dict) -> "GaussianMixtureEnergy":
        return cls(torch.zeros(int(spec["n_components"]), int(spec["dim"])),
                   std=float(spec["std"]), learn_std=bool(spec.get("learn_std", False)))

    def stds(self) -> torch.Tensor:
        """``(K,)`` component widths ``sigma_k``."""
        if self.log_stds is None:
            return torch.full(self.log_weights.shape, self.std)
        return self.log_stds.exp()

    def component_log_terms(self, x: torch.Tensor) -> torch.Tensor:
        """``t_k(x)``, shape ``(n, K)``."""
        # Differences, not |x|^2 - 2 x.m + |m|^2: no cancellation far from the origin, and a
        # gradient that is finite where x sits on a mean (cdist's is 0/0 there).
        d2 = (_flat(x).unsqueeze(1) - self.means.to(x.dtype)).square().sum(-1)
        if self.log_stds is None:
            return self.log_weights - d2 / (2 * self.std**2)
        d = self.means.shape[1]
        log_std = self.log_stds.to(x.dtype)
        return (self.log_weights - d * (log_std - math.log(self.std))
                - d2 * torch.exp(-2 * log_std) / 2)

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return -torch.logsumexp(self.component_log_terms(x), -1)

    def _precisions(self, dtype: torch.dtype) -> torch.Tensor:
        """``(K,)`` ``1 / sigma_k^2``."""
        return self.stds().detach().to(dtype).pow(-2)

    @torch.no_grad()
    def energy_and_grad(self, x: torch.Tensor, cond: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: ``grad E = sum_k r_k (x - mean_k) / sigma_k^2`` with the
        responsibilities ``r = softmax_k(t_k)`` (no autograd pass: the Langevin step's cost)."""
        terms = self.component_log_terms(x)
        r = torch.softmax(terms, -1)
        means = self.means.to(x.dtype)
        if self.log_stds is None:
            grad = (_flat(x) - r @ means) / self.std**2
        else:
            rp = r * self._precisions(x.dtype)
            grad = rp.sum(-1, keepdim=True) * _flat(x) - rp @ means
        return -torch.logsumexp(terms, -1), grad.view_as(x)

    def laplacian(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                  create_graph: bool = False) -> torch.Tensor:
        """Closed form: with ``g_k = (x - mean_k) / sigma_k^2`` and the responsibilities ``r``,

            laplacian E = d sum_k r_k / sigma_k^2 - (sum_k r_k |g_k|^2 - |sum_k r_k g_k|^2),

        the trace of ``sum_k r_k I / sigma_k^2`` less that of the covariance of ``g`` under
        ``r``."""
        r = torch.softmax(self.component_log_terms(x), -1)
        precision = (torch.full_like(r[0], self.std**-2) if self.log_stds is None
                     else torch.exp(-2 * self.log_stds.to(x.dtype)))
        g = (_flat(x).unsqueeze(1) - self.means.to(x.dtype)) * precision.unsqueeze(-1)
        mean_g = (r.unsqueeze(-1) * g).sum(1)
        spread = (r * g.square().sum(-1)).sum(-1) - mean_g.square().sum(-1)
        total = self.means.shape[1] * (r * precision).sum(-1) - spread
        return total if create_graph else total.detach()

    @torch.no_grad()
    def log_partition(self) -> float:
        d = self.means.shape[1]
        return float(0.5 * d * math.log(2 * math.pi * self.std**2)
                     + torch.logsumexp(self.log_weights.double(), 0))

    @torch.no_grad()
    def mode_weights(self) -> torch.Tensor:
        return torch.softmax(self.log_weights.double(), 0)

"""Energies with a closed-form normalisation: a diagonal Gaussian and an isotropic Gaussian
mixture with trainable means and log-weights.

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
    """``E(x) = -log sum_k exp(log_weight_k - |x - mean_k|^2 / (2 std^2))``: ``K`` isotropic
    components of fixed ``std`` with trainable ``means (K, d)`` and ``log_weights (K,)``.

        Z = (2 pi std^2)^(d/2) sum_k exp(log_weight_k),
        mode weights = softmax(log_weights).
    """

    closed_form_log_z: ClassVar[bool] = True

    def __init__(self, means: torch.Tensor, log_weights: torch.Tensor | None = None,
                 std: float = 1.0) -> None:
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

    def spec(self) -> dict:
        k, d = self.means.shape
        return {"kind": type(self).__name__, "n_components": k, "dim": d, "std": self.std}

    @classmethod
    def from_spec(cls, spec: dict) -> "GaussianMixtureEnergy":
        return cls(torch.zeros(int(spec["n_components"]), int(spec["dim"])),
                   std=float(spec["std"]))

    def component_log_terms(self, x: torch.Tensor) -> torch.Tensor:
        """``log_weight_k - |x - mean_k|^2 / (2 std^2)``, shape ``(n, K)``."""
        # Differences, not |x|^2 - 2 x.m + |m|^2: no cancellation far from the origin, and a
        # gradient that is finite where x sits on a mean (cdist's is 0/0 there).
        d2 = (_flat(x).unsqueeze(1) - self.means.to(x.dtype)).square().sum(-1)
        return self.log_weights - d2 / (2 * self.std**2)

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return -torch.logsumexp(self.component_log_terms(x), -1)

    @torch.no_grad()
    def energy_and_grad(self, x: torch.Tensor, cond: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: ``grad E = (x - sum_k r_k mean_k) / std^2`` with the responsibilities
        ``r = softmax_k(component terms)`` (no autograd pass: the Langevin step's cost)."""
        terms = self.component_log_terms(x)
        r = torch.softmax(terms, -1)
        grad = (_flat(x) - r @ self.means.to(x.dtype)) / self.std**2
        return -torch.logsumexp(terms, -1), grad.view_as(x)

    def laplacian(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                  create_graph: bool = False) -> torch.Tensor:
        """Closed form: with ``g_k = (x - mean_k) / std^2`` and the responsibilities ``r``,

            laplacian E = d / std^2 - (sum_k r_k |g_k|^2 - |sum_k r_k g_k|^2),

        the trace of ``I / std^2`` less that of the covariance of ``g`` under ``r``."""
        r = torch.softmax(self.component_log_terms(x), -1)
        g = (_flat(x).unsqueeze(1) - self.means.to(x.dtype)) / self.std**2  # (n, K, d)
        mean_g = (r.unsqueeze(-1) * g).sum(1)
        spread = (r * g.square().sum(-1)).sum(-1) - mean_g.square().sum(-1)
        total = self.means.shape[1] / self.std**2 - spread
        return total if create_graph else total.detach()

    @torch.no_grad()
    def log_partition(self) -> float:
        d = self.means.shape[1]
        return float(0.5 * d * math.log(2 * math.pi * self.std**2)
                     + torch.logsumexp(self.log_weights.double(), 0))

    @torch.no_grad()
    def mode_weights(self) -> torch.Tensor:
        return torch.softmax(self.log_weights.double(), 0)

"""Resampling of weighted walkers (pure functions; the distributed layer only moves rows).

The effective sample size of normalised weights ``w_i = exp(lw_i) / sum_j exp(lw_j)`` is
``ESS = 1 / sum_i w_i^2 = (sum e^lw)^2 / sum e^{2 lw}``, reported as a fraction of the walker
count; ``CV^2 = n / ESS - 1`` is the equivalent form Carbone et al. (2023, arXiv 2305.19414)
threshold on. Systematic resampling (one uniform, ``n`` evenly spaced points on the CDF) has
lower variance than multinomial and is the default (Douc, Cappe, Moulines 2005).
"""

from __future__ import annotations

import math

import torch


def log_ess(log_weight: torch.Tensor) -> torch.Tensor:
    """``log ESS = 2 logsumexp(lw) - logsumexp(2 lw)`` (a log count, at most ``log n``)."""
    lw = log_weight.double()
    return 2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)


def ess_fraction(log_weight: torch.Tensor) -> float:
    """ESS / n in (0, 1]."""
    return float(torch.exp(log_ess(log_weight)) / log_weight.numel())


def log_mean_weight(log_weight: torch.Tensor) -> float:
    """``log mean exp(lw)``: the increment of the running log Z estimate."""
    return float(torch.logsumexp(log_weight.double(), 0) - math.log(log_weight.numel()))


def resample(gen: torch.Generator, log_weight: torch.Tensor, n: int,
             method: str = "systematic") -> torch.Tensor:
    """Ancestor indices ``(n,)`` int64 drawn with probabilities ``softmax(log_weight)``."""
    p = torch.softmax(log_weight.double(), 0)
    if method == "multinomial":
        return torch.multinomial(p, n, replacement=True, generator=gen)
    if method != "systematic":
        raise ValueError(f"unknown resampling method {method!r}")
    u = (torch.rand((), generator=gen, dtype=torch.float64) + torch.arange(n, dtype=torch.float64)) / n
    cdf = torch.cumsum(p, 0)
    cdf[-1] = 1.0  # rounding must not leave the last point beyond the CDF
    return torch.searchsorted(cdf, u, right=True).clamp_(max=len(p) - 1)

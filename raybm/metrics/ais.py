"""Annealed importance sampling (AIS) estimate of ``log Z`` for RBMs (Salakhutdinov & Murray 2008).

AIS (Neal 2001) moves a population of chains through a sequence of distributions
``p_0, ..., p_T`` from one whose partition function is known (``p_0``) to the model (``p_T``).
Each chain carries the log-weight

    log w = sum_{t=1}^{T} [ log f_t(x_{t-1}) - log f_{t-1}(x_{t-1}) ],     x_t ~ K_t(x_{t-1}, .)

where ``f_t`` is the unnormalised density of ``p_t`` and ``K_t`` leaves ``p_t`` invariant;
then ``E[w] = Z_T / Z_0`` and ``log Z ~ log Z_0 + log mean_i w_i``.

Intermediate models (Salakhutdinov & Murray 2008, "On the quantitative analysis of deep belief
networks", ICML, eq. 12-14), extended to the F&F label unit (Carbone et al. 2023, arXiv
2307.06797): at inverse temperature ``beta`` every coupling and every hidden / label parameter
is scaled by ``beta`` and the visible bias is mixed with a base bias ``a0``,

    E_beta(v, h, l) = -((1 - beta) a0 + beta a).v - beta (b.h + c_l + v^T W h + D_l.h).

At ``beta = 0`` visibles are independent sites with bias ``a0`` and hiddens and label are
uniform, so ``log Z_0 = sum_i log sum_s e^{a0_{i,s}} + M log 2 + log L``. At ``beta = 1`` it is
the model. The weights use the visible marginal ``f_beta(v) = sum_{h,l} e^{-E_beta}`` (hiddens
and label summed out analytically, which lowers their variance):

    log f_beta(v) = ((1 - beta) a0 + beta a).v
                    + logsumexp_l [ beta c_l + sum_j softplus(beta (b + v W + D_l)_j) ].

Transition ``K_beta``: ``(l, h) ~ p_beta(l | v) p_beta(h | v, l)`` then ``v ~ p_beta(v | h)``,
a two-block Gibbs sweep of ``p_beta(v, h, l)`` (``v`` and ``l`` are independent given ``h``).
The label is drawn from its exact conditional given ``v`` rather than carried over, so the
visibles alone form a Markov chain that leaves ``p_beta(v)`` invariant, which is what the
marginal weights above require.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raybm.metrics.exact import as_float64
from raybm.models.rbm import RBM, BernoulliRBM
from raybm.samplers.random_bits import bernoulli_logits, categorical_logits

# Fractions of the schedule spent on [0, 0.5), [0.5, 0.9) and [0.9, 1] in Salakhutdinov &
# Murray (2008): 500, 4000 and 10000 temperatures. Most of the change of an RBM's distribution
# happens near beta = 1, where the couplings dominate the base biases.
_SM_BREAKS = (0.0, 0.5, 0.9, 1.0)
_SM_COUNTS = (500, 4000, 10000)


@dataclass(frozen=True)
class AISResult:
    """Outcome of one AIS run.

    log_z:       ``log mean_i exp(log_weights_i)``, the AIS estimate of ``log Z``. Biased low
                 by about ``stderr^2 / 2`` (Jensen), negligible when ``stderr`` is small.
    stderr:      delta-method standard error of ``log_z``: ``sd(w) / (sqrt(n) mean(w))``.
    log_weights: ``(n_chains,)`` float64 per-chain log-weights, ``log Z_0`` included, so that
                 each is an (unbiased in ``exp``) one-chain estimate of ``log Z``.
    """

    log_z: float
    stderr: float
    log_weights: torch.Tensor


def beta_schedule(n_betas: int) -> torch.Tensor:
    """``n_betas`` inverse temperatures from 0 to 1 (float64), piecewise linear with the
    proportions of Salakhutdinov & Murray (2008): ~3% on ``[0, 0.5)``, ~28% on ``[0.5, 0.9)``,
    ~69% on ``[0.9, 1]``. Short schedules (< 30) are plain linear."""
    if n_betas < 2:
        raise ValueError(f"need n_betas >= 2, got {n_betas}")
    if n_betas < 30:
        return torch.linspace(0.0, 1.0, n_betas, dtype=torch.float64)
    total = sum(_SM_COUNTS)
    n1 = max(1, round(n_betas * _SM_COUNTS[0] / total))
    n2 = max(1, round(n_betas * _SM_COUNTS[1] / total))
    n3 = n_betas - n1 - n2
    b = _SM_BREAKS
    return torch.cat([
        torch.linspace(b[0], b[1], n1 + 1, dtype=torch.float64)[:-1],
        torch.linspace(b[1], b[2], n2 + 1, dtype=torch.float64)[:-1],
        torch.linspace(b[2], b[3], n3, dtype=torch.float64),
    ])


def log_mean_exp_stderr(log_w: torch.Tensor) -> tuple[float, float]:
    """``(log mean exp(log_w), delta-method standard error of it)``.

    With ``w = exp(log_w)``: ``Var(log mean w) ~ Var(w) / (n mean(w)^2)`` (first-order Taylor
    expansion of the log around the mean). Computed on ``w / max(w)`` so nothing overflows.
    """
    log_w = log_w.to(torch.float64)
    n = log_w.numel()
    shift = log_w.max()
    w = torch.exp(log_w - shift)
    mean = w.mean()
    log_z = float(shift + torch.log(mean))
    if n < 2:
        return log_z, math.nan
    return log_z, float(w.std(unbiased=True) / (math.sqrt(n) * mean))


@torch.no_grad()
def ais_log_partition(
    gen: torch.Generator,
    model: RBM,
    n_chains: int = 500,
    n_betas: int | Sequence[float] | torch.Tensor = 10000,
    base_vbias: torch.Tensor | None = None,
) -> AISResult:
    """AIS estimate of the model's ``log Z`` (labels summed), see the module docstring.

    gen:        random generator (every draw comes from it).
    model:      a Bernoulli or Potts RBM, with or without label unit; copied to float64.
    n_chains:   number of independent annealing chains.
    n_betas:    number of inverse temperatures (:func:`beta_schedule`), or the schedule itself:
                a non-decreasing sequence from exactly 0 to exactly 1.
    base_vbias: visible bias ``a0`` of the independent-site base model, shaped like
                ``model.vbias``; default the model's own ``vbias``. A base fitted to the data
                (e.g. ``logit`` of the site frequencies) usually gives lower variance.
    """
    if n_chains < 1:
        raise ValueError(f"need n_chains >= 1, got {n_chains}")
    betas = _as_schedule(n_betas)
    m = as_float64(model)
    bernoulli = isinstance(m, BernoulliRBM)
    a = m.vbias
    a0 = a.clone() if base_vbias is None else base_vbias.detach().to(torch.float64)
    if a0.shape != a.shape:
        raise ValueError(f"base_vbias has shape {tuple(a0.shape)}, model.vbias {tuple(a.shape)}")
    delta_a = a - a0
    mixes = bool(delta_a.any())  # with the default base the visible term never changes

    log_z0 = (F.softplus(a0).sum() if bernoulli else torch.logsumexp(a0, -1).sum()).item()
    log_z0 += m.n_hidden * math.log(2.0) + (math.log(m.n_labels) if m.n_labels else 0.0)

    n, shape = n_chains, (n_chains,) + tuple(a0.shape)
    draw = bernoulli_logits if bernoulli else categorical_logits
    x = draw(gen, a0.expand(shape))  # x_0 ~ p_0: independent sites
    log_w = torch.full((n,), log_z0, dtype=torch.float64)
    for t in range(1, len(betas)):
        beta_prev, beta = float(betas[t - 1]), float(betas[t])
        u = m.visible_to_hidden(x) + m.hbias  # (n, M): beta-independent part of the hidden field
        g = _hidden_label_term(m, u, beta)
        if mixes:
            log_w += (beta - beta_prev) * _site_term(m, delta_a, x)
        log_w += torch.logsumexp(g, -1) - torch.logsumexp(_hidden_label_term(m, u, beta_prev), -1)
        if t < len(betas) - 1:  # the last transition would not change any weight
            x = _transition(gen, m, x, u, g, beta, a0)
    log_z, stderr = log_mean_exp_stderr(log_w)
    return AISResult(log_z=log_z, stderr=stderr, log_weights=log_w)


def _as_schedule(n_betas: int | Sequence[float] | torch.Tensor) -> torch.Tensor:
    if isinstance(n_betas, numbers.Integral):
        return beta_schedule(int(n_betas))
    betas = torch.as_tensor(n_betas, dtype=torch.float64).flatten()
    if betas.numel() < 2 or betas[0] != 0.0 or betas[-1] != 1.0 or (betas.diff() < 0).any():
        raise ValueError("a beta schedule must be non-decreasing from exactly 0 to exactly 1")
    return betas


def _site_term(m: RBM, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``bias.x`` per chain (``sum_i bias_{i, x_i}`` for Potts), float64 ``(n,)``."""
    if isinstance(m, BernoulliRBM):
        return x.to(torch.float64) @ bias
    return m.one_hot(x, torch.float64) @ bias.reshape(-1)


def _hidden_label_term(m: RBM, u: torch.Tensor, beta: float) -> torch.Tensor:
    """``beta c_l + sum_j softplus(beta (u + D_l)_j)``: ``(n, L)``, or ``(n, 1)`` without labels.

    Its logsumexp over labels is ``log f_beta(v)`` less the visible term; its softmax over labels
    is ``p_beta(l | v)`` (the visible term does not depend on ``l``).
    """
    if not m.n_labels:
        return F.softplus(beta * u).sum(-1, keepdim=True)
    return beta * m.lbias + F.softplus(beta * (u.unsqueeze(1) + m.label_weight)).sum(-1)


def _transition(
    gen: torch.Generator, m: RBM, x: torch.Tensor, u: torch.Tensor, g: torch.Tensor,
    beta: float, a0: torch.Tensor,
) -> torch.Tensor:
    """One sweep of ``K_beta``: ``(l, h) ~ p_beta(l, h | v)``, then ``v ~ p_beta(v | h)``."""
    field = u
    if m.n_labels:
        label = categorical_logits(gen, g).long()
        field = u + m.label_weight[label]
    h = bernoulli_logits(gen, beta * field)
    # (1 - beta) a0 + beta (a + W h) = a0 + beta (visible_field(h) - a0)
    logits = a0 + beta * (m.visible_field(h) - a0)
    if isinstance(m, BernoulliRBM):
        return bernoulli_logits(gen, logits)
    return categorical_logits(gen, logits)

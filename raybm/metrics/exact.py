"""Exact partition function and log-likelihood of small RBMs by enumeration.

Summing out one layer analytically and enumerating the other gives ``log Z`` exactly:

    enumerate h (and l):  log Z = logsumexp_{h,l} [ b.h + c_l + D_l.h + sum_i log sum_{v_i} e^{v_i (a_i + W_i h)} ]
    enumerate v (binary): log Z = logsumexp_v [ -F(v) ]

raybm enumerates the smaller side (up to ``MAX_ENUMERATED`` binary units, 2^20 states), in
float64 so the reference is not limited by rounding.
"""

from __future__ import annotations

import copy

import torch

from raybm.models.rbm import RBM, BernoulliRBM

MAX_ENUMERATED = 20


def all_binary_states(n: int) -> torch.Tensor:
    """Every state of ``n`` binary units, ``(2^n, n)`` uint8, in counting order (unit 0 = LSB)."""
    codes = torch.arange(2**n, dtype=torch.int64)
    return ((codes.unsqueeze(1) >> torch.arange(n)) & 1).to(torch.uint8)


def as_float64(model: RBM) -> RBM:
    """A float64 copy of ``model`` for reference computations."""
    return copy.deepcopy(model).double()


@torch.no_grad()
def log_partition(model: RBM, chunk: int = 1 << 14) -> float:
    """Exact ``log Z`` of ``model`` (labels summed), enumerating the smaller binary layer."""
    m = as_float64(model)
    visible_states = m.n_states ** m.n_visible if isinstance(m, BernoulliRBM) else None
    if isinstance(m, BernoulliRBM) and m.n_visible <= m.n_hidden:
        if m.n_visible > MAX_ENUMERATED:
            raise ValueError(f"cannot enumerate 2^{m.n_visible} visible states")
        return _logsumexp_chunks(lambda s: -m.free_energy(s), all_binary_states(m.n_visible), chunk)
    if m.n_hidden > MAX_ENUMERATED:
        raise ValueError(
            f"cannot enumerate 2^{m.n_hidden} hidden states (visible side: {visible_states})"
        )
    return _logsumexp_chunks(lambda h: _neg_hidden_free_energy(m, h), all_binary_states(m.n_hidden), chunk)


def _neg_hidden_free_energy(m: RBM, h: torch.Tensor) -> torch.Tensor:
    """``log sum_{v,l} exp(-E(v,h,l))`` per hidden state ``h``."""
    hd = h.to(torch.float64)
    field = m.visible_field(hd)  # (n, N) or (n, N, q)
    if isinstance(m, BernoulliRBM):
        vis = torch.nn.functional.softplus(field).sum(-1)
    else:
        vis = torch.logsumexp(field, dim=-1).sum(-1)
    out = hd @ m.hbias + vis
    if m.n_labels:
        out = out + torch.logsumexp(m.label_field(hd), dim=-1)
    return out


def _logsumexp_chunks(fn, states: torch.Tensor, chunk: int) -> float:
    parts = [torch.logsumexp(fn(states[i : i + chunk]), dim=0) for i in range(0, len(states), chunk)]
    return float(torch.logsumexp(torch.stack(parts), dim=0))


@torch.no_grad()
def log_likelihood(
    model: RBM, x: torch.Tensor, label: torch.Tensor | None = None, log_z: float | None = None
) -> torch.Tensor:
    """Exact ``log p(v)`` (or ``log p(v, l)`` when ``label`` is given) per sample, float64."""
    m = as_float64(model)
    if log_z is None:
        log_z = log_partition(m)
    return -m.free_energy(x, label) - log_z


@torch.no_grad()
def visible_distribution(model: RBM) -> torch.Tensor:
    """Exact ``p(v)`` over :func:`all_binary_states` (Bernoulli RBMs, labels summed)."""
    m = as_float64(model)
    if not isinstance(m, BernoulliRBM) or m.n_visible > MAX_ENUMERATED:
        raise ValueError("visible_distribution enumerates binary visibles (N <= 20) only")
    logp = -m.free_energy(all_binary_states(m.n_visible))
    return torch.softmax(logp, dim=0)

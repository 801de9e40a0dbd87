"""Brute-force references for tiny RBMs: every (v, h, l) configuration and its energy."""

from __future__ import annotations

import itertools

import torch

from raybm.metrics.exact import all_binary_states, as_float64
from raybm.models.rbm import RBM, BernoulliRBM, PottsRBM


def all_visible_states(model: RBM) -> torch.Tensor:
    if isinstance(model, BernoulliRBM):
        return all_binary_states(model.n_visible)
    states = itertools.product(range(model.n_states), repeat=model.n_visible)
    return torch.tensor(list(states), dtype=torch.uint8)


def joint_table(model: RBM):
    """``(v, h, l, log p(v,h,l))`` over every configuration, by the energy alone (float64)."""
    m = as_float64(model)
    vs, hs = all_visible_states(m), all_binary_states(m.n_hidden)
    labels = torch.arange(max(m.n_labels, 1))
    vi, hi, li = torch.meshgrid(torch.arange(len(vs)), torch.arange(len(hs)), labels,
                                indexing="ij")
    vi, hi, li = vi.reshape(-1), hi.reshape(-1), li.reshape(-1)
    with torch.no_grad():
        e = m.joint_energy(vs[vi], hs[hi], li if m.n_labels else None)
    logp = -e - torch.logsumexp(-e, 0)
    return vi, hi, li, logp, vs, hs


def random_model(kind: str, gen: torch.Generator, n_labels: int, scale: float = 1.0) -> RBM:
    """Coprime sizes so that a transposed axis cannot pass unnoticed."""
    if kind == "bernoulli":
        model: RBM = BernoulliRBM(5, 3, n_labels)
    else:
        model = PottsRBM(4, 3, 5, n_labels)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def visible_distribution(model: RBM, label: int | None = None) -> torch.Tensor:
    """Exact ``p(v)`` (or ``p(v | l)``) over :func:`all_visible_states`, from the joint table."""
    vi, hi, li, logp, vs, _ = joint_table(model)
    keep = torch.ones_like(logp, dtype=torch.bool) if label is None else li == label
    p = torch.zeros(len(vs), dtype=torch.float64).index_add_(0, vi[keep], logp[keep].exp())
    return p / p.sum()


def state_index(model: RBM, x: torch.Tensor) -> torch.Tensor:
    """The index of each row of ``x`` in :func:`all_visible_states`."""
    base = model.n_states
    if isinstance(model, PottsRBM):
        weights = base ** torch.arange(model.n_visible - 1, -1, -1)
    else:
        weights = 2 ** torch.arange(model.n_visible)
    return (x.long() * weights).sum(-1)


def hidden_given(model: RBM, v: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """``p(h | v, l)`` over every hidden state, ``(len(v), 2^M)`` (float64)."""
    hs = all_binary_states(model.n_hidden).double()
    with torch.no_grad():
        field = model.hidden_field(v, label)  # (n, M)
    logp = field @ hs.T - torch.nn.functional.softplus(field).sum(-1, keepdim=True)
    return logp.exp()


def visible_given_hidden(model: RBM) -> torch.Tensor:
    """``p(v | h)`` for every hidden state and visible state, ``(2^M, #v)`` (float64)."""
    hs = all_binary_states(model.n_hidden)
    vs = all_visible_states(model)
    with torch.no_grad():
        field = model.visible_field(hs.double())
        if isinstance(model, BernoulliRBM):
            logp = vs.double() @ field.T - torch.nn.functional.softplus(field).sum(-1)
            return logp.T.exp()
        logq = torch.log_softmax(field, -1)  # (H, N, q)
        idx = vs.long()  # (V, N)
        return sum(logq[:, i, idx[:, i]] for i in range(model.n_visible)).exp()  # (H, V)


def label_given_hidden(model: RBM) -> torch.Tensor:
    """``p(l | h)``, ``(2^M, L)``."""
    hs = all_binary_states(model.n_hidden).double()
    with torch.no_grad():
        return model.label_prob(hs)


def transition_matrix(model: RBM, clamp: str | None = None, fixed: int | None = None):
    """One Gibbs sweep as a matrix over the sampled part of the state.

    clamp=None:        over (v, l) pairs (index v * L + l), or v alone without labels;
    clamp="label":     over v with the label fixed to ``fixed``;
    clamp="visible":   over l with the visible state index fixed to ``fixed``.
    """
    vs = all_visible_states(model)
    nv, nl = len(vs), max(model.n_labels, 1)
    pvh = visible_given_hidden(model)  # (H, V)
    if clamp == "visible":
        v = vs[fixed : fixed + 1].repeat(nl, 1)
        ph = hidden_given(model, v, torch.arange(nl))
        return ph @ label_given_hidden(model)
    if clamp == "label" or not model.n_labels:
        lab = torch.full((nv,), fixed) if model.n_labels else None
        return hidden_given(model, vs, lab) @ pvh
    vi, li = torch.meshgrid(torch.arange(nv), torch.arange(nl), indexing="ij")
    ph = hidden_given(model, vs[vi.reshape(-1)], li.reshape(-1))  # (V*L, H)
    plh = label_given_hidden(model)  # (H, L)
    back = (pvh.unsqueeze(2) * plh.unsqueeze(1)).reshape(pvh.shape[0], nv * nl)
    return ph @ back

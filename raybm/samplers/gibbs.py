"""Block Gibbs kernel for RBMs with an optional label unit.

Given the hiddens, the visibles and the label are conditionally independent, so one sweep is
two blocks: ``h ~ p(h | v, l)`` then ``(v, l) ~ p(v | h) p(l | h)`` (Hinton 2002; with the
label unit as in Carbone et al. 2023, arXiv 2307.06797). Either of ``v`` and ``l`` can be
clamped: clamping ``l`` generates a class, clamping ``v`` samples labels for classification.

Kernel contract: ``init_* (gen, model, ...) -> WalkerState`` and
``step(gen, state, model, k, ...) -> (WalkerState, info)``; the model is passed in on every
call and the state holds only walkers, so the same state can be moved under new parameters.
"""

from __future__ import annotations

import torch

from raybm.models.rbm import RBM, BernoulliRBM
from raybm.samplers.random_bits import bernoulli_logits, categorical_logits
from raybm.walkers import WalkerState

PRECISIONS = ("fp32", "bf16")


def init_uniform(
    gen: torch.Generator, model: RBM, n: int, label: torch.Tensor | None = None
) -> WalkerState:
    """``n`` walkers from the uniform distribution over visibles (and over labels unless given)."""
    if model.n_states == 2:
        x = (torch.randint(0, 2, (n, model.n_visible), generator=gen)).to(torch.uint8)
    else:
        x = torch.randint(0, model.n_states, (n, model.n_visible), generator=gen).to(torch.uint8)
    if model.n_labels and label is None:
        label = torch.randint(0, model.n_labels, (n,), generator=gen)
    return WalkerState.unweighted(x, label if model.n_labels else None)


def sample_hidden(
    gen: torch.Generator, model: RBM, v: torch.Tensor, label: torch.Tensor | None,
    precision: str = "fp32",
) -> torch.Tensor:
    """``h ~ p(h | v, l)`` as uint8."""
    fast = precision == "bf16"
    field = model.hidden_field(v, label, dtype=torch.bfloat16 if fast else None)
    return bernoulli_logits(gen, field, fast=fast)


def sample_visible(
    gen: torch.Generator, model: RBM, h: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """``v ~ p(v | h)`` as uint8."""
    fast = precision == "bf16"
    field = model.visible_field(h, dtype=torch.bfloat16 if fast else None)
    if isinstance(model, BernoulliRBM):
        return bernoulli_logits(gen, field, fast=fast)
    return categorical_logits(gen, field)


def sample_label(gen: torch.Generator, model: RBM, h: torch.Tensor) -> torch.Tensor:
    """``l ~ p(l | h)`` as int64."""
    return categorical_logits(gen, model.label_field(h)).long()


@torch.no_grad()
def step(
    gen: torch.Generator,
    state: WalkerState,
    model: RBM,
    k: int,
    clamp_label: bool = False,
    clamp_visible: bool = False,
    precision: str = "fp32",
) -> tuple[WalkerState, dict]:
    """``k`` block-Gibbs sweeps; the log-weights are carried unchanged (the kernel leaves the
    current model's distribution invariant, so it does no work on the weights)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if clamp_visible and (clamp_label or not model.n_labels):
        raise ValueError("clamp_visible samples labels only: needs a label unit and free labels")
    x, label = state.x, state.label
    for _ in range(k):
        h = sample_hidden(gen, model, x, label, precision)
        if not clamp_visible:
            x = sample_visible(gen, model, h, precision)
        if model.n_labels and not clamp_label:
            label = sample_label(gen, model, h)
    return state.replace(x=x, label=label), {}

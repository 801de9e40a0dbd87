"""Block Gibbs kernel for RBMs with an optional label unit.

Given the hiddens, the visibles and the label are conditionally independent, so one sweep is
two blocks: ``h ~ p(h | v, l)`` then ``(v, l) ~ p(v | h) p(l | h)`` (Hinton 2002; with the
label unit as in Carbone et al. 2023, arXiv 2307.06797). Either of ``v`` and ``l`` can be
clamped: clamping ``l`` generates a class, clamping ``v`` samples labels for classification.

Two precisions:

- ``"fp32"`` (the reference): fields in the model's dtype (bias fused into ``addmm``),
  ``[u < sigmoid(z)]`` with ``torch.rand`` uniforms, inverse-CDF categorical draws.
- ``"bf16"`` (fast): bf16 matmuls on a bf16 copy of the float32 master weights, made once per
  parameter change (``prepared``), biases added in float32, and the Bernoulli draw
  ``[u16 2^-16 + 1/2 < sigmoid(z)]`` on 16-bit uniforms cut from the int64 stream (``random_bits``,
  bias < 2^-16 per unit), fused into one loop when ``torch.compile`` is on (``fused``). The
  quantities that differ from the reference are the bf16 roundings of the couplings and of the
  matmul output (relative 2^-9 of the field).

Inside :func:`step`, walkers stay in the layout the next matmul reads (0/1 in the matmul dtype
with the label one-hot appended, or gather indices for Potts) and become uint8 once, at the
end: no per-sweep casts.

Kernel contract: ``init_* (gen, model, ...) -> WalkerState`` and
``step(gen, state, model, k, ...) -> (WalkerState, info)``; the model is passed in on every
call and the state holds only walkers, so the same state can be moved under new parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raybm.models.rbm import RBM
from raybm.samplers.fused import bernoulli_field, categorical_field
from raybm.samplers.prepared import GibbsParams, prepare
from raybm.samplers.random_bits import categorical_index, categorical_logits, uniform16_pairs
from raybm.walkers import WalkerState

PRECISIONS = ("fp32", "bf16")


def init_uniform(
    gen: torch.Generator, model: RBM, n: int, label: torch.Tensor | None = None
) -> WalkerState:
    """``n`` walkers from the uniform distribution over visibles (and over labels unless given)."""
    x = torch.randint(0, model.n_states, (n, model.n_visible), generator=gen, device=gen.device)
    x = x.to(torch.uint8)
    if model.n_labels and label is None:
        label = torch.randint(0, model.n_labels, (n,), generator=gen, device=gen.device)
    return WalkerState.unweighted(x, label if model.n_labels else None)


# ------------------------------------------------------------------------- walker layout
def _encode(p: GibbsParams, x: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
    """uint8 walkers -> the hidden step's input: ``[v | onehot(l)]`` in the matmul dtype
    (Bernoulli), or the rows of ``p.up`` to sum (Potts). No label: a zero block / zero row."""
    n = x.shape[0]
    if p.potts:
        idx = x.long() + p.offsets
        if not p.n_labels:
            return idx
        lab = torch.full((n, 1), p.n_in + p.n_labels, dtype=torch.int64, device=x.device)
        if label is not None:
            lab[:, 0] = label + p.n_in
        return torch.cat([idx, lab], 1)
    buf = torch.empty(n, p.n_in + p.n_labels, dtype=p.matmul_dtype, device=x.device)
    buf[:, : p.n_in].copy_(x)
    if p.n_labels:
        buf[:, p.n_in :].zero_()
        if label is not None:
            buf[:, p.n_in :].scatter_(1, label.view(-1, 1), 1.0)
    return buf


def _decode(p: GibbsParams, buf: torch.Tensor) -> torch.Tensor:
    """The visible part of the layout back to uint8 walkers."""
    if p.potts:
        return (buf[:, : p.n_visible] - p.offsets).to(torch.uint8)
    return buf[:, : p.n_in].to(torch.uint8)


def _put_label(p: GibbsParams, buf: torch.Tensor, label: torch.Tensor) -> None:
    if p.potts:
        buf[:, p.n_visible] = label + p.n_in
    else:
        buf[:, p.n_in :].zero_().scatter_(1, label.view(-1, 1), 1.0)


# ------------------------------------------------------------------------- half-steps
def _bernoulli_exact(
    gen: torch.Generator, z: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``[u < sigmoid(z)]`` as 0/1 in ``z``'s dtype, in ``out`` or a new tensor. ``z`` is a
    temporary and is overwritten; the uniforms are drawn in place in the result's storage."""
    prob = z.sigmoid_()
    u = torch.empty_like(prob) if out is None else out
    return u.uniform_(generator=gen).lt_(prob)


def _hidden(gen: torch.Generator, p: GibbsParams, buf: torch.Tensor) -> torch.Tensor:
    """``h ~ p(h | v, l)`` as 0/1 in the matmul dtype, ``(n, M)``."""
    if p.potts:
        field = F.embedding_bag(buf, p.up, mode="sum")  # sum_i W[i, v_i] (+ D_l), float
        if p.fast:
            return bernoulli_field(field, p.hbias, uniform16_pairs(gen, *field.shape))
        return _bernoulli_exact(gen, field.add_(p.hbias))
    if p.fast:
        y = buf @ p.up  # v W + D_l, bf16
        return bernoulli_field(y, p.hbias, uniform16_pairs(gen, *y.shape))
    return _bernoulli_exact(gen, torch.addmm(p.hbias, buf, p.up))


def _visible(
    gen: torch.Generator,
    p: GibbsParams,
    h: torch.Tensor,
    buf: torch.Tensor,
    sample_x: bool,
    sample_label: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(v, l) ~ p(v | h) p(l | h)`` for the parts asked for, written into the layout ``buf``
    (or a new one); returns it and the new labels (None when not sampled)."""
    nv, n = p.n_in, h.shape[0]
    first = 0 if sample_x else nv  # clamped visibles: only the label columns are needed
    down, bias = p.down[:, first:], p.vlbias[first:]
    if p.fast:
        field = h @ down  # bf16, biases added in float32 below
    else:
        field = torch.addmm(bias, h, down)
    if sample_x:
        if p.potts:
            if p.fast:
                u = torch.rand(n, p.n_visible, generator=gen, device=h.device)
                state = categorical_field(field[:, :nv], bias[:nv], u)
            else:
                state = categorical_index(gen, field[:, :nv].view(n, p.n_visible, p.n_states))
            torch.add(state, p.offsets, out=buf[:, : p.n_visible])
        elif p.fast:
            words = uniform16_pairs(gen, n, nv)
            if p.n_labels:
                bernoulli_field(field[:, :nv], bias[:nv], words, out=buf[:, :nv])
            else:
                buf = bernoulli_field(field, bias, words)
        elif p.n_labels:
            _bernoulli_exact(gen, field[:, :nv], out=buf[:, :nv])
        else:
            buf = _bernoulli_exact(gen, field)
    label = None
    if sample_label:
        logits = field[:, nv - first :]
        if p.fast:
            logits = torch.add(logits, bias[nv - first :])
        label = categorical_index(gen, logits)
        _put_label(p, buf, label)
    return buf, label


# ------------------------------------------------------------------------- public kernels
def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


@torch.no_grad()
def sample_hidden(
    gen: torch.Generator, model: RBM, v: torch.Tensor, label: torch.Tensor | None,
    precision: str = "fp32",
) -> torch.Tensor:
    """``h ~ p(h | v, l)`` as uint8 (with ``label=None``, the label coupling is left out)."""
    _check_precision(precision)
    p = prepare(model, precision)
    return _hidden(gen, p, _encode(p, v, label)).to(torch.uint8)


@torch.no_grad()
def sample_visible(
    gen: torch.Generator, model: RBM, h: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """``v ~ p(v | h)`` as uint8."""
    _check_precision(precision)
    p = prepare(model, precision)
    n = h.shape[0]
    buf = _encode(p, torch.zeros(n, p.n_visible, dtype=torch.uint8, device=h.device), None)
    buf, _ = _visible(gen, p, h.to(p.matmul_dtype), buf, sample_x=True, sample_label=False)
    return _decode(p, buf)


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
    _check_precision(precision)
    if clamp_visible and (clamp_label or not model.n_labels):
        raise ValueError("clamp_visible samples labels only: needs a label unit and free labels")
    if k <= 0:
        return state.replace(), {}
    p = prepare(model, precision)
    label = state.label
    sample_label = bool(model.n_labels) and not clamp_label
    buf = _encode(p, state.x, label)
    for _ in range(k):
        h = _hidden(gen, p, buf)
        buf, new_label = _visible(gen, p, h, buf, not clamp_visible, sample_label)
        if new_label is not None:
            label = new_label
    x = state.x if clamp_visible else _decode(p, buf)
    return state.replace(x=x, label=label), {}

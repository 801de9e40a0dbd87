"""Synthetic binary data with exactly known distributions, for testing training algorithms.

Prototype mixture (mode weights are the quantity CD/PCD get wrong and Jarzynski / flow-assisted
training should recover)::

    p(x) = sum_k w_k  f^{d_k(x)} (1 - f)^{n - d_k(x)},   d_k(x) = Hamming distance to prototype k

Teacher RBM (small enough to enumerate), energy ``E(v, h) = -a.v - b.h - v^T W h`` with
``v in {0,1}^n_visible``, ``h in {0,1}^n_hidden``; summing out ``h``::

    log p(v) = a.v + sum_j softplus(b_j + (v W)_j) - log Z

``log Z`` is a logsumexp over all ``2^n_visible`` states, done in float64 (the terms span many
orders of magnitude). State ``s`` of the enumeration is the bit pattern of ``s``: ``v_i`` is
bit ``i`` (least significant first), so :func:`state_index` inverts it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raybm.data.dataset import Dataset
from raybm.errors import InputError

MAX_ENUMERATED_VISIBLE = 20
_CHUNK = 1 << 16  # states per chunk when enumerating, to bound memory at n_visible = 20


# --------------------------------------------------------------------------- prototype mixture


def bimodal_prototypes(n_visible: int) -> torch.Tensor:
    """Two complementary prototypes ``(2, n_visible)`` uint8: the first ``n_visible // 2``
    units on, the rest off; and its complement."""
    if n_visible < 2:
        raise InputError("bimodal_prototypes", "n_visible", f"{n_visible} < 2")
    first = torch.zeros(n_visible, dtype=torch.uint8)
    first[: n_visible // 2] = 1
    return torch.stack([first, 1 - first])


def _check_mixture(prototypes: torch.Tensor, weights: torch.Tensor, flip_prob: float) -> torch.Tensor:
    """Validate the mixture parameters; return the normalised float64 weights."""
    where = "prototype_mixture"
    if prototypes.dim() != 2 or prototypes.shape[0] == 0:
        raise InputError(where, "prototypes", f"expected (k, n_visible), got {tuple(prototypes.shape)}")
    if ((prototypes != 0) & (prototypes != 1)).any():
        raise InputError(where, "prototypes", "values must be 0 or 1")
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (prototypes.shape[0],):
        raise InputError(where, "weights", f"shape {tuple(w.shape)}, expected ({prototypes.shape[0]},)")
    if not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise InputError(where, "weights", "must be non-negative, finite and not all zero")
    if not 0.0 <= flip_prob <= 1.0:
        raise InputError(where, "flip_prob", f"{flip_prob} is outside [0, 1]")
    return w / w.sum()


def prototype_mixture(
    gen: torch.Generator,
    n_samples: int,
    prototypes: torch.Tensor,
    weights: torch.Tensor,
    flip_prob: float,
) -> Dataset:
    """``n_samples`` draws: pick component ``k ~ weights``, copy prototype ``k``, flip each bit
    independently with probability ``flip_prob``. ``labels`` are the components."""
    prototypes = torch.as_tensor(prototypes).to(torch.uint8)
    w = _check_mixture(prototypes, weights, flip_prob)
    if n_samples < 1:
        raise InputError("prototype_mixture", "n_samples", f"{n_samples} < 1")
    component = torch.multinomial(w, n_samples, replacement=True, generator=gen)
    flips = torch.rand(n_samples, prototypes.shape[1], generator=gen) < flip_prob
    x = prototypes[component] ^ flips.to(torch.uint8)
    return Dataset(
        x=x,
        n_states=2,
        labels=component,
        label_names=[str(k) for k in range(prototypes.shape[0])],
        source="synthetic:prototype_mixture",
        info={"format": "synthetic", "flip_prob": flip_prob, "weights": w.tolist()},
    )


def prototype_mixture_logprob(
    x: torch.Tensor, prototypes: torch.Tensor, weights: torch.Tensor, flip_prob: float
) -> torch.Tensor:
    """Exact ``log p(x)`` ``(n,)`` float64 of the mixture (``flip_prob`` 0 or 1 allowed)."""
    prototypes = torch.as_tensor(prototypes).to(torch.uint8)
    w = _check_mixture(prototypes, weights, flip_prob)
    n_visible = prototypes.shape[1]
    dist = (x.to(torch.uint8)[:, None, :] != prototypes[None, :, :]).sum(-1).to(torch.float64)
    f = torch.tensor(flip_prob, dtype=torch.float64)
    # xlogy gives 0 * log 0 = 0, so flip_prob = 0 puts -inf only where a bit really differs.
    log_component = torch.xlogy(dist, f) + torch.xlogy(n_visible - dist, 1 - f)
    return torch.logsumexp(torch.log(w)[None, :] + log_component, dim=1)


# --------------------------------------------------------------------------------- teacher RBM


def _states_of(index: torch.Tensor, n_visible: int) -> torch.Tensor:
    """Binary rows ``(len(index), n_visible)`` uint8 of state indices: ``v_i = bit i``."""
    return ((index[:, None] >> torch.arange(n_visible)) & 1).to(torch.uint8)


def enumerate_states(n_visible: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """States ``start .. stop-1`` of ``{0,1}^n_visible`` as ``(stop-start, n_visible)`` uint8;
    row ``s`` has ``v_i = bit i of s``."""
    stop = 1 << n_visible if stop is None else stop
    return _states_of(torch.arange(start, stop, dtype=torch.int64), n_visible)


def state_index(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`enumerate_states`: ``(n,)`` int64 index of each binary row of ``x``."""
    return (x.to(torch.int64) << torch.arange(x.shape[1])).sum(dim=1)


def _check_teacher(W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor) -> None:
    where = "teacher_rbm"
    if W.dim() != 2:
        raise InputError(where, "W", f"expected (n_visible, n_hidden), got {tuple(W.shape)}")
    n_visible, n_hidden = W.shape
    if vbias.shape != (n_visible,) or hbias.shape != (n_hidden,):
        raise InputError(
            where,
            "biases",
            f"vbias {tuple(vbias.shape)} / hbias {tuple(hbias.shape)} do not match W {tuple(W.shape)}",
        )
    if n_visible > MAX_ENUMERATED_VISIBLE:
        raise InputError(
            where, "n_visible", f"{n_visible} > {MAX_ENUMERATED_VISIBLE}: too many states to enumerate"
        )


def _unnormalised(v: torch.Tensor, W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor) -> torch.Tensor:
    """``-F(v) = a.v + sum_j softplus(b_j + (v W)_j)`` in float64."""
    v = v.to(torch.float64)
    return v @ vbias + F.softplus(hbias + v @ W).sum(dim=1)


def _all_logits(W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor) -> torch.Tensor:
    """``-F(v)`` for every state, chunk by chunk."""
    n_states = 1 << W.shape[0]
    parts = [
        _unnormalised(enumerate_states(W.shape[0], lo, min(lo + _CHUNK, n_states)), W, vbias, hbias)
        for lo in range(0, n_states, _CHUNK)
    ]
    return torch.cat(parts)


def _as_f64(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [torch.as_tensor(t).to(torch.float64) for t in tensors]


def teacher_log_z(W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor) -> float:
    """Exact ``log Z`` of the teacher RBM."""
    W, vbias, hbias = _as_f64(W, vbias, hbias)
    _check_teacher(W, vbias, hbias)
    return float(torch.logsumexp(_all_logits(W, vbias, hbias), dim=0))


def teacher_logprob(
    x: torch.Tensor, W: torch.Tensor, vbias: torch.Tensor, hbias: torch.Tensor
) -> torch.Tensor:
    """Exact ``log p(v)`` ``(n,)`` float64 of binary rows ``x`` under the teacher RBM."""
    W, vbias, hbias = _as_f64(W, vbias, hbias)
    _check_teacher(W, vbias, hbias)
    log_z = torch.logsumexp(_all_logits(W, vbias, hbias), dim=0)
    return _unnormalised(x, W, vbias, hbias) - log_z


def teacher_rbm_samples(
    gen: torch.Generator,
    W: torch.Tensor,
    vbias: torch.Tensor,
    hbias: torch.Tensor,
    n_samples: int,
) -> Dataset:
    """``n_samples`` exact i.i.d. draws from the teacher's visible marginal (no MCMC: the
    probabilities of all ``2^n_visible`` states are computed and sampled with
    ``torch.multinomial``). ``info["log_z"]`` holds the exact log partition function."""
    W, vbias, hbias = _as_f64(W, vbias, hbias)
    _check_teacher(W, vbias, hbias)
    if n_samples < 1:
        raise InputError("teacher_rbm", "n_samples", f"{n_samples} < 1")
    logits = _all_logits(W, vbias, hbias)
    log_z = torch.logsumexp(logits, dim=0)
    probs = torch.exp(logits - log_z)
    index = torch.multinomial(probs, n_samples, replacement=True, generator=gen)
    n_visible, n_hidden = W.shape
    return Dataset(
        x=_states_of(index, n_visible),
        n_states=2,
        source="synthetic:teacher_rbm",
        info={"format": "synthetic", "n_hidden": n_hidden, "log_z": float(log_z)},
    )


def random_teacher(
    gen: torch.Generator, n_visible: int, n_hidden: int, coupling_std: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(W, vbias, hbias)`` float64 with every entry i.i.d. ``N(0, coupling_std^2)``.

    ``coupling_std`` around ``1 / sqrt(n_visible)`` .. ``3 / sqrt(n_visible)`` gives weakly to
    strongly multimodal teachers.
    """
    if n_visible < 1 or n_hidden < 1:
        raise InputError("random_teacher", "shape", f"n_visible={n_visible}, n_hidden={n_hidden}")
    if not (math.isfinite(coupling_std) and coupling_std >= 0):
        raise InputError("random_teacher", "coupling_std", f"{coupling_std} is not >= 0")
    W = torch.randn(n_visible, n_hidden, generator=gen, dtype=torch.float64) * coupling_std
    vbias = torch.randn(n_visible, generator=gen, dtype=torch.float64) * coupling_std
    hbias = torch.randn(n_hidden, generator=gen, dtype=torch.float64) * coupling_std
    return W, vbias, hbias

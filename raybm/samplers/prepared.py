"""RBM parameters laid out for block-Gibbs sweeps in one precision, built once per change.

One sweep needs the couplings twice, once per direction, and in the fast path in bf16. Casting
(and, for the label unit, concatenating) them per half-step would redo the same work 2k times
per call; :func:`prepare` builds the layout once and caches it on the model, keyed on every
parameter's storage, shape, dtype and version counter (``Tensor._version``, bumped by every
in-place write: optimiser steps, ``copy_`` in ``load_state_dict``...). A write through
``param.data`` bypasses the counter (as it bypasses autograd's checks); :func:`clear_cache`
exists for that case.

Layout. The label unit is a one-hot block appended to the visible layer, so that one matmul
per direction serves both (F&F energy: ``-v^T W h - D_l.h``):

    up   = [W ; D]        (n_in + L, M)    hidden field  = [v, onehot(l)] @ up + b
    down = [W ; D]^T      (M, n_in + L)    [visible | label] fields = h @ down + [a | c]

with ``n_in = N`` for Bernoulli visibles and ``N q`` for Potts (``W`` flattened over states;
the hidden field is then a gather-sum of rows, :func:`torch.nn.functional.embedding_bag`, not
a product with a one-hot matrix: ``N`` row reads instead of ``N q M`` multiply-adds).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import torch

from raybm.models.rbm import RBM, PottsRBM
from raybm.samplers.digits import Digits, combine, exact_for, split, sums

_DTYPES = {"bf16": torch.bfloat16}


@dataclass(frozen=True)
class GibbsParams:
    """One RBM's parameters for Gibbs sweeps (see the module docstring for the layout).

    up:         ``(n_in + L, M)``, matmul dtype (Bernoulli) or float (Potts gather table).
    down:       ``(M, n_in + L)`` contiguous, matmul dtype; None where it was not asked for
                (``prepare(..., down=False)``: a label chain's compiled sweeps need none).
    hbias:      ``(M,)`` ``b`` in the field dtype (float32 in bf16: biases are added after
                the matmul, unrounded).
    vlbias:     ``(n_in + L,)`` ``[a | c]`` in the field dtype.
    offsets:    Potts only: ``(N,)`` int64 ``i * q``, the row of site ``i``'s state 0 in ``up``
                (which, with labels, ends with a zero row: the index of "no label given").
    fast:       bf16 matmuls and the 16-bit integer-domain Bernoulli draw.
    digits_visible: the int8 digits of ``up``'s visible rows (``W`` alone, each column of
                its own scale: a label's rows ``D`` may be far larger than ``W``), for
                products of the visibles alone (:func:`visible_digit_field`); ``digits_up``
                itself where there are no label rows. None where ``digits_up`` is.
    digits_up, digits_down: the int8 digits of ``up`` (Bernoulli) and ``down``
                (``sampler.precision: digits``, :mod:`raybm.samplers.digits`), which the
                sweeps' products use in place of float32 ``up`` / ``down``; walkers are
                then int8 0/1 (``matmul_dtype``), and ``down`` is None (no product reads
                it: the digits are the layout). None in the other precisions, and
                ``digits_down`` where the down layout was not asked for.
    """

    potts: bool
    n_visible: int
    n_states: int
    n_labels: int
    n_in: int
    matmul_dtype: torch.dtype
    field_dtype: torch.dtype
    up: torch.Tensor
    down: torch.Tensor | None
    hbias: torch.Tensor
    vlbias: torch.Tensor
    offsets: torch.Tensor | None
    fast: bool
    digits_up: Digits | None = None
    digits_down: Digits | None = None
    digits_visible: Digits | None = None

    @property
    def digit_layout(self) -> bool:
        """Whether this is the digits layout (int8 walkers against digits)."""
        return self.matmul_dtype == torch.int8

    @property
    def has_down(self) -> bool:
        """Whether the visible step's layout is built (``down``, or its digits)."""
        return self.down is not None or self.digits_down is not None


_CACHE: "weakref.WeakKeyDictionary[RBM, dict]" = weakref.WeakKeyDictionary()


def clear_cache(model: RBM | None = None) -> None:
    """Forget prepared layouts (of one model, or all): needed only after ``param.data`` writes."""
    if model is None:
        _CACHE.clear()
    else:
        _CACHE.pop(model, None)


def _key(model: RBM) -> tuple | None:
    try:
        return tuple(
            (p.data_ptr(), p._version, p.dtype, tuple(p.shape), p.device)
            for p in model.parameters()
        )
    except RuntimeError:  # inference tensors carry no version counter: never cache them
        return None


@torch.no_grad()
def prepare(model: RBM, precision: str, down: bool = True) -> GibbsParams:
    """The cached :class:`GibbsParams` of ``model`` for ``precision`` ("fp32", "bf16" or
    "digits"; digits where they would not be exact here are the fp32 layout:
    :func:`raybm.samplers.digits.exact_for`).

    ``down=False``: its ``down`` may be None. The transposed copy is most of the build (a
    784 x 512 layout with 10 labels: 0.43 of 0.74 ms in bf16; Intel Xeon with AMX,
    2026-12-07), and F&F's label chain, built anew after every generation step, has no use
    for it; a later call that asks for it adds it to the cached layout."""
    key = _key(model)
    entry = _CACHE.get(model, {}).get(precision)
    if key is not None and entry is not None and entry[0] == key:
        params = entry[1]
        if not down or params.has_down:
            return params
        # The parameters are those the layout was built from (same key): only down to add.
        w = _couplings(model)[0]
        params = (replace(params, digits_down=split(w.T)) if params.digit_layout
                  else replace(params, down=_down(w, params.matmul_dtype)))
    else:
        params = (_build_digits(model, down) if precision == "digits"
                  else _build(model, precision, down))
    if key is not None:
        _CACHE.setdefault(model, {})[precision] = (key, params)
    return params


def _couplings(model: RBM) -> tuple[torch.Tensor, torch.Tensor]:
    # [W ; D] (n_in + L, M) and [a | c]: the label rows appended to the visible ones.
    w = model.weight.reshape(-1, model.n_hidden)  # (n_in, M): Potts rows are (site, state)
    a = model.vbias.reshape(-1)
    if model.n_labels:
        w = torch.cat([w, model.label_weight])
        a = torch.cat([a, model.lbias])
    return w, a


def _down(w: torch.Tensor, matmul_dtype: torch.dtype) -> torch.Tensor:
    # [W ; D]^T (M, n_in + L), contiguous: the visible step's layout.
    return w.T.to(matmul_dtype).contiguous()


def _build(model: RBM, precision: str, with_down: bool = True) -> GibbsParams:
    potts = isinstance(model, PottsRBM)
    # "fp32" is the reference: the model's own dtype (float64 models stay float64).
    param_dtype = model.weight.dtype
    fast = precision in _DTYPES
    matmul_dtype = _DTYPES.get(precision, param_dtype)
    field_dtype = torch.float32 if fast else param_dtype

    w, a = _couplings(model)
    # The Potts gather-sum stays in float: it does no multiplies, so bf16 would only round.
    up_dtype = field_dtype if potts else matmul_dtype
    up = w.to(up_dtype, copy=True).contiguous()
    down = _down(w, matmul_dtype) if with_down else None
    offsets = None
    if potts:
        offsets = torch.arange(model.n_visible, dtype=torch.int64, device=w.device) * model.n_states
        if model.n_labels:
            # A zero row after the label rows: the gather index of "no label given".
            up = torch.cat([up, up.new_zeros(1, up.shape[1])])
    return GibbsParams(
        potts=potts,
        n_visible=model.n_visible,
        n_states=model.n_states,
        n_labels=model.n_labels,
        n_in=w.shape[0] - model.n_labels,
        matmul_dtype=matmul_dtype,
        field_dtype=field_dtype,
        up=up,
        down=down,
        hbias=model.hbias.to(field_dtype, copy=True),
        vlbias=a.to(field_dtype, copy=True),
        offsets=offsets,
        fast=fast,
    )


def _build_digits(model: RBM, with_down: bool = True) -> GibbsParams:
    # The fp32 layout without its float32 down (the digits are the visible step's layout),
    # plus the digits of both products' couplings; walkers in int8 (what torch._int_mm
    # reads). The float32 up stays: Potts' hidden field is a gather of its rows, not a
    # product (a Bernoulli layout reads only its shape). down=False (a label chain): no
    # digits of down until a sweep asks for them.
    w = _couplings(model)[0]
    potts = isinstance(model, PottsRBM)
    # Potts never splits up (its field is a gather): only down's rows bound its sums.
    exact = (potts or exact_for(w.shape[0], w.device)) and exact_for(w.shape[1], w.device)
    if model.weight.dtype != torch.float32 or not exact:
        # A float64 model (a reference) keeps its own dtype: digits are float32-class. Not
        # exact here (or too wide): the fp32 layout (where the CPU is the reason, the run's
        # notes say so).
        return _build(model, "fp32", with_down)
    params = _build(model, "fp32", False)
    up = None if potts else split(w)
    visible = up if up is None or not model.n_labels else split(w[: params.n_in])
    return replace(params, matmul_dtype=torch.int8, field_dtype=torch.float32,
                   hbias=params.hbias.float(), vlbias=params.vlbias.float(),
                   digits_up=up, digits_down=split(w.T) if with_down else None,
                   digits_visible=visible)


def visible_digit_field(model: RBM, x: torch.Tensor) -> torch.Tensor | None:
    """``x W`` (``(n, M)`` float32, no bias or label) of 0/1 visibles ``x`` ``(n, N)`` from
    the digits of ``W`` in the model's cached digits layout (:func:`prepare`,
    ``digits_visible``: scaled by ``W``'s columns alone), within the bound of
    :mod:`raybm.samplers.digits`: the fields of a run in ``sampler.precision: digits``
    outside its sweeps (the centring's positive phase, the walkers' hidden probabilities of
    a closed-form gradient, a label chain's clamped visibles), at the sweeps' int8 speed,
    from digits made once per parameter change. None where that layout has none (Potts,
    whose field is a gather; float64 models; int8 sums not exact here), and for float
    rows (which need not be 0/1): the caller multiplies in float32."""
    if x.dtype.is_floating_point or x.device.type != "cpu" or len(x) == 0:
        return None  # float rows need not be 0/1 (digits sum 0/1 rows only)
    p = prepare(model, "digits", down=False)
    digits = p.digits_visible
    if digits is None:
        return None
    rows = x if x.dtype == torch.int8 else x.to(torch.int8)
    return combine(sums(rows.reshape(len(rows), -1).contiguous(), digits), digits)

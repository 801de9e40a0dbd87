"""Block Gibbs kernel for RBMs with an optional label unit.

Given the hiddens, the visibles and the label are conditionally independent, so one sweep is
two blocks: ``h ~ p(h | v, l)`` then ``(v, l) ~ p(v | h) p(l | h)`` (Hinton 2002; with the
label unit as in Carbone et al. 2023, arXiv 2307.06797). Either of ``v`` and ``l`` can be
clamped: clamping ``l`` generates a class, clamping ``v`` samples labels for classification.

Three precisions:

- ``"fp32"`` (the reference): fields in the model's dtype (the bias added by the draw; Potts
  hidden fields as a gather-sum of weight rows), ``[u < sigmoid(z)]`` with uniforms on
  ``torch.rand``'s 24-bit grid (made from 32-bit halves of the generator's int64 stream, at
  half ``torch.rand``'s cost), inverse-CDF categorical draws. Where the draws run compiled,
  each uniform's word is made inside the compiled loop from a SplitMix64 stream keyed by the
  generator (``random_bits.splitmix_grid``), never stored.
- ``"bf16"`` (fast): bf16 matmuls on a bf16 copy of the float32 master weights, made once per
  parameter change (``prepared``), biases added in float32, and the Bernoulli draw
  ``[u16 2^-16 + 1/2 < sigmoid(z)]`` on 16-bit uniforms cut from the int64 stream
  (``random_bits``; bias < 2^-16 per unit), fused into one loop when ``torch.compile`` is on
  (``fused``). What separates it from the reference is the bf16 rounding of the couplings and
  of the matmul output (each 2^-9 relative; see ``test_fast_path``).
- ``"digits"``: the reference's draws on fields whose two products are int32 sums of the 0/1
  states against three int8 digits of each coupling column (:mod:`raybm.samplers.digits`:
  ``~2^-22`` of the column's largest coupling per one in the row, float32's class), combined
  inside a compiled Bernoulli draw's loop (``fused.DigitField``; eager draws, Potts visibles
  and label logits form the float32 field first); walkers are int8 0/1 in the sweeps. For a
  float32 model the same words give the same states as fp32 but where a uniform sits within
  that error of its threshold. The other products of 0/1 visibles with the couplings in
  such a run take the same digits (``prepared.visible_digit_field``): an F&F label chain's
  one ``x W`` (its sweeps then run as fp32's), the centring's positive phase and the
  walkers' fields of the closed-form gradient; its ``X^T [c P | c]`` and Jarzynski's work
  take digits of their own (``RBM.weighted_energy_gradient``, ``RBM.energy_change``).
  Where int8 sums are not exact (no VNNI / AMX-INT8, or a GPU), and for float64 models,
  the layout is fp32's (the model's dtype) and, where the machine decided, the run says
  so.

F&F's label sweeps (visibles clamped, :func:`label_chain`), where they run compiled, draw the
hiddens the reference way in both precisions, from a SplitMix64 key, one word per two draws
(``fused.label_sweep``): cheaper there than the fast draw's stored words.

Inside :func:`step`, walkers stay in the layout the next matmul reads (0/1 in the matmul dtype
with the label one-hot appended, or gather indices for Potts) and become uint8 once, at the
end: no per-sweep casts, and the sweep's temporaries are reused (``scratch``).

Kernel contract (``samplers.base``): :class:`GibbsKernel` is the value estimators receive,
``init(gen, model, n) -> WalkerState`` and ``step(gen, state, model, k) -> (WalkerState,
info)``; the module-level :func:`init_uniform` and :func:`step` are what it calls. The model is
passed in on every call and the state holds only walkers, so the same state can be moved under
new parameters.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from raybm.cpu import BF16_ISAS, INT8_DOT_ISAS, cpu_flags, matmul_isa, withheld_note
from raybm.models.rbm import RBM
from raybm.samplers import digits
from raybm.samplers.fused import (
    ClampedField,
    DigitField,
    Field,
    bernoulli_field,
    categorical_field,
    exact_field,
    exact_field_keyed,
    field_shape,
    formed,
    label_sweep,
    runs_compiled,
    splitmix_words,
)
from raybm.samplers.base import KernelBase, KernelInfo, MatmulSupport
from raybm.samplers.prepared import GibbsParams, prepare, visible_digit_field
from raybm.samplers.random_bits import (
    COMPILED_STREAM,
    EAGER_STREAM,
    STREAMS,
    as_pairs,
    categorical_index,
    categorical_logits,
    pair_words,
    random_words,
    splitmix_key,
    uniform16_pairs,
    unit_uniform24_,
    unpack_bits,
)
from raybm.samplers.scratch import Scratch
from raybm.walkers import WalkerState

PRECISIONS = ("fp32", "bf16", "digits")
# ``auto``: bf16 where every rank's device multiplies bf16 natively and the model is large
# enough for it to pay (AUTO_BF16_MIN_WIDTH), else fp32 (the trainer decides,
# :meth:`GibbsKernel.for_run`).
SETTINGS = ("auto", *PRECISIONS)
# compile: auto (samplers.fused), measured on Intel Xeons (MNIST 784 x 512, 2,000 walkers):
# a cold compilation took ~15 s (benchmarks/train_throughput.py, 2026-12-04). Ten sweeps,
# eager SFC64 draws against the compiled draws the run would get (Xeon with AMX, 2 threads,
# 2026-12-05, medians of 7): fp32 169 -> 136 ms with SplitMix64 words made in the loop
# (161 ms compiled from stored SFC64 words), ~2.2 ns saved per sweep of one walker's visible
# unit (with its share of the hidden layer); bf16 98.5 -> 76 ms from stored SFC64 words
# (79 ms with SplitMix64 made in the loop, which hashes a word per draw), ~1.4 ns. Since
# 2026-12-07 the compiled bf16 draws read SplitMix64 words stored by a compiled loop
# (fused.splitmix_words), ~0.9 ns more per such unit by the words' timing alone (AMD EPYC):
# not re-measured as ten sweeps on a quiet machine, so bf16 keeps the lower figure (it then
# compiles somewhat later than it would pay). digits saves what fp32 does
# (benchmarks/compile_saves.py, AMD EPYC, 2 threads, 2026-12-08, medians of 7: 5.44 ns
# against fp32's 5.68 ns, both above the Xeon's 2.2 ns), so it takes fp32's figure.
COMPILE_COST_S = 15.0
COMPILE_SAVES_S = {"bf16": 1.4e-9, "fp32": 2.2e-9, "digits": 2.2e-9}
# precision auto picks bf16 only for models with bf16_width >= this. Ten sweeps of 500 and
# 2,000 walkers, fp32 time over bf16 (Intel Xeon with AMX, 1 thread, 2026-12-05): 12 x 8
# (width 4.8) 0.54 / 0.58, 64 x 32 (21) 0.75 / 0.88, 100 x 100 (50) 0.99 / 1.20, 200 x 100
# (67) 1.05 / 1.30, 784 x 128 (110) 1.31 / 1.34, 256 x 256 (128) 1.46 / 1.70, 784 x 512
# (310) 2.32 / 2.06: below ~60 the bf16 path's conversions cost more than its matmuls save.
AUTO_BF16_MIN_WIDTH = 64.0
# precision auto picks digits (where bf16 is not native and int8 sums are exact) only for
# models with bf16_width >= this. Ten compiled sweeps, digits time over fp32's per round
# (benchmarks/digits_width.py, AMD EPYC with avx512_vnni, 2 threads, 2026-12-07), 500 / 2,000
# walkers: 12 x 8 (width 5) 1.26 / 1.29, 64 x 32 (21) 1.16 / 1.07, 64 x 200 with 10 labels
# (54) 1.07 / 0.76, 100 x 100 (50) 1.01 / 0.93, 200 x 100 (67) 0.87 / 0.69, 784 x 128 (110)
# 0.59 / 0.59, 256 x 256 (128) 0.64 / 0.57, 784 x 512 (310) 0.50 / 0.46. (An earlier run of
# the 2,000-walker sizes gave 1.00 at width 54: below ~64 it is a gamble.)
AUTO_DIGITS_MIN_WIDTH = 64.0


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 natively: a CUDA device that supports it, or a CPU
    with ``avx512_bf16`` / ``amx_bf16`` (an AVX2-only CPU emulates bf16, ~50x slower than
    fp32). A CPU that cannot be told (no ``/proc/cpuinfo``) counts as not native."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and _cpu_bf16()


@functools.cache
def _cpu_bf16() -> bool:
    return cpu_has_bf16() is True


def bf16_width(model: RBM) -> float:
    """``N M / (N + M)`` for ``N`` visible columns (one-hot for Potts, labels included) and
    ``M`` hidden units: a sweep's matmul work over its elementwise work (draws, random
    numbers, conversions), the ratio that decides whether bf16's faster matmuls repay its
    extra conversions (``AUTO_BF16_MIN_WIDTH``)."""
    n_in = model.weight.numel() // model.n_hidden + model.n_labels
    return n_in * model.n_hidden / (n_in + model.n_hidden)


def resolve_precision(precision: str, native: bool, int8_exact: bool = False) -> str:
    """The precision a Gibbs setting runs at: ``auto`` is bf16 where ``native``, else digits
    where ``int8_exact``, else fp32 (each already judged worth it for the model)."""
    if precision == "auto":
        return "bf16" if native else "digits" if int8_exact else "fp32"
    return precision


def matmul_support(device: torch.device | str = "cpu") -> MatmulSupport:
    """What ``device`` multiplies natively or exactly (:func:`bf16_native`,
    :func:`int8_exact`): this rank's part of a run's :class:`MatmulSupport`."""
    return MatmulSupport(bf16=bf16_native(device), int8=int8_exact(device))


def int8_exact(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs the digits' products exactly (:func:`digits.available`)."""
    return digits.available(torch.device(device))


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo"),
                 environ: Mapping[str, str] | None = None) -> bool | None:
    """Whether oneDNN multiplies bf16 natively on this CPU: it has ``avx512_bf16`` or
    ``amx_bf16`` (Zen 4, Cooper Lake, Sapphire Rapids; without them oneDNN emulates bf16,
    measured ~54x slower than fp32 on an AVX2 EPYC, benchmarks/RESULTS.md) and no cap on oneDNN
    withholds them (``ONEDNN_MAX_CPU_ISA``: :mod:`raybm.cpu`). None where it cannot be told
    (no ``/proc/cpuinfo``: not Linux)."""
    return matmul_isa(BF16_ISAS, cpu_flags(cpuinfo), environ)


def init_uniform(
    gen: torch.Generator, model: RBM, n: int, label: torch.Tensor | None = None,
    stream: str = EAGER_STREAM,
) -> WalkerState:
    """``n`` walkers from the uniform distribution over visibles (and over labels unless
    given). Binary visibles with ``stream`` other than ``"mt19937"`` are bits cut from
    random words, 64 per
    word (``torch.randint`` spends a 64-bit draw on each: ~6 ms of the 1.57 million units of
    2,000 MNIST walkers, every F&F update twice)."""
    if model.n_states == 2 and stream != STREAMS[0]:
        count = n * model.n_visible
        words = random_words(gen, (count + 63) // 64, stream=stream)
        x = unpack_bits(words, count).reshape(n, model.n_visible).to(gen.device)
    else:
        x = torch.randint(0, model.n_states, (n, model.n_visible), generator=gen,
                          device=gen.device).to(torch.uint8)
    if model.n_labels and label is None:
        label = torch.randint(0, model.n_labels, (n,), generator=gen, device=gen.device)
    return WalkerState.unweighted(x, label if model.n_labels else None)


# ------------------------------------------------------------------------- walker layout
def _encode(
    p: GibbsParams, x: torch.Tensor, label: torch.Tensor | None, ws: Scratch
) -> torch.Tensor:
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
    buf = ws.get("x", (n, p.n_in + p.n_labels), p.matmul_dtype, x.device)
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
    gen: torch.Generator, z: Field, bias: torch.Tensor, out: torch.Tensor, ws: Scratch
) -> torch.Tensor:
    """``[u < sigmoid(z + bias)]`` as 0/1 in ``out`` (``z``'s shape; ``z`` is a temporary and
    is overwritten, or a ``fused.ClampedField``; ``bias`` ``(m,)``, added by the compiled
    loop for free where ``addmm`` would first write it into every row of the product's
    output, and in place eagerly). The uniforms are made in place in ``out``,
    then compared in place: in float32, on ``torch.rand``'s 24-bit grid from 32-bit halves
    of the int64 stream (``unit_uniform24_``), or with ``ws.compiled`` in one compiled loop
    from the same words (``fused.exact_field``); in other dtypes (float64 references), by
    ``uniform_``."""
    if out.dtype not in (torch.float32, torch.int8):
        return out.uniform_(generator=gen).lt_(formed(z).add_(bias).sigmoid_())
    words = _draw_source(gen, False, *field_shape(z), ws, out.device)
    if ws.stream == COMPILED_STREAM:
        return exact_field_keyed(z, words, out, compiled=ws.compiled, bias=bias)
    if exact_field(z, words, out, compiled=ws.compiled, bias=bias) is not None:
        return out
    prob = formed(z).add_(bias).sigmoid_()
    if out.dtype == torch.int8:  # the digits path's walkers: the uniforms need a float32 home
        u = ws.get("uniforms", prob.shape, torch.float32, out.device)
        return out.copy_(unit_uniform24_(words, out=u).lt_(prob))
    return unit_uniform24_(words, out=out).lt_(prob)


def _fast_draw(
    gen: torch.Generator,
    field: Field,
    bias: torch.Tensor,
    ws: Scratch,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fast Bernoulli draw on ``field + bias`` with fresh 16-bit uniforms (bf16 0/1)."""
    words = _draw_source(gen, True, *field_shape(field), ws, bias.device)
    return bernoulli_field(field, bias, words, out=out, scratch=ws, compiled=ws.compiled)


def _draw_source(gen: torch.Generator, fast: bool, n: int, m: int, ws: Scratch,
                 device: torch.device) -> torch.Tensor:
    """The randomness of one ``(n, m)`` Bernoulli draw, taken from ``gen``: the SplitMix64
    key where the exact draw's words are made in its compiled loop (``ws.stream``), else
    the stored words, the 32-bit ``(n, m)`` of the exact draw or the packed 16-bit pairs of
    the fast one (``fast``). The fast draw's SplitMix64 words are stored by a loop of their
    own (``fused.splitmix_words``): the words ``uniform16_pairs`` takes from that stream."""
    if fast:
        buf = ws.get("words", (pair_words(n, m),), torch.int64, device)
        if ws.stream == COMPILED_STREAM:
            return as_pairs(splitmix_words(splitmix_key(gen), buf, compiled=ws.compiled), n, m)
        return uniform16_pairs(gen, n, m, stream=ws.stream, out=buf)
    if ws.stream == COMPILED_STREAM:
        return splitmix_key(gen)
    words = random_words(gen, (n * m + 1) // 2, stream=ws.stream,
                         out=ws.get("words", ((n * m + 1) // 2,), torch.int64, device))
    return words.view(torch.int32)[: n * m].view(n, m)


def _drawn(p: GibbsParams, ws: Scratch, n: int, m: int, device: torch.device) -> torch.Tensor:
    """The fast draw's hidden states, a scratch buffer reused by every sweep (the compiled
    draw stores into it, where a fresh tensor a sweep cost its allocation and page faults)."""
    return ws.get("drawn", (n, m), p.matmul_dtype, device)


def _hidden(gen: torch.Generator, p: GibbsParams, buf: torch.Tensor, ws: Scratch) -> torch.Tensor:
    """``h ~ p(h | v, l)`` as 0/1 in the matmul dtype, ``(n, M)``."""
    ws = ws.sub("h")
    n, m, dev = buf.shape[0], p.up.shape[1], buf.device
    if p.potts:
        field = F.embedding_bag(buf, p.up, mode="sum")  # sum_i W[i, v_i] (+ D_l), float
        if p.fast:
            return _fast_draw(gen, field, p.hbias, ws, out=_drawn(p, ws, n, m, dev))
        out = ws.get("out", (n, m), p.matmul_dtype, dev)  # int8 for the digits' product
        return _bernoulli_exact(gen, field, p.hbias, out, ws)
    if p.fast:
        y = torch.mm(buf, p.up, out=ws.get("field", (n, m), p.matmul_dtype, dev))  # v W + D_l
        return _fast_draw(gen, y, p.hbias, ws, out=_drawn(p, ws, n, m, dev))
    if p.digits_up is not None:
        z = _digit_field(p.digits_up, buf, ws)
        return _bernoulli_exact(gen, z, p.hbias, ws.get("out", (n, m), p.matmul_dtype, dev), ws)
    z = torch.mm(buf, p.up, out=ws.get("field", (n, m), p.matmul_dtype, dev))
    return _bernoulli_exact(gen, z, p.hbias, ws.get("out", (n, m), p.matmul_dtype, dev), ws)


def _visible_part(p: GibbsParams, buf: torch.Tensor) -> torch.Tensor:
    """The visibles' part of the hidden field, ``x W`` without bias or label: float32, or
    the bf16 product of the fast Bernoulli path as it comes (the rounding every bf16 sweep's
    field has; half the bytes for each label sweep's draw to read)."""
    if p.potts:
        return F.embedding_bag(buf[:, : p.n_visible], p.up, mode="sum").to(p.field_dtype)
    return torch.mm(buf[:, : p.n_in], p.up[: p.n_in])


def _clamped_field(fixed: torch.Tensor, label_rows: torch.Tensor, label: torch.Tensor,
                   ws: Scratch) -> Field:
    """``fixed + D_l`` for clamped visibles: the fixed part plus each walker's label row.
    Compiled draws form it inside their loop (``fused.ClampedField``); eager ones read it
    from a scratch buffer. (``fixed + up[label + N]`` made two fresh ``(n, M)`` tensors a
    sweep, each page-faulted in: ~2 ms of a 2,000 x 512 classification sweep's ~3 ms,
    Intel Xeon, 2026-12-05.)"""
    clamped = ClampedField(fixed, label_rows, label)
    if runs_compiled(ws.compiled):
        return clamped
    return formed(clamped, out=ws.get("clamped", fixed.shape, label_rows.dtype, fixed.device))


def _hidden_from(gen: torch.Generator, p: GibbsParams, field: Field,
                 ws: Scratch) -> torch.Tensor:
    """``h ~ p(h | field + b)`` as 0/1 in the matmul dtype (both draws add the hidden bias
    ``b``)."""
    ws = ws.sub("h")
    if p.fast:
        return _fast_draw(gen, field, p.hbias, ws,
                          out=_drawn(p, ws, *field_shape(field), p.hbias.device))
    out = ws.get("out", field_shape(field), p.matmul_dtype, p.hbias.device)
    return _bernoulli_exact(gen, field, p.hbias, out, ws)


def _visible(
    gen: torch.Generator,
    p: GibbsParams,
    h: torch.Tensor,
    buf: torch.Tensor,
    sample_x: bool,
    sample_label: bool,
    ws: Scratch,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(v, l) ~ p(v | h) p(l | h)`` for the parts asked for, written into the layout ``buf``
    (or a new one); returns it and the new labels (None when not sampled)."""
    ws = ws.sub("v")
    if p.digits_down is not None:
        return _visible_digits(gen, p, h, buf, sample_x, sample_label, ws)
    nv, n, dev = p.n_in, h.shape[0], h.device
    # Only the columns drawn: clamped visibles need the label columns alone, clamped labels
    # the visible ones alone (an F&F generation sweep: its (n, M) x (M, N + L) product was
    # ~1.35x the (M, N) one in bf16, a width oneDNN tiles worse; Intel Xeon, 2026-12-06).
    first = 0 if sample_x else nv
    last = None if sample_label else nv
    down, bias = p.down[:, first:last], p.vlbias[first:last]
    shape = (n, down.shape[1])
    # No bias in the product: the draws add it (in float32 for bf16), see _bernoulli_exact.
    field = torch.mm(h, down, out=ws.get("field", shape, p.matmul_dtype, dev))
    if sample_x:
        if p.potts:
            if p.fast:
                u = torch.rand(n, p.n_visible, generator=gen, device=dev)
                state = categorical_field(field[:, :nv], bias[:nv], u, compiled=ws.compiled)
            else:
                logits = field[:, :nv].add_(bias[:nv])
                state = categorical_index(gen, logits.view(n, p.n_visible, p.n_states))
            torch.add(state, p.offsets, out=buf[:, : p.n_visible])
        elif p.fast:
            # Stored by the draw's loop into the layout (x is its first columns): a new
            # tensor per draw cost an allocation and its page faults each sweep.
            _fast_draw(gen, field[:, :nv], bias[:nv], ws, out=buf[:, :nv])
        else:
            _bernoulli_exact(gen, field[:, :nv], bias[:nv], buf[:, :nv], ws)
    label = None
    if sample_label:
        label = categorical_index(gen, torch.add(field[:, nv - first :], bias[nv - first :]))
        _put_label(p, buf, label)
    return buf, label


# ------------------------------------------------------------------------- public kernels
def _digit_field(d: digits.Digits, x: torch.Tensor, ws: Scratch) -> DigitField:
    """The field ``x W`` of int8 0/1 rows from ``W``'s digits, left as int32 sums for the
    draw to combine (:class:`fused.DigitField`)."""
    out = ws.get("sums", (x.shape[0], 3 * d.width), torch.int32, x.device)
    return DigitField(digits.sums(x, d, out=out), d.scale)


def _visible_digits(
    gen: torch.Generator, p: GibbsParams, h: torch.Tensor, buf: torch.Tensor,
    sample_x: bool, sample_label: bool, ws: Scratch,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_visible` with the product from the digits of ``down`` (``precision:
    digits``): the visible draws read the sums' first ``n_in`` columns, the labels theirs."""
    nv, d = p.n_in, p.digits_down
    field = _digit_field(d, h, ws)
    if sample_x:
        bias = p.vlbias[:nv]
        if p.potts:
            logits = formed(DigitField(field.sums, d.scale[:nv])).add_(bias)
            state = categorical_index(gen, logits.view(h.shape[0], p.n_visible, p.n_states))
            torch.add(state, p.offsets, out=buf[:, : p.n_visible])
        else:
            _bernoulli_exact(gen, DigitField(field.sums, d.scale[:nv]), bias, buf[:, :nv], ws)
    label = None
    if sample_label:
        logits = digits.combine(field.sums, d, start=nv).add_(p.vlbias[nv:])
        label = categorical_index(gen, logits)
        _put_label(p, buf, label)
    return buf, label


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
    ws = Scratch()
    return _hidden(gen, p, _encode(p, v, label, ws), ws).to(torch.uint8)


@torch.no_grad()
def sample_visible(
    gen: torch.Generator, model: RBM, h: torch.Tensor, precision: str = "fp32"
) -> torch.Tensor:
    """``v ~ p(v | h)`` as uint8."""
    _check_precision(precision)
    p = prepare(model, precision)
    n = h.shape[0]
    ws = Scratch()
    buf = _encode(p, torch.zeros(n, p.n_visible, dtype=torch.uint8, device=h.device), None, ws)
    buf, _ = _visible(gen, p, h.to(p.matmul_dtype), buf, True, False, ws)
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
    stream: str = EAGER_STREAM,
    compiled: bool = False,
) -> tuple[WalkerState, dict]:
    """``k`` block-Gibbs sweeps; the log-weights are carried unchanged (the kernel leaves the
    current model's distribution invariant, so it does no work on the weights). ``stream``:
    where the random words come from (``random_bits.STREAMS``); ``compiled``: the fast
    path's draws by the ``torch.compile`` kernel (``samplers.fused``; also on everywhere
    with ``RAYBM_COMPILE=1``). ``clamp_visible``: the label chain of :func:`label_chain`."""
    _check_precision(precision)
    if clamp_visible and (clamp_label or not model.n_labels):
        raise ValueError("clamp_visible samples labels only: needs a label unit and free labels")
    if model.n_labels and state.label is None:
        # Without a label the first half-step would drop the label coupling D_l: start the
        # walkers with labels (init_uniform draws them uniformly).
        raise ValueError("this RBM has a label unit: the walkers need labels (state.label)")
    if k <= 0:
        return state.replace(), {}
    if clamp_visible:
        label, _ = label_chain(gen, model, state.x, state.label, k, precision, stream, compiled)
        return state.replace(label=label), {}
    p = prepare(model, precision)
    label = state.label
    sample_label = bool(model.n_labels) and not clamp_label
    ws = Scratch(stream=stream, compiled=compiled)  # temporaries reused by all k sweeps
    buf = _encode(p, state.x, label, ws)
    for _ in range(k):
        h = _hidden(gen, p, buf, ws)
        buf, new_label = _visible(gen, p, h, buf, True, sample_label, ws)
        if new_label is not None:
            label = new_label
    return state.replace(x=_decode(p, buf), label=label), {}


@torch.no_grad()
def label_chain(
    gen: torch.Generator,
    model: RBM,
    x: torch.Tensor,
    label: torch.Tensor,
    k: int,
    precision: str = "fp32",
    stream: str = EAGER_STREAM,
    compiled: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``k`` sweeps of ``h ~ p(h | x, l)``, ``l ~ p(l | h)`` with the visibles clamped to
    ``x`` (F&F's classification phase and its sampled accuracy), from the labels ``label``.

    The visibles' part of the hidden field, ``x W``, is the same at every sweep: it is
    computed once and each sweep adds only the label's row ``D_l`` (an ``(n, M)`` gather
    instead of an ``(n, N) x (N, M)`` matmul per sweep). Returns the labels after ``k``
    sweeps (int64 ``(n,)``) and that ``x W`` (``(n, M)``, without bias or label, in
    ``precision``'s matmul: bf16 as the fast path's product gives it, else float32, from
    the digits in ``digits``), which a classification contrast on the same parameters
    reuses (:meth:`RBM.weighted_energy_gradient`'s ``visible_field``)."""
    _check_precision(precision)
    if not model.n_labels:
        raise ValueError("a label chain samples labels: this RBM has no label unit")
    # digits: the chain's one product, x W (made once), from the digits (float32, the
    # classification contrast's field too); its sweeps then run as fp32's, on that field.
    fixed = visible_digit_field(model, x) if precision == "digits" else None
    precision = "fp32" if precision == "digits" else precision
    # No transposed layout (down) unless the eager sweeps below need it.
    p = prepare(model, precision, down=False)
    ws = Scratch(stream=stream, compiled=compiled)
    if fixed is None:
        fixed = _visible_part(p, _encode(p, x, None, ws))
    # D, the label rows of up, in float32 in the fast path (a copy of 10 rows: the field
    # x W + D_l is summed in float32); the label biases: with D, the only part of
    # p(v, l | h) needed.
    label_rows = p.up[p.n_in : p.n_in + p.n_labels].to(p.field_dtype)
    bias = p.vlbias[p.n_in :]
    n = fixed.shape[0]
    if runs_compiled(ws.compiled) and (p.fast or p.matmul_dtype == torch.float32):
        # Each sweep as one compiled loop nest, hidden states never stored, its words made
        # in the loop from a SplitMix64 key whatever the sweeps' stream, and its hidden
        # draw the 24-bit reference one in bf16 too (fused.label_sweep: cheaper there than
        # the fast draw's stored words).
        # D in the matmul dtype, as down's label columns hold it (Potts' up keeps float
        # rows), then float32: (L, M), a row per label.
        rows_out = model.label_weight.detach().to(p.matmul_dtype).to(torch.float32)
        rows_out = rows_out.contiguous()
        for _ in range(k):
            key = splitmix_key(gen)
            u = torch.rand(n, generator=gen, device=fixed.device)
            label = label_sweep(ClampedField(fixed, label_rows, label), p.hbias, key,
                                rows_out, bias, u, compiled=ws.compiled)
        return label, fixed
    down = prepare(model, precision).down[:, p.n_in :]  # the label columns
    shape = (n, p.n_labels)
    for _ in range(k):
        h = _hidden_from(gen, p, _clamped_field(fixed, label_rows, label, ws), ws)
        if p.fast:  # bf16 matmul, bias added in float32
            logits = torch.mm(h, down, out=ws.get("logits", shape, p.matmul_dtype, h.device))
            logits = torch.add(logits, bias)
        else:
            logits = torch.addmm(bias, h, down,
                                 out=ws.get("logits", shape, p.matmul_dtype, h.device))
        label = categorical_index(gen, logits)
    return label, fixed


@dataclass(frozen=True)
class GibbsKernel(KernelBase):
    """Block Gibbs sampling of an RBM as a kernel value (``samplers.base.Kernel``).

    Exactly invariant for the current model, so it never changes log-weights. Beyond the
    contract, the RBM-with-label algorithms (F&F) clamp the label (generate a class) or the
    visibles (sample labels for classification): those estimators take a ``GibbsKernel``.
    """

    precision: str = "fp32"  # fp32 | bf16 | digits | auto (the trainer resolves it: for_run)
    # torch.compile of the elementwise draws (samplers.fused; the fp32 path's too): True,
    # False, or "auto" (the trainer turns it on for a run whose draws save more than the
    # compilation costs, for_run).
    compile: bool | str = False
    # Where a sweep's random words come from (random_bits.STREAMS): SFC64, or SplitMix64
    # where the draws run compiled (for_run: its words are made by compiled loops);
    # a checkpoint continues with the stream it was drawn with (with_state), exactly: one
    # written before the choice existed holds no such state, and continues with the
    # Mersenne Twister.
    stream: str = EAGER_STREAM
    # What ``precision: auto`` (or a ``digits`` this run cannot sum exactly) came to and
    # why (for_run; the run's first lines say it).
    chosen: str = ""
    name: ClassVar[str] = "gibbs"
    invariant: ClassVar[bool] = True
    box: ClassVar[None] = None  # states are discrete: no box

    start: ClassVar[str] = "uniform noise"

    def __post_init__(self) -> None:
        if self.precision not in SETTINGS:
            raise ValueError(f"precision must be one of {SETTINGS}, got {self.precision!r}")

    def notes(self, use_gpu: bool) -> list[str]:
        if self.precision == "bf16" and not use_gpu and cpu_has_bf16() is False:
            return ["sampler.precision bf16: this CPU has no bf16 instructions (avx512_bf16 / "
                    "amx_bf16) that torch's matmuls may use"
                    f"{withheld_note(BF16_ISAS)}, so bf16 matmuls are emulated and slower "
                    "than fp32 (~50x measured); set sampler.precision=fp32"]
        if self.precision == "digits" and (use_gpu or not digits.available(torch.device("cpu"))):
            where = ("on a GPU" if use_gpu else
                     f"on this CPU, whose int8 products are not summed exactly (no VNNI / "
                     f"AMX-INT8{withheld_note(INT8_DOT_ISAS)})")
            return [f"sampler.precision digits: no exact int8 digit products {where}: the "
                    "sweeps multiply in float32, as with sampler.precision=fp32"]
        return [self.chosen] if self.chosen else []

    def for_run(self, model: RBM, support: MatmulSupport, draws: float = 0.0,
                weighs_moves: bool = True) -> "GibbsKernel":
        chosen = ""
        precision = self.precision
        if precision == "auto":
            width = bf16_width(model)
            precision = resolve_precision(
                "auto", support.bf16 and width >= AUTO_BF16_MIN_WIDTH,
                support.int8 and width >= AUTO_DIGITS_MIN_WIDTH)
            small = (f"a model this small (N M / (N + M) = {width:.0f} < "
                     f"{AUTO_BF16_MIN_WIDTH:.0f}) samples faster in fp32")
            if precision == "bf16":
                why = "native bf16 matmuls on every rank"
            elif precision == "digits":
                why = (f"no native bf16 matmuls here{withheld_note(BF16_ISAS)}; exact int8 "
                       "sums on every rank: int8 digits of the couplings, float32-class")
            elif support.bf16:
                why = f"native bf16 matmuls, but {small}"
            else:
                why = (f"no native bf16 matmuls here{withheld_note(BF16_ISAS)} (on Ray "
                       "workers: on some worker)"
                       + (f", and {small}" if support.int8 else
                          f"; no exact int8 sums for digits{withheld_note(INT8_DOT_ISAS)}"))
            chosen = f"sampler.precision auto: {precision} ({why})"
        elif precision == "digits" and not support.int8:
            # The layout would be fp32's on the ranks without exact int8 sums (prepared):
            # the whole run takes it, and says so (and logs fp32 as the precision used).
            precision = "fp32"
            chosen = ("sampler.precision digits: no exact int8 digit products on every rank "
                      f"(a GPU, or no VNNI / AMX-INT8{withheld_note(INT8_DOT_ISAS)}): the "
                      "sweeps multiply in float32, as with sampler.precision=fp32")
        compiled = self.compile
        if compiled == "auto":
            # Worth it when the fused loop saves (COMPILE_SAVES_S per walker coordinate and
            # sweep) at least twice what compiling costs (COMPILE_COST_S, once per process).
            compiled = draws * COMPILE_SAVES_S[precision] >= 2 * COMPILE_COST_S
        # Compiled draws take SplitMix64's words: fp32 makes them in its own loop
        # (random_bits.splitmix_grid), bf16 reads them from a compiled loop that stores them
        # (fused.splitmix_words), both faster than SFC64 in one thread; a resumed run then
        # takes back the stream its checkpoint was drawn with (with_state).
        stream = COMPILED_STREAM if compiled is True else self.stream
        return replace(self, precision=precision, compile=compiled, chosen=chosen,
                       stream=stream)

    def state_dict(self) -> dict[str, float]:
        return {"random_stream": float(STREAMS.index(self.stream))}

    def with_state(self, state: dict[str, float]) -> "GibbsKernel":
        stream = STREAMS[int(state.get("random_stream", 0))]
        # The fp32 draw makes SplitMix64's words cheaply only inside its compiled loop
        # (eagerly ~10x the cost of SFC64's): a kernel that continues that stream compiles.
        # A bf16 kernel keeps its setting: its stored words cost ~2.3x SFC64's eagerly (2.4
        # against 1.0 ms for a 2,000 x 784 draw's, AMD EPYC, 2026-12-07), a small part of an
        # eager bf16 draw, and a short `raybm sample` need not pay a compilation.
        forced = stream == COMPILED_STREAM and self.precision != "bf16"
        compiled = True if forced else self.compile
        return replace(self, stream=stream, compile=compiled)

    def init(self, gen: torch.Generator, model: RBM, n: int,
             label: torch.Tensor | None = None) -> WalkerState:
        """Walkers from the uniform distribution (labels uniform too unless given)."""
        return init_uniform(gen, model, n, label=label, stream=self.stream)

    def step(self, gen: torch.Generator, state: WalkerState, model: RBM, k: int, *,
             clamp_label: bool = False, clamp_visible: bool = False
             ) -> tuple[WalkerState, KernelInfo]:
        """``k`` sweeps (see :func:`step`); ``auto`` not yet resolved by the trainer (a
        kernel built outside a run) is resolved for the walkers' device."""
        out, _ = step(gen, state, model, k, clamp_label=clamp_label,
                      clamp_visible=clamp_visible, precision=self._runs_at(model, state.x),
                      stream=self.stream, compiled=self.compile is True)
        return out, KernelInfo()

    @property
    def compiled(self) -> bool:  # type: ignore[override]
        """Its draws run compiled (``compile`` resolved to True by :meth:`for_run`)."""
        return self.compile is True

    def label_chain(self, gen: torch.Generator, model: RBM, x: torch.Tensor,
                    label: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` label sweeps with the visibles clamped to ``x``: the labels and the
        visibles' hidden field ``x W`` (see :func:`label_chain`)."""
        return label_chain(gen, model, x, label, k, self._runs_at(model, x), self.stream,
                           self.compile is True)

    def _runs_at(self, model: RBM, x: torch.Tensor) -> str:
        """The precision of this kernel's sweeps on ``x``'s device."""
        if self.precision != "auto":
            return self.precision
        width = bf16_width(model)
        return resolve_precision("auto", bf16_native(x.device) and width >= AUTO_BF16_MIN_WIDTH,
                                 int8_exact(x.device) and width >= AUTO_DIGITS_MIN_WIDTH)


@torch.no_grad()
def generate(gen: torch.Generator, model: RBM, n: int, k: int,
             label: int | torch.Tensor | None = None, precision: str = "fp32") -> torch.Tensor:
    """``k`` Gibbs sweeps from the uniform distribution (the F&F generation protocol).

    With a label unit, ``label`` (an int or an ``(n,)`` tensor) is clamped; without one given,
    the label is sampled along with the other units. Returns the visibles, ``(n, N)`` uint8.
    """
    if isinstance(label, int):
        label = torch.full((n,), label, dtype=torch.long)
    kernel = GibbsKernel(precision)
    state = kernel.init(gen, model, n, label=label)
    state, _ = kernel.step(gen, state, model, k, clamp_label=label is not None)
    return state.x

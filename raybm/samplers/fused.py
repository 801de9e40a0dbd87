"""The elementwise half of a Bernoulli half-step, eager or fused by ``torch.compile``.

After the bf16 matmul ``y = x @ W``, the fast draw (``random_bits``) is

    h = [u 2^-16 + 1/2 < sigmoid(y + b)],      u uniform int16 in [-2^15, 2^15),

which is ``h ~ Bernoulli(sigmoid(x W + b))`` up to a ``2^-16`` quantisation. The uniforms come
packed two per int32 (``uniform16_pairs``: the top half of the rows reads the low 16 bits, the
bottom half the high 16 bits). Eagerly this is about five passes over the ``(n, m)`` field
(cast to float32, bias add, sigmoid, the uniforms' cast, the compare); ``torch.compile``
(Inductor) fuses them into one vectorised loop that reads ``y`` and the words and writes the
0/1 result, with no float temporaries. (Unpacking with shifts rather than int16 views is what
lets Inductor vectorise it: it does not vectorise int16 loads.) The fp32 reference draw,
``[u < sigmoid(z)]`` on 24-bit uniforms, is fused the same way (:func:`exact_field`), from the
same words and with the same arithmetic as its eager kernel.

The keyed form (:func:`exact_field_keyed`) takes no words: element ``(i, j)`` reads word
``i m + j`` of a SplitMix64 stream (``random_bits.splitmix_grid``), a function of its index
that the compiled loop computes in registers. Stored words are made by numpy's SFC64 in one
thread and read back from memory: a fp32 784 x 512, 2,000-walker sweep's draws took 6.3 ms so
and 2.5 ms keyed (``random_bits.splitmix_grid``); the runs that compile draw from SplitMix64
(``GibbsKernel.for_run``). bf16's 16-bit uniforms take four per word, and its loop reads
stored words faster than it makes them (Inductor hashes a word once per draw, not once per
four), so the compiled bf16 draws read SplitMix64 words that a loop of their own stores
first (:func:`splitmix_words`, both cores, ~8x faster than SFC64 in one thread). F&F's label
sweeps (:func:`label_sweep`) make the reference draw from one SplitMix64 word per two hidden
units in their own loop, in both precisions.

Compilation is per kernel (``sampler.compile``: ``auto``, the default, turns it on for runs
long enough to pay for it, ``GibbsKernel.for_run``), or everywhere with ``RAYBM_COMPILE=1`` in
the environment or :func:`set_compile`: the first call per shape costs ~15 s of C++
compilation, which tests and short runs should not pay. If compiling fails (no compiler, an
unsupported platform) the eager kernel is used from then on, with one warning, and
:func:`compile_status` says why. Both give the same
draws up to float rounding (where a uniform sits within an ulp of its threshold).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from raybm.samplers.compile_cache import tag_compile_caches
from raybm.samplers.digits import combine_blocks
from raybm.samplers.random_bits import (
    bernoulli_u16,
    unit_uniform24_,
    categorical_inverse_cdf,
    high_words,
    pair_halves,
    paired_word_halves,
    paired_words,
    splitmix_grid,
)
from raybm.samplers.scratch import Scratch

_enabled = os.environ.get("RAYBM_COMPILE", "") == "1"
# The compiled form of each kernel function, made on its first call (compiling costs seconds).
_cache: dict[Callable, Callable] = {}
_failure: str | None = None


def set_compile(enabled: bool) -> None:
    """Switch the ``torch.compile`` kernel on or off for this process (clears a past failure)."""
    global _enabled, _failure
    _enabled = enabled
    _failure = None


def compile_status() -> str:
    """"off", "on", or "failed: <reason>" (then the eager kernel runs)."""
    if _failure is not None:
        return f"failed: {_failure}"
    return "on" if _enabled else "off"


class ClampedField(NamedTuple):
    """A hidden field with the visibles clamped (a label chain), left for the draw to form:
    ``rows[label] + fixed``, with ``fixed`` the ``(n, m)`` field of the clamped visibles
    (``x W``, plus the hidden bias for the exact draw), ``rows`` the ``(L, m)`` label rows
    ``D`` and ``label`` the walkers' int64 labels. A compiled draw gathers and adds inside
    its loop, so no ``(n, m)`` field is written and read back (a gather, an add and a bias
    pass: ~0.45 of a 2,000 x 512 label sweep's ~2.6 ms outside the draw, Intel Xeon,
    2026-12-06); an eager one forms it first (:func:`formed`)."""

    fixed: torch.Tensor
    rows: torch.Tensor
    label: torch.Tensor


class DigitField(NamedTuple):
    """A field left as the int32 sums of a digit product (``sampler.precision: digits``,
    :mod:`raybm.samplers.digits`): ``sums`` ``(n, 3 width)`` and the ``(m,)`` column
    scales, ``m <= width`` (a prefix of the columns: a visible draw leaves the label columns
    out). A compiled draw combines the three blocks inside its loop, so the float32
    ``(n, m)`` field is never written and read back; an eager one forms it first."""

    sums: torch.Tensor
    scale: torch.Tensor


Field = torch.Tensor | ClampedField | DigitField


def formed(z: Field, out: torch.Tensor | None = None) -> torch.Tensor:
    """``z`` as a tensor: a :class:`ClampedField` gathered and added, a :class:`DigitField`
    combined (into ``out`` when given), a tensor as it is."""
    if isinstance(z, ClampedField):
        return torch.index_select(z.rows, 0, z.label, out=out).add_(z.fixed)
    if isinstance(z, DigitField):
        field = _form(tuple(z))
        return field if out is None else out.copy_(field)
    return z


def _form(z: torch.Tensor | tuple) -> torch.Tensor:
    # Traced inside the compiled kernels (a ClampedField or DigitField arrives as a tuple,
    # told apart by length): the gather and the add, or the digits' combination, become
    # part of the draw's loop.
    if isinstance(z, tuple):
        if len(z) == 2:
            sums, scale = z
            return combine_blocks(sums, scale, sums.shape[1] // 3, scale.shape[0])
        fixed, rows, label = z
        return rows[label] + fixed
    return z


def _fixed(z: Field) -> torch.Tensor:
    return z.fixed if isinstance(z, ClampedField) else z


def _shape(z: torch.Tensor | tuple) -> tuple[int, int]:
    # (n, m) of a field, a ClampedField or a DigitField, plain tuples included (traced).
    if isinstance(z, tuple):
        if len(z) == 2:
            return z[0].shape[0], z[1].shape[0]
        return z[0].shape
    return z.shape


def field_shape(z: Field) -> tuple[int, int]:
    n, m = _shape(z)
    return n, m


def _arg(z: Field) -> torch.Tensor | tuple:
    return tuple(z) if isinstance(z, ClampedField) else z


def _fused(y: torch.Tensor, bias: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    # Rows [0, R) and [R, 2R) of the draw as one (2, R, m) broadcast against the words: the
    # low halves are (w << 16) >> 16, the high halves (w << 0) >> 16 (arithmetic shifts, so
    # both are sign-extended int16 values). One pointwise expression -> one Inductor loop;
    # float32 math and bf16 0/1 out, as in the eager kernel.
    # [u < 1 / (1 + e^-z)] is evaluated as [u + u e^-z < 1]: the same set in exact arithmetic
    # (differing only where u is within rounding of p), without a division per element
    # (~20% of this loop here).
    y = _form(y)
    r, m = words.shape
    shift = torch.tensor([16, 0], dtype=torch.int32, device=words.device).view(2, 1, 1)
    k = torch.bitwise_right_shift(torch.bitwise_left_shift(words.unsqueeze(0), shift), 16)
    u = k.to(torch.float32) * 2.0**-16 + 0.5
    e = torch.exp(-(y.view(2, r, m).to(torch.float32) + bias))
    # where(.., 1.0, 0.0) then bf16: Inductor's direct bool -> bf16 cast is several times
    # slower than the compare itself on this project's CPUs.
    h = torch.where(u + u * e < 1.0, 1.0, 0.0)
    return h.to(torch.bfloat16).view(2 * r, m)


def _fused_exact(z: torch.Tensor, bias: torch.Tensor, words: torch.Tensor,
                 out: torch.Tensor) -> None:
    # The reference draw [u < sigmoid(z + b)], u = (w >> 8) 2^-24 + 1/2 on torch.rand's 24-bit
    # grid, as the eager kernel computes it (same uniforms, same sigmoid-then-compare), in one
    # loop: the eager kernel's shift, int -> float add, sigmoid and compare are four passes
    # over the field with two hidden casts (~2.3 of a 784 x 512, 2,000-walker sweep's ~4.5 ms
    # outside its matmuls, Intel Xeon, 2 threads, 2026-12-05). Writing ``out`` inside the
    # compiled function lets Inductor store into it (also a strided column block) directly.
    # The bias is added here, not by the matmul: addmm(b, x, W, out=) first writes b into
    # every row of out (a pass over the field, ~0.66 ms of a 2,000 x 784 fp32 half-step,
    # Intel Xeon, 2026-12-06), where this loop adds it for free.
    out.copy_(_exact_states(z, bias, words))


def _exact_states(z: torch.Tensor | tuple, bias: torch.Tensor, words: torch.Tensor
                  ) -> torch.Tensor:
    # The draw's expression, traced into every compiled kernel that makes exact states.
    u = torch.bitwise_right_shift(words, 8).to(torch.float32) * 2.0**-24 + 0.5
    return torch.where(u < torch.sigmoid(_form(z) + bias), 1.0, 0.0)


def _keyed_words(z: torch.Tensor | tuple, key: torch.Tensor) -> torch.Tensor:
    # The exact draw's words made in the loop: element (i, j) takes word i m + j of the
    # SplitMix64 stream ``key`` (its high 32 bits), computed in registers, never stored.
    # Not paired as in the label sweep (random_bits.paired_words): stores into the two
    # column halves of ``out`` became one loop over all m columns with the word hashed per
    # element, 1.03 -> 1.46 ms for a 2,000 x 512 draw (Intel Xeon with AMX, 2026-12-06).
    n, m = _shape(z)
    return high_words(splitmix_grid(key, n, m))


def _fused_exact_keyed(z: torch.Tensor, bias: torch.Tensor, key: torch.Tensor,
                       out: torch.Tensor) -> None:
    _fused_exact(z, bias, _keyed_words(z, key), out)


def _fused_exact_digits(z: tuple, bias: torch.Tensor, words: torch.Tensor,
                        out: torch.Tensor) -> None:
    # _fused_exact on a DigitField: a function of its own, so its compiled graphs (int32
    # sums in, int8 walkers out) do not spend the tensor fields' recompile budget (torch's
    # limit of 8 per function; past it a kernel runs eagerly).
    _fused_exact(z, bias, words, out)


def _fused_exact_keyed_digits(z: tuple, bias: torch.Tensor, key: torch.Tensor,
                              out: torch.Tensor) -> None:
    _fused_exact(z, bias, _keyed_words(z, key), out)


def _fused_into(y: torch.Tensor, bias: torch.Tensor, words: torch.Tensor,
                out: torch.Tensor) -> None:
    # The fast draw stored by its own loop into ``out`` (a column block of a walker layout
    # with labels): returned and then copied, the (n, N) result was written and read once
    # more, ~0.6 ms a 2,000 x 784 visible draw (Intel Xeon, bf16, 2026-12-06).
    out.copy_(_fused(y, bias, words))


def _splitmix_words(key: torch.Tensor, out: torch.Tensor) -> None:
    # Words 0 .. len(out) - 1 of the stream, each hashed from its index alone: one
    # vectorised loop over both cores, stored into the reused buffer.
    out.copy_(splitmix_grid(key, 1, out.shape[0]).view(-1))


def _compiled(fn: Callable) -> Callable:
    if fn not in _cache:
        # The gradient statistics see a new row count at every F&F update (the rows whose
        # sampled label is not their own): compiled once for any shape, where a static
        # compile per shape would recompile until torch's limit and then run eagerly. The
        # label sweep, one function for both field dtypes and both parities of the hidden
        # width, would reach that limit (a hard failure under fullgraph) in a process that
        # sees a few models; dynamic, it runs as fast (1.13 against 1.12-1.31 ms static,
        # 2,000 x 512 fp32, Intel Xeon with AMX, 2026-12-06).
        dynamic = (True if fn in (_stats_fields, _softplus_sums, _label_sweep_keyed,
                                  _label_sweep_keyed_bf16, _splitmix_words) else None)
        # Compiled kernels are cached under this CPU's and instruction set's key only
        # (another's served from Inductor's cache computed garbage: compile_cache).
        tag_compile_caches()
        _cache[fn] = torch.compile(fn, fullgraph=True, dynamic=dynamic)
    return _cache[fn]


def _on(compiled: bool) -> bool:
    return (_enabled or compiled) and _failure is None


def runs_compiled(compiled: bool) -> bool:
    """Whether a kernel asked with ``compiled`` runs compiled (on, and nothing failed)."""
    return _on(compiled)


def _no_bias(z: Field, bias: torch.Tensor | None) -> torch.Tensor:
    # One graph per kernel: a field given with its bias in gets a zero one (x + 0 = x).
    if bias is not None:
        return bias
    device = z[0].device if isinstance(z, tuple) else z.device
    return torch.zeros(field_shape(z)[1], dtype=torch.float32, device=device)


def exact_field(z: Field, words: torch.Tensor, out: torch.Tensor,
                compiled: bool = False, bias: torch.Tensor | None = None
                ) -> torch.Tensor | None:
    """The fp32 reference draw ``[u < sigmoid(z + bias)]`` by the ``torch.compile`` kernel,
    written into ``out`` (float32 0/1, or int8 for the digits' walkers; ``z``: float32
    ``(n, m)``, may be a column slice, or a :class:`ClampedField` or :class:`DigitField`; ``bias``: ``(m,)``, or None for a field with its bias in;
    ``words``: int32 ``(n, m)``, the uniforms' 32-bit words, as
    ``random_bits.unit_uniform24_`` reads them), or None where it does not run (compilation
    off or failed): the caller's eager kernel then draws, from the same words, the same
    states up to a sigmoid's last bit."""
    if not _on(compiled):
        return None
    fn = _fused_exact_digits if isinstance(z, DigitField) else _fused_exact
    _try(_compiled(fn), _arg(z), _no_bias(z, bias), words, out)  # sets _failure
    return None if _failure is not None else out


def exact_field_keyed(z: Field, key: torch.Tensor, out: torch.Tensor,
                      compiled: bool = False, bias: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """:func:`exact_field` with the words of the SplitMix64 stream ``key``
    (``random_bits.splitmix_key``) made inside the compiled loop; eagerly (compilation off
    or failed) the same words are made first (``random_bits.splitmix_grid``, ~10x slower)
    and drawn from as the eager kernel does: the same states up to a sigmoid's last bit."""
    if _on(compiled):
        fn = _fused_exact_keyed_digits if isinstance(z, DigitField) else _fused_exact_keyed
        _try(_compiled(fn), _arg(z), _no_bias(z, bias), key, out)
        if _failure is None:
            return out
    n, m = field_shape(z)
    return _exact_eager(z, bias, high_words(splitmix_grid(key, n, m)), out)


def _exact_eager(z: Field, bias: torch.Tensor | None, words: torch.Tensor,
                 out: torch.Tensor) -> torch.Tensor:
    # The exact draw eagerly: uniforms made in ``out`` from ``words``, then compared (in a
    # float32 copy where ``out`` holds int8 walkers: the digits path's layout).
    field = formed(z) if bias is None else formed(z) + bias
    if out.dtype != torch.float32:
        u = unit_uniform24_(words, out=torch.empty(words.shape, device=words.device))
        return out.copy_(u.lt_(torch.sigmoid(field)))
    return unit_uniform24_(words, out=out).lt_(torch.sigmoid(field))


def _eager(
    y: torch.Tensor,
    bias: torch.Tensor,
    words: torch.Tensor,
    out: torch.Tensor | None,
    scratch: Scratch | None,
) -> torch.Tensor:
    n, m = y.shape
    r = words.shape[0]
    if scratch is None:
        scratch = Scratch()
    # float32 probabilities in a scratch buffer (y is never modified). copy_ then add_ rather
    # than add(out=): a mixed bf16/float32 add would first cast y into a fresh temporary.
    dev = y.device
    p = scratch.get("p", (n, m), torch.float32, dev).copy_(y).add_(bias).sigmoid_()
    if out is None:
        out = scratch.get("out", (n, m), torch.bfloat16, dev)
    u = scratch.get("u", (r, m), torch.float32, dev)
    lo, hi = pair_halves(words, n)
    bernoulli_u16(p[:r], lo, out=out[:r], scratch=u)
    bernoulli_u16(p[r:], hi, out=out[r:], scratch=u[: n - r])
    return out


def _fused_categorical(y: torch.Tensor, bias: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    # Inverse CDF without normalising: state = #{k < q-1 : e_0 + ... + e_k < u sum(e)}, with
    # e = exp(z - max z). The loop over the q states unrolls at trace time into one loop nest
    # (no (n, N, q) cumulative array, no divisions); its last partial sum is never compared,
    # so the state is at most q - 1 whatever the rounding.
    n, sites = u.shape
    q = bias.shape[0] // sites
    z = (y.to(torch.float32) + bias).view(n, sites, q)
    e = torch.exp(z - z.amax(-1, keepdim=True))
    target = u * e.sum(-1)
    acc = e[..., 0]
    count = torch.where(acc < target, 1.0, 0.0)  # counted in float: cheaper than bool casts
    for k in range(1, q - 1):
        acc = acc + e[..., k]
        count = count + torch.where(acc < target, 1.0, 0.0)
    return count.to(torch.int64)


def categorical_field(y: torch.Tensor, bias: torch.Tensor, u: torch.Tensor,
                      compiled: bool = False) -> torch.Tensor:
    """Potts visibles ``v_i ~ softmax_s(y + bias)_{i,s}`` by inverse CDF, int64 ``(n, N)``.

    ``y``: ``(n, N q)`` field from the matmul, site-major (bf16 or float32, not modified);
    ``bias``: ``(N q,)`` float32; ``u``: ``(n, N)`` float32 uniforms in ``[0, 1)``. The
    compiled and eager kernels normalise differently (sum of exponentials vs. softmax), so a
    draw may differ where ``u`` falls within rounding of a cumulative probability.
    """
    if _on(compiled):
        state = _try(_compiled(_fused_categorical), y, bias, u)
        if state is not None:
            return state
    logits = torch.add(y, bias).view(u.shape[0], u.shape[1], -1)
    return categorical_inverse_cdf(logits, u)


def _try(fn: Callable, *args: torch.Tensor) -> torch.Tensor | None:
    """Run a compiled kernel; on any failure remember why, warn once, and return None."""
    global _failure
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
        _failure = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        warnings.warn(f"raybm: torch.compile of a Gibbs kernel failed, running eagerly "
                      f"({_failure})", RuntimeWarning, stacklevel=3)
        return None


def bernoulli_field(
    y: Field,
    bias: torch.Tensor,
    words: torch.Tensor,
    out: torch.Tensor | None = None,
    scratch: Scratch | None = None,
    compiled: bool = False,
) -> torch.Tensor:
    """``[u 2^-16 + 1/2 < sigmoid(y + bias)]`` as bf16 0/1 (into ``out`` when given);
    ``compiled``: by the ``torch.compile`` kernel (as everywhere with ``RAYBM_COMPILE=1``).

    ``y``: ``(n, m)`` field from the matmul (bf16 or float32, not modified; column slices of a
    wider field are fine), or a :class:`ClampedField`; ``bias``: ``(m,)`` float32, broadcast
    over rows; ``words``: the
    ``(ceil(n/2), m)`` int32 of :func:`raybm.samplers.random_bits.uniform16_pairs`.
    ``scratch``: the eager kernel's temporaries (and its result when ``out`` is None), reused
    from call to call. The compiled kernel needs an even ``n``; odd ``n`` runs eagerly (same
    draws).
    """
    if _on(compiled) and field_shape(y)[0] % 2 == 0:
        h = _compiled_draw(_fused, _fused_into, y, bias, words, out)
        if h is not None:
            return h
    return _eager(formed(y), bias, words, out, scratch)


def _compiled_draw(fn: Callable, fn_into: Callable, y: Field, bias: torch.Tensor,
                   source: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor | None:
    # The compiled fast draw, stored into ``out`` by its own loop where given; None where
    # compilation failed (the caller draws eagerly from the same source).
    if out is None:
        return _try(_compiled(fn), _arg(y), bias, source)
    _try(_compiled(fn_into), _arg(y), bias, source, out)
    return out if _failure is None else None


def splitmix_words(key: torch.Tensor, out: torch.Tensor, compiled: bool = False
                   ) -> torch.Tensor:
    """Words ``0 .. len(out) - 1`` of the SplitMix64 stream ``key``
    (``random_bits.splitmix_key``) written into the int64 ``(n,)`` ``out`` and returned: the
    words :func:`random_bits.random_words` gives on the ``splitmix64`` stream, for the bf16
    draws (:func:`bernoulli_field`) of the runs that compile. ``compiled``: one loop over
    both cores (~10 integer operations per word, every word independent); eagerly
    (compilation off or failed) ``random_bits.splitmix_grid``'s ten passes, the same words.

    A 2,000 x 784 bf16 draw's 392,000 words took 0.12 ms so, against 1.04 ms from numpy's
    SFC64 in one thread (``random_bits.random_words``), and a 2,000 x 512 draw's 0.07
    against 0.61 ms (AMD EPYC with avx512_bf16, 2 threads, 2026-12-07): ~14 ms of a PCD-10
    update's ten sweeps there. The draw's own loop does not make them as cheaply: Inductor
    hashed each word once per draw there, not once per four (ten bf16 sweeps 55.4-56.1
    against 53.3-53.5 ms from SFC64's stored words, Intel Xeon, 2026-12-07)."""
    if _on(compiled):
        _try(_compiled(_splitmix_words), key, out)
        if _failure is None:
            return out
    _splitmix_words(key, out)
    return out


def _categorical(logits: list[torch.Tensor], u: torch.Tensor) -> torch.Tensor:
    # l ~ softmax(logits) by the inverse CDF of _fused_categorical, from the L logits as
    # separate (n,) expressions (unrolled at trace time: one loop nest, nothing stored).
    top = logits[0]
    for z in logits[1:]:
        top = torch.maximum(top, z)
    e = [torch.exp(z - top) for z in logits]
    total = e[0]
    for x in e[1:]:
        total = total + x
    target = u * total
    acc = e[0]
    count = torch.where(acc < target, 1.0, 0.0)
    for x in e[1:-1]:
        acc = acc + x
        count = count + torch.where(acc < target, 1.0, 0.0)
    return count.to(torch.int64)


def _label_sweep_keyed(z: torch.Tensor | tuple, bias: torch.Tensor, key: torch.Tensor,
                       down: torch.Tensor, lbias: torch.Tensor, u: torch.Tensor
                       ) -> torch.Tensor:
    # Columns j and j + h of a row share word i h + j (its high and low halves,
    # random_bits.paired_words): the loop runs over the (n, h) words, each hashed once for
    # two draws, and the L logits are L row sums of both halves' h_j D_lj in one
    # reduction, so the 0/1 hiddens live in registers and are never stored. Two separate
    # sums (odd m, where the halves differ in width) make Inductor hash in each of two
    # loops: the same draws at the unpaired cost.
    n, m = (z[0] if isinstance(z, tuple) else z).shape
    high, low = paired_word_halves(key, n, m)
    h = high.shape[1]
    field = _form(z)
    first = _exact_states(field[:, :h], bias[:h], high)
    second = _exact_states(field[:, h:], bias[h:], low)
    if m == 2 * h:
        logits = [(first * down[s, :h] + second * down[s, h:]).sum(-1) + lbias[s]
                  for s in range(down.shape[0])]
    else:
        logits = [(first * down[s, :h]).sum(-1) + (second * down[s, h:]).sum(-1) + lbias[s]
                  for s in range(down.shape[0])]
    return _categorical(logits, u)


def _label_sweep_keyed_bf16(z: torch.Tensor | tuple, bias: torch.Tensor, key: torch.Tensor,
                            down: torch.Tensor, lbias: torch.Tensor, u: torch.Tensor
                            ) -> torch.Tensor:
    # The same sweep on a bf16 field: a function of its own, so that its compiled graphs
    # (a few per process: each hidden width's parity) count against torch's recompile limit
    # apart from the float32 field's.
    return _label_sweep_keyed(z, bias, key, down, lbias, u)


def label_sweep(z: Field, bias: torch.Tensor, key: torch.Tensor, down: torch.Tensor,
                lbias: torch.Tensor, u: torch.Tensor, compiled: bool = False) -> torch.Tensor:
    """One label sweep with the visibles clamped, ``h ~ p(h | z + bias)`` then
    ``l ~ softmax(h D + c)``, returning the labels (int64 ``(n,)``).

    ``z``: the hidden field without bias (a :class:`ClampedField`, or its formed tensor;
    float32, or the bf16 product of the fast path); ``key``: a SplitMix64 stream
    (``random_bits.splitmix_key``), whose words :func:`random_bits.paired_words` lays out
    over the ``(n, m)`` draw; ``down``: ``D`` as float32 ``(L, m)``, one contiguous row per
    label; ``lbias``: ``c``; ``u``: a uniform per row for the categorical draw.

    The hidden draw is the fp32 reference ``[u < sigmoid(z + b)]`` on 24-bit uniforms, on a
    bf16 field too: made in the loop, its words cost less than the fast draw's 16-bit
    uniforms read from memory (a 2,000 x 512 sweep: 1.24 ms, against 0.60 ms of SFC64
    words plus a 0.85 ms draw; Intel Xeon with AMX, 2026-12-06), and one hash serves two
    draws (1.21 -> 1.01 ms). Compiled, the draw, the ``L`` logits and the inverse-CDF draw
    are one loop nest: the hidden states are never stored, where separate kernels wrote
    them (4 MB in fp32 at 2,000 x 512), read them back for an ``(n, m) x (m, L)`` product
    that runs far below the matmul's speed at ``L = 10``, and made the logits in a third
    pass. Eagerly (off, or compilation failed) those three steps, from the same words: the
    same labels up to float rounding."""
    if _on(compiled):
        sweep = (_label_sweep_keyed_bf16 if _fixed(z).dtype == torch.bfloat16
                 else _label_sweep_keyed)
        label = _try(_compiled(sweep), _arg(z), bias, key, down, lbias, u)
        if label is not None:
            return label
    n, m = field_shape(z)
    h = _exact_eager(z, bias, paired_words(key, n, m), torch.empty(n, m, device=bias.device))
    return categorical_inverse_cdf(torch.addmm(lbias, h, down.T), u)


def _stats_z(y: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None,
             cond: torch.Tensor | None) -> torch.Tensor:
    # z = y + b (+ D_l): (n, M), or (n, r, M) for r labels per row.
    z = y.to(bias.dtype) + bias
    if rows is not None and cond is not None:
        z = (z.unsqueeze(1) + rows[cond]) if cond.dim() == 2 else z + rows[cond]
    return z


def _stats_operand(p: torch.Tensor, coef: torch.Tensor, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    # c p, and the second product's operand [sum_r c p | sum_r c] in the matmul dtype. Each
    # part is cast before the concatenation (the same values: a cast is per element):
    # Inductor then writes the operand once in dtype, where a cast after it wrote a float32
    # copy and read it back in a pass of its own.
    c = coef.to(p.dtype)
    cp = p * c.unsqueeze(-1)
    row_p, row_c = (cp.sum(1), c.sum(1)) if cp.dim() == 3 else (cp, c)
    return cp, torch.cat([row_p.to(dtype), row_c.unsqueeze(1).to(dtype)], 1)


def _stats_fields(y: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None,
                  cond: torch.Tensor | None, coef: torch.Tensor, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    # c sigmoid(z) and the operand as one loop nest: the gradient's part.
    z = _stats_z(y, bias, rows, cond)
    return _stats_operand(torch.sigmoid(z), coef, dtype)


def _softplus_sums(y: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None,
                   cond: torch.Tensor | None) -> torch.Tensor:
    # sum_j softplus(z_j) per row and label: the value's part, a loop of its own.
    return torch.nn.functional.softplus(_stats_z(y, bias, rows, cond)).sum(-1)


def stats_fields(y: torch.Tensor, bias: torch.Tensor, rows: torch.Tensor | None,
                 cond: torch.Tensor | None, coef: torch.Tensor, dtype: torch.dtype,
                 compiled: bool = False, value: bool = True
                 ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The elementwise half of an RBM's closed-form gradient (``RBM.weighted_energy_gradient``):
    with ``z = y + b + D_l`` (``y``: the ``(n, M)`` product ``x W``, float32 or bf16;
    ``rows``: the label rows ``D``, or None; ``cond``: ``(n,)`` labels or ``(n, r)``, ``r``
    per row, giving ``z`` of shape ``(n, r, M)``), ``sum_j softplus(z_j)`` (``(n,)`` or
    ``(n, r)``; None without ``value``) and ``c p = coef * sigmoid(z)`` (``z``'s shape), in
    ``bias``'s dtype, and the operand of the product ``X^T [c P | c]``:
    ``[sum_r c p | sum_r coef]``, ``(n, M + 1)`` in ``dtype``. Compiled, one pass over
    ``z`` for the gradient's part and one more for the value; eagerly, a pass per operation.
    Both compute the same values up to float rounding.

    The value (only the loss's, which a step never reads) is a kernel of its own, so that
    the gradient's bits do not depend on whether it is asked for: the trainer asks on the
    updates it logs, and a resumed run logs at other updates than the uninterrupted run it
    must continue exactly. A 4,000 x 512 bf16 generation contrast with labels took 2.6 ms
    compiled as one loop nest with the value and a cast after the concatenation (a float32
    copy of the operand and a pass to convert it, in Inductor's code), ~1.0-1.2 ms for the
    gradient's part with the operand cast in parts, and ~1.0-1.7 ms more for the value
    (medians of 40, two runs, Intel Xeon with AMX, 2026-12-07)."""
    if _on(compiled):
        out = _try(_compiled(_stats_fields), y, bias, rows, cond, coef, dtype)
        if out is not None:
            sp = _try(_compiled(_softplus_sums), y, bias, rows, cond) if value else None
            if value and sp is None:  # its compilation failed: this once, eagerly
                sp = _softplus_sums(y, bias, rows, cond)
            return sp, *out
    cp, operand = _stats_fields(y, bias, rows, cond, coef, dtype)
    return (_softplus_sums(y, bias, rows, cond) if value else None), cp, operand


# Every kernel function compiled here (a test replaces their compiled forms in ``_cache``).
KERNELS = (_fused, _fused_into, _splitmix_words, _fused_exact, _fused_exact_keyed,
           _fused_exact_digits, _fused_exact_keyed_digits,
           _fused_categorical, _stats_fields, _softplus_sums, _label_sweep_keyed,
           _label_sweep_keyed_bf16)

"""Random draws for Gibbs sampling, exact and cheap.

A Bernoulli draw ``v = [u < p]`` needs one uniform per unit. ``torch.rand`` builds a float
per draw, and ``torch.bernoulli`` is slower still (~4.5x slower than ``rand < p`` on this
project's CPUs), so neither is used by the fast path.

Exact path: ``[u < sigmoid(z)]`` with ``u = torch.rand`` in the logits' precision (24-bit
uniforms in float32).

Fast path: four 16-bit uniforms are cut from every 64-bit word of the generator's stream
(:func:`random_words`, :func:`uniform16`), and each is compared with ``p`` at 16-bit
resolution: with ``k`` uniform in ``[0, 2^16)`` (the int16 value plus ``2^15``)::

    P[k 2^-16 < p] = ceil(2^16 p) / 2^16  in  [p, p + 2^-16),

exact at ``p = 0`` and ``p = 1``: a bias below ``2^-16 = 1.5e-5`` per unit, which the tests
check by enumerating all 2^16 values. ``k 2^-16 = u16 2^-16 + 1/2`` is exact in float32 and is
made in one pass from the int16 values (:func:`unit_uniform16`).
"""

from __future__ import annotations

import numpy as np
import torch

_I64_MIN = -(2**63)
_U64_MASK = 2**64 - 1
_HALF = torch.tensor(0.5)  # 0-dim: an int16 tensor plus this promotes to float32 in one pass


# Where random words come from: index 0 is what runs before the choice existed used (their
# checkpoints continue with it, exactly). New runs draw from SFC64 (EAGER_STREAM), or from
# SplitMix64 (COMPILED_STREAM) where their draws run compiled: there the fp32 draw makes the
# words inside its own loop, never stored (:func:`splitmix_grid`), and the bf16 draw reads
# them from a compiled loop that stores them first (``fused.splitmix_words``).
STREAMS = ("mt19937", "sfc64", "splitmix64")
EAGER_STREAM = "sfc64"
COMPILED_STREAM = "splitmix64"
# SplitMix64's output mix (Stafford's "variant 13", as in Steele, Lea & Flood 2014), its
# constants as int64 (torch has no uint64 arithmetic; products wrap modulo 2^64 alike).
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def random_words(gen: torch.Generator, n: int, out: torch.Tensor | None = None,
                 stream: str = "sfc64") -> torch.Tensor:
    """``n`` uniformly random 64-bit words (int64), every bit used.

    ``stream="sfc64"`` on the CPU: one 64-bit word of ``gen`` seeds numpy's SFC64
    (Doty-Humphrey's small fast chaotic generator, which passes BigCrush and PractRand),
    whose raw output gives the ``n`` words: 1.3 ms for 784,000 words against 3.4 ms for
    torch's Mersenne Twister (``random_``) on the Intel Xeon of 2026-12-04, the largest
    non-matmul cost of a Gibbs sweep. The words are a function of ``gen``'s state, which
    advances by one draw, so a checkpointed generator still continues a run exactly.
    ``out`` is then not used (the words are numpy's buffer). ``stream="mt19937"``, or
    another device: the generator draws them itself into ``out[:n]`` (if given):
    ``random_(-2^63, None)`` takes its full-range path (one 64-bit output per element),
    where ``torch.randint(-2^63, 2^63 - 1)`` would reduce every word modulo ``2^64 - 1``.
    ``stream="splitmix64"``: words ``0 .. n-1`` of a fresh :func:`splitmix_key`'s stream.
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
    if stream == COMPILED_STREAM:
        return splitmix_grid(splitmix_key(gen), 1, n).view(n)
    if stream == "sfc64" and gen.device.type == "cpu":
        seed = int(torch.empty((), dtype=torch.int64).random_(_I64_MIN, None, generator=gen))
        raw = np.random.SFC64(seed & _U64_MASK).random_raw(n)
        return torch.from_numpy(raw.view(np.int64))
    if out is None:
        out = torch.empty(n, dtype=torch.int64, device=gen.device)
    return out[:n].random_(_I64_MIN, None, generator=gen)


# Byte -> its 8 bits (least significant first) as 8 uint8 0/1 values, read as one int64.
_BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).to(torch.uint8)
_BYTE_BITS64 = _BYTE_BITS.view(torch.int64).reshape(256)


def unpack_bits(words: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` bits of the int64 ``words`` as uint8 0/1 values, ``(count,)``: bit
    ``j`` of byte ``b`` (in memory order) at ``8 b + j``. One int64 lookup per byte (its 8
    bits), where shifting each byte by ``arange(8)`` and masking took 0.73 ms for an F&F
    start of 2,000 x 784 units and the lookup 0.20 ms (Intel Xeon, 2026-12-07)."""
    table = _BYTE_BITS64.to(words.device)
    return table.index_select(0, words.view(torch.uint8).int()).view(torch.uint8)[:count]


def splitmix_key(gen: torch.Generator) -> torch.Tensor:
    """A fresh SplitMix64 stream, ``(seed, gamma)`` as an int64 tensor on ``gen``'s device,
    from two 64-bit draws of ``gen`` (so a checkpointed generator continues it exactly).

    The gamma is made odd and, where it has fewer than 24 bit transitions
    (``popcount(g ^ (g >> 1))``), XORed with ``0xAAAA...``: the rule by which SplitMix64
    gives a split-off stream its increment (Steele, Lea & Flood 2014, "Fast splittable
    pseudorandom number generators", OOPSLA), which keeps out the increments whose streams
    are weak. Each key is its own stream of period 2^64, so two sweeps' words never
    overlap by construction (random seeds with one fixed increment would start at random
    points of a single cycle).
    """
    raw = torch.empty(2, dtype=torch.int64, device=gen.device).random_(_I64_MIN, None,
                                                                        generator=gen)
    seed, raw = (w & _U64_MASK for w in raw.tolist())
    gamma = raw | 1
    if bin(gamma ^ (gamma >> 1)).count("1") < 24:
        gamma ^= 0xAAAAAAAAAAAAAAAA
    signed = [w - 2**64 if w >= 2**63 else w for w in (seed, gamma)]
    return torch.tensor(signed, dtype=torch.int64, device=gen.device)


def _shift_right_logical(z: torch.Tensor, s: int) -> torch.Tensor:
    # torch's >> on int64 is arithmetic: mask off the copies of the sign bit.
    return torch.bitwise_and(torch.bitwise_right_shift(z, s), (1 << (64 - s)) - 1)


def splitmix_grid(key: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Words ``0 .. rows cols - 1`` of the SplitMix64 stream ``key`` (:func:`splitmix_key`)
    as an int64 ``(rows, cols)`` grid, row-major: word ``i`` is ``mix(seed + (i + 1) gamma)``
    with SplitMix64's output function ``mix`` (two xor-shift-multiplies and an xor-shift;
    Steele, Lea & Flood 2014, who report that SplitMix64 passes TestU01's BigCrush).

    Every word is a function of its index alone, so the compiled fp32 draws
    (``samplers.fused``) compute each element's word inside their own loop, in registers,
    and the bf16 draws read them from a compiled loop of their own that stores them on both
    cores (``fused.splitmix_words``), where SFC64's words (a sequential generator) must be
    made beforehand by numpy, in one thread, and read back from memory: 6.3 ms of a fp32
    784 x 512, 2,000-walker sweep's draws against 2.5 ms (Intel Xeon with AMX, 2 threads,
    2026-12-05). This eager form
    (about ten passes over the words) gives the same words, for the draws' eager fallback
    and for the few words drawn outside the sweeps.
    """
    i = torch.arange(1, rows * cols + 1, dtype=torch.int64, device=key.device)
    z = key[0] + i.view(rows, cols) * key[1]
    z = (z ^ _shift_right_logical(z, 30)) * _MIX1
    z = (z ^ _shift_right_logical(z, 27)) * _MIX2
    return z ^ _shift_right_logical(z, 31)


def high_words(words: torch.Tensor) -> torch.Tensor:
    """The high 32 bits of int64 words as int32 (the part the draws use: SplitMix64's best
    mixed bits)."""
    return torch.bitwise_right_shift(words, 32).to(torch.int32)


def low_words(words: torch.Tensor) -> torch.Tensor:
    """The low 32 bits of int64 words as int32 (a wrapping cast)."""
    return words.to(torch.int32)


def paired_words(key: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The 32-bit words of an ``(n, m)`` draw with two draws per SplitMix64 word, int32
    ``(n, m)``: with ``h = ceil(m / 2)``, element ``(i, j)`` takes the high half of word
    ``i h + j`` of the stream ``key`` for ``j < h`` and the low half of word ``i h + j - h``
    otherwise (for odd ``m`` the low half of each row's last word is not used).

    SplitMix64's whole 64-bit words pass BigCrush (Steele, Lea & Flood 2014), so the two
    halves of a word are two draws' bits (tests/samplers/test_fast_path.py checks every
    bit and the independence of the paired draws), at one hash per two draws: the layout
    of the label sweeps (``fused.label_sweep``), whose compiled loop runs over the
    ``(n, h)`` words and makes both halves' draws from one."""
    return torch.cat(paired_word_halves(key, n, m), 1)


def paired_word_halves(key: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`paired_words` as its two column blocks, ``(n, ceil(m / 2))`` and
    ``(n, m - ceil(m / 2))`` int32, both cut from one ``(n, ceil(m / 2))`` grid of words: the
    form a compiled loop over the words reads (traced, each word is hashed once)."""
    h = (m + 1) // 2
    words = splitmix_grid(key, n, h)
    return high_words(words), low_words(words)[:, : m - h]


def uniform16(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform integers in ``[-2^15, 2^15)`` as int16, four per int64 of the stream."""
    count = 1
    for s in shape:
        count *= s
    return random_words(gen, (count + 3) // 4).view(torch.int16)[:count].view(shape)


def unit_uniform24_(words: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """32-bit words (int32, overwritten) -> uniforms on the 2^24 multiples of 2^-24 in
    ``[0, 1)`` in ``out`` (float): ``(w >> 8) 2^-24 + 1/2``, exactly.

    The grid of ``torch.rand``'s float32 uniforms, at half its cost here: the generator's
    64-bit output feeds two draws, where ``torch.rand`` spends a 32-bit output and a slower
    per-element conversion on each.
    """
    return torch.add(_HALF.to(words.device), words.bitwise_right_shift_(8), alpha=2.0**-24,
                     out=out)


def pair_words(rows: int, cols: int) -> int:
    """How many int64 words :func:`uniform16_pairs` draws for a ``(rows, cols)`` draw."""
    return ((rows + 1) // 2 * cols + 1) // 2


def uniform16_pairs(
    gen: torch.Generator, rows: int, cols: int, out: torch.Tensor | None = None,
    stream: str = "sfc64",
) -> torch.Tensor:
    """16-bit uniforms for a ``(rows, cols)`` draw, packed two per int32: ``(ceil(rows/2), cols)``.

    Row ``i`` of the draw takes the low half of word row ``i`` and row ``R + i`` the high half
    (``R = ceil(rows / 2)``): the halves are whole row blocks, so a vectorised kernel unpacks
    them with two shifts and contiguous loads (int16 loads are not vectorised by Inductor).
    Same stream cost as :func:`uniform16`: four uniforms per int64. ``out``: an int64 buffer
    of at least :func:`pair_words` words to draw into (reused across sweeps).
    """
    return as_pairs(random_words(gen, pair_words(rows, cols), out, stream), rows, cols)


def as_pairs(words: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """:func:`pair_words` int64 words as the ``(ceil(rows/2), cols)`` int32 layout of
    :func:`uniform16_pairs` (a view, no copy)."""
    r = (rows + 1) // 2
    return words.view(torch.int32)[: r * cols].view(r, cols)


def pair_halves(words: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The int16 uniforms of :func:`uniform16_pairs` words as two strided views (no copy):
    ``(R, cols)`` for rows ``[0, R)`` and ``(rows - R, cols)`` for rows ``[R, rows)``.
    (On a little-endian machine, the int16 at even index is the low half of the int32 word.)"""
    r = words.shape[0]
    w16 = words.view(torch.int16)  # (R, 2 cols)
    return w16[:, 0::2], w16[: rows - r, 1::2]


def unit_uniform16(u16: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """int16 uniforms -> float32 ``u16 2^-16 + 1/2``: uniform on the 2^16 multiples of 2^-16
    in ``[0, 1)``, exactly (one fused cast-scale-shift pass)."""
    return torch.add(_HALF.to(u16.device), u16, alpha=2.0**-16, out=out)


def bernoulli_u16(
    prob: torch.Tensor,
    u16: torch.Tensor,
    out: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fast-path draw ``[u < prob]`` with ``u`` from 16-bit uniforms (:func:`uniform16`).

    Written in ``out``'s dtype (bf16 0/1 feeds the next matmul directly), or uint8 when ``out``
    is None. ``scratch``: an optional float32 buffer of ``u16``'s shape for the uniforms.
    """
    u = unit_uniform16(u16, out=scratch)
    if out is None:
        # bool and uint8 are both one byte: the view is free, a .to() would copy.
        return torch.lt(u, prob).view(torch.uint8)
    return torch.lt(u, prob, out=out)


def bernoulli_logits(
    gen: torch.Generator, logits: torch.Tensor, fast: bool = False
) -> torch.Tensor:
    """Draw ``v ~ Bernoulli(sigmoid(logits))`` as uint8.

    Exact path: ``rand < sigmoid(logits)`` in float32. Fast path: 16-bit uniforms (see the
    module docstring).
    """
    p = torch.sigmoid(logits.float())
    if not fast:
        return (torch.rand(p.shape, generator=gen, device=p.device) < p).view(torch.uint8)
    return bernoulli_u16(p, uniform16(gen, tuple(p.shape)))


def categorical_logits(gen: torch.Generator, logits: torch.Tensor) -> torch.Tensor:
    """Draw one state per row of the last axis of ``logits`` (``(..., q)``) as uint8.

    Inverse-CDF: the state is the number of cumulative probabilities below one uniform, which
    needs one uniform per categorical unit (Gumbel-max would need q).
    """
    return categorical_index(gen, logits).to(torch.uint8)


def categorical_index(gen: torch.Generator, logits: torch.Tensor) -> torch.Tensor:
    """As :func:`categorical_logits`, but the state as int64 (an index, ready for gathers)."""
    u = torch.rand(logits.shape[:-1], generator=gen, device=logits.device)
    return categorical_inverse_cdf(logits, u)


def categorical_inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The state whose cumulative probability first reaches ``u`` (``logits``: ``(..., q)``,
    ``u``: ``(...)`` uniform in ``[0, 1)``), int64.

    ``searchsorted`` returns the first state whose cumulative probability reaches ``u``, which
    is the count of cumulative probabilities below ``u``, in one pass and without the
    ``(..., q)`` boolean temporary of a compare-and-sum.

    The cumulative weights are left unnormalised, ``C_s = sum_{t <= s} exp(z_t - max z)``,
    and ``u`` is scaled by their total instead: the same state, ``C_{s-1} < u C_q <= C_s``
    (so at ``u = 0`` exactly, probability 2^-24, the first state whatever its weight, as
    with the normalised form), without ``softmax``, whose CPU kernel is slow on short rows (torch 2.13, 2,000 rows: 0.47
    ms for q = 10 against 0.07 ms for the max, subtraction and exp; the whole draw 0.59 ->
    0.18 ms at q = 10, 77 -> 21 ms for 600,000 rows at q = 4, 21 -> 16 ms at q = 21; Intel
    Xeon, 2026-12-06).
    """
    q = logits.shape[-1]
    z = logits.float()
    cdf = (z - z.amax(-1, keepdim=True)).exp_().cumsum_(-1)
    target = (u * cdf[..., -1]).unsqueeze(-1)
    # Rounding may leave u C_q at C_q: clamp to the last state.
    return torch.searchsorted(cdf, target).squeeze(-1).clamp_(max=q - 1)

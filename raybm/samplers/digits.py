"""Gibbs products from three int8 digits of the couplings: float32-class fields at int8 speed.

Both products of a block-Gibbs sweep have a 0/1 operand (``v [W; D]`` and ``h [W; D]^T``), so
the only rounding they need is the couplings'. Each column ``j`` of a float matrix ``W``
``(K, M)`` is written in three base-127 digits of its own scale,

    W_ij = s_j (q1_ij + q2_ij / 127 + q3_ij / 127^2 + r_ij),   s_j = max_i |W_ij| / 127,

with ``q1`` in ``[-127, 127]``, ``q2, q3`` in ``[-64, 64]`` (rounded remainders) and
``|r| <= 1 / (2 127^2)``. One int8 product of the 0/1 rows against the digits stacked along
the columns, ``x [Q1 | Q2 | Q3]`` (``torch._int_mm``, int32 sums, exact for rows of up to
~130,000 ones), gives ``S1, S2, S3``, and the field is

    z_j = ((S1_j 127 + S2_j) 127 + S3_j) s_j / 127^2

with ``S1 127 + S2`` exact in int32 (rows of up to ~132,000 ones; wider layers are not
split, :func:`split`) and the rest in float32. Its error is at most

    n1 max_i |W_ij| / (2 127^3) + 2^-23 sum_i x_i |W_ij| + 2^-23 |z_j|

for a row of ``n1`` ones: the digits' remainder (``~2^-22`` of the column's largest
coupling per one), float32's rounding of ``W / s`` (and of a float64 ``W`` to float32) that
the digits then hold, and float32's last rounding. That is the class of float32's own
products, which round each partial sum to ``2^-24`` of itself (on a 784 x 512 layer the
largest error against float64 was ~2x float32's product's); bf16, by comparison, keeps 8
bits of each coupling and of the field.

Exact only where oneDNN sums int8 pairs in 32 bits (VNNI, AMX-INT8, and no cap withholding
them: :func:`raybm.models.products.int8_sums_exact`); elsewhere, and off the CPU,
:func:`split` returns None and the sweeps multiply in float32 (``prepared``).

Measured (``benchmarks/train_throughput.py``'s floors, AMD EPYC with avx512_vnni, 2 threads,
2026-12-07, best of 5): a 2,000 x 784 x 512 float32 product 8.1-9.0 ms; the three digits'
int8 products 2.7-3.1 ms (``v W``) and 2.8-2.9 ms (``h W^T``). A PCD-10 update on MNIST took
0.55 of fp32's time (in-process A/B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BASE = 127
# Rows with more ones than this would overflow S1 127 + S2 in int32 (each one adds up to
# 127 127 + 64): such layers are not split (their products stay float32).
_MAX_ONES = (2**31 - 1) // (BASE * BASE + 64)
# Each block of digit columns padded to a multiple of this: oneDNN's int8 kernels tile
# 16-wide (products.digit_product: x 1,026 columns 2.09 ms, x 1,056 1.56 ms).
_PAD = 16


@dataclass(frozen=True)
class Digits:
    """Three int8 digits of each column of a ``(K, M)`` float matrix (module docstring).

    stacked: ``(K, 3 width)`` int8, ``[Q1 | Q2 | Q3]``, each block ``width`` columns wide
             (``M`` padded with zero digits to a multiple of 16).
    scale:   ``(M,)`` float32, ``s_j / 127^2``.
    """

    stacked: torch.Tensor
    scale: torch.Tensor
    width: int

    @property
    def m(self) -> int:
        return self.scale.shape[0]


def available(device: torch.device) -> bool:
    """Whether digit products run exactly on ``device``: a CPU whose oneDNN sums int8 pairs
    in 32 bits (:func:`raybm.models.products.int8_sums_exact`)."""
    # Imported here: raybm.models imports the samplers' kernels, which import this module.
    from raybm.models.products import int8_sums_exact

    return device.type == "cpu" and int8_sums_exact()


def exact_for(rows: int, device: torch.device) -> bool:
    """Whether the digits of a ``(rows, M)`` matrix give exact sums on ``device``: int8
    sums exact there (:func:`available`) and rows short enough for ``S1 127 + S2`` in
    int32."""
    return rows <= _MAX_ONES and available(device)


def column_scale(weight: torch.Tensor) -> torch.Tensor:
    """``max_i |W_ij| / 127`` per column of ``weight`` ``(K, M)``, as float32: the unit of a
    column's first digit. An all-zero column takes 1; a NaN one keeps its NaN, so that a
    non-finite coupling gives non-finite products, as float32's do (the trainer's divergence
    check reads them)."""
    # Two reductions (0.08 ms at 784 x 513, where abs() made a copy and vector_norm(inf)
    # took 0.65 ms).
    scale = torch.maximum(weight.amax(0), weight.amin(0).neg_()).float().div_(BASE)
    return torch.where(scale == 0, torch.ones_like(scale), scale)


@torch.no_grad()
def split(weight: torch.Tensor) -> Digits | None:
    """The digits of ``weight`` ``(K, M)``, or None where they would not be exact here
    (:func:`exact_for`)."""
    if not exact_for(weight.shape[0], weight.device) or weight.numel() == 0:
        return None  # (an empty matrix: nothing to split, its float32 product costs nothing)
    k, m = weight.shape
    # float32: w / s rounds once (2^-24 of the entry: the module docstring's second term),
    # and the remainders' own roundings (times 127, ~2^-24 of a remainder below 64) are
    # far below the digits' error.
    # In float64 with the transposed view read as it lies, both layouts took 21 ms here;
    # so, 2.8 ms (784 x 512 with 10 labels, AMD EPYC, 2 threads, 2026-12-07, busy machine).
    w = weight.detach().to(torch.float32).contiguous()
    scale = column_scale(w)
    width = -(-m // _PAD) * _PAD
    stacked = torch.zeros(k, 3, width, dtype=torch.int8, device=weight.device)
    rest = torch.div(w, scale)
    digit = torch.empty_like(rest)
    for d in range(3):
        torch.round(rest, out=digit)
        if d == 0:
            digit.clamp_(-BASE, BASE)
        stacked[:, d, :m] = digit
        if d < 2:
            rest.sub_(digit).mul_(BASE)  # |.| <= 63.5 after the first digit
    return Digits(stacked=stacked.view(k, 3 * width), scale=scale.div_(BASE**2), width=width)


def sums(x: torch.Tensor, digits: Digits, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [Q1 | Q2 | Q3]`` for int8 0/1 rows ``x`` ``(n, K')``: int32 ``(n, 3 width)``.
    ``K' <= K``: the first ``K'`` rows of the digits (a label unit's rows left out where
    only the visibles' part of a field is wanted)."""
    stacked = digits.stacked if x.shape[1] == digits.stacked.shape[0] else \
        digits.stacked[: x.shape[1]]
    if 1 in x.shape:
        # A single row or column may carry strides torch counts as contiguous but
        # torch._int_mm on the CPU reads wrongly (a (1, n) transposed view: garbage sums, no
        # error; torch 2.13): a compact copy, of n bytes.
        x = x.clone(memory_format=torch.contiguous_format)
    return torch._int_mm(x, stacked, out=out)


def combine(s: torch.Tensor, digits: Digits, start: int = 0) -> torch.Tensor:
    """The float32 field ``(n, M - start)`` of columns ``start ..`` from the int32 sums
    (module docstring)."""
    w = digits.width
    return combine_blocks(s[:, start:], digits.scale[start:], w, digits.m - start)


def combine_blocks(s: torch.Tensor, scale: torch.Tensor, width: int, m: int) -> torch.Tensor:
    """The first ``m`` columns of each digit block of ``s`` (blocks ``width`` apart)
    combined. Pointwise: traced into the compiled draws that form it in their loop
    (``fused.DigitField``)."""
    high = s[:, :m] * BASE + s[:, width : width + m]  # exact in int32
    return (high.to(torch.float32) * BASE + s[:, 2 * width : 2 * width + m]) * scale

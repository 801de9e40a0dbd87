"""Products ``x W`` of 0/1 rows with float weights, exact in integer arithmetic.

A bf16 matmul rounds both ``W`` and its output to 8 significant bits; CPUs give no float32
output for bf16 inputs (``torch.mm``'s ``out_dtype`` is CUDA-only in torch 2.13). Where a 0/1
operand meets float weights whose product must keep more precision (a Jarzynski walker's work,
``RBM.energy_change``), two int8 digits of each column of ``W`` do it at int8 speed:
``W[:, j] = s_j (q1 + q2 / 127 + r)`` with ``s_j = max_i |W_ij| / 127``, ``q1, q2`` int8 and
``|r| <= 1 / 254``. The rows go in twice, ``[127 x | x]``, against the digits stacked,
``[q1; q2]``, so one int8 product (``torch._int_mm``) sums ``127 x q1 + x q2`` exactly in int32
(at most ~16,200 per 1 in a row: exact in float32 too below ~1,000 ones). The product is then
exact up to ``|x| s_j / 254``: ``W`` is kept to ~15 bits of its column's largest entry, where
bf16 keeps 8 of each entry's own.

Exact only where oneDNN multiplies int8 pairs into 32-bit sums (VNNI, AMX-INT8): without
them its s8 x s8 product adds pairs of products in 16 bits, which ``127 x 127`` pairs
overflow (oneDNN issue #717). That is also the case on a CPU with VNNI where oneDNN is capped
below it (``ONEDNN_MAX_CPU_ISA``, :mod:`raybm.cpu`). Elsewhere :func:`digit_product` is a
float32 product. Every CPU with native bf16 (what ``sampler.precision: auto`` asks before it
runs bf16) has VNNI.
``torch._int_mm`` is a private op of torch (the one torchao's int8 kernels call), measured with
the torch the README installs (2.13).

A 2,000 x 784 x 1,025 product took ~3 ms this way (~5 ms right after a training update's
sweeps), against ~11 ms in float32 (Intel Xeon with AMX-INT8, 2 threads, 2026-12-07).
"""

from __future__ import annotations

import functools

import torch

from raybm.cpu import INT8_DOT_ISAS, cpu_flags, matmul_isa
from raybm.samplers.digits import column_scale
from raybm.samplers.scratch import Scratch

_BASE = 127
# Rows with more ones than this could overflow the int32 sums (each 1 adds up to
# 127 * 127 + 64): wider rows take the float32 product.
_MAX_ONES = (2**31 - 1) // (127 * 127 + 64)


@functools.cache
def int8_sums_exact() -> bool:
    """Whether oneDNN sums int8 products here without 16-bit intermediates: the CPU has VNNI or
    AMX-INT8 and no cap on oneDNN withholds them (:func:`raybm.cpu.matmul_isa`); False where
    the flags cannot be read."""
    return matmul_isa(INT8_DOT_ISAS, cpu_flags()) is True


def digit_product(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor | None = None,
                  scratch: Scratch | None = None) -> torch.Tensor:
    """``x @ weight`` for 0/1 ``x`` ``(n, K)`` (any dtype) and float ``weight`` ``(K, M)`` on
    the CPU, as float32 ``(n, M)`` (into ``out`` where given), each entry within
    ``|x_b| max_i |weight_ij| / 32258`` of the exact product (``|x_b|``: the row's count of
    ones; module docstring). ``scratch`` keeps the digits, the doubled rows and the int32
    sums from call to call (fresh, an (n, M) int32 product page-faults in at every call).
    Where int8 sums are not exact (:func:`int8_sums_exact`), a float32 product."""
    (n, k), m = x.shape, weight.shape[1]
    out = torch.empty(n, m) if out is None else out
    if not int8_sums_exact() or k > _MAX_ONES:
        return torch.mm(x.float(), weight.float(), out=out)
    scratch = Scratch() if scratch is None else scratch
    scale = column_scale(weight)  # (a NaN column stays NaN: a divergence stays visible)
    rest = torch.div(weight, scale, out=scratch.get("rest", (k, m), torch.float32))
    # Columns padded with zero digits to a multiple of 16: _int_mm ran a 2,000 x 784 x 1,026
    # product in 2.09 ms and x 1,056 in 1.56 ms.
    width = -(-m // 16) * 16
    digits = scratch.get("digits", (2 * k, width), torch.int8)
    high = torch.round(rest, out=scratch.get("high", (k, m), torch.float32)).clamp_(-127, 127)
    digits[:k, :m].copy_(high)
    digits[k:, :m].copy_(rest.sub_(high).mul_(_BASE).round_())  # |.| <= 64
    digits[:, m:].zero_()
    rows = scratch.get("rows", (n, 2 * k), torch.int8)
    rows[:, :k].copy_(x)
    rows[:, k:].copy_(rows[:, :k])
    rows[:, :k].mul_(_BASE)
    sums = torch._int_mm(rows, digits, out=scratch.get("sums", (n, width), torch.int32))
    return out.copy_(sums[:, :m]).mul_(scale.div_(_BASE))

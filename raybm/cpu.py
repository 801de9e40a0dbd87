"""What this CPU's instruction set offers to torch's matmuls: its flags, from ``/proc/cpuinfo``
(Linux), less what a cap set on oneDNN withholds.

oneDNN, which runs torch's bf16 and int8 matmuls on the CPU, can be capped to an older
instruction set by ``ONEDNN_MAX_CPU_ISA`` (or its former name ``DNNL_MAX_CPU_ISA``), as is done
for the same numerics across a mixed cluster or to mimic an older CPU. The flags then overstate
what it uses. On an AMD EPYC with avx512_bf16 and avx512_vnni (2 threads, torch 2.13,
2026-12-07), capped at ``AVX2``: a 2,000 x 784 x 512 bf16 product took 671 ms against 2.0 ms
uncapped (and 9.1 ms in float32), and ``torch._int_mm`` summed int8 pairs in 16 bits,
saturating (127 x 127 x 1,024 came out 130,560): so precision ``auto`` and the int8-digit
products ask :func:`matmul_isa`, not the flags alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The environment variables oneDNN reads for its cap, in the order it reads them.
ISA_CAP_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
# oneDNN's instruction-set masks (dnnl_cpu_isa_t, oneDNN 3.x docs): an instruction set is
# usable under a cap where its bits are a subset of the cap's. (So AVX512_CORE withholds
# AVX2_VNNI: 0x27 lacks its bit 0x8.)
ONEDNN_ISA = {
    "SSE41": 0x1, "AVX": 0x3, "AVX2": 0x7, "AVX2_VNNI": 0xF, "AVX2_VNNI_2": 0x1F,
    "AVX512_CORE": 0x27, "AVX512_CORE_VNNI": 0x67, "AVX512_CORE_BF16": 0xE7,
    "AVX10_1_512": 0x1EF, "AVX512_CORE_FP16": 0x1EF,
    "AVX10_1_512_AMX": 0xFEF, "AVX512_CORE_AMX": 0xFEF,
    "AVX10_1_512_AMX_FP16": 0x1FEF, "AVX512_CORE_AMX_FP16": 0x1FEF,
    "AVX10_2": 0x201FF, "AVX10_2_512": 0x201FF,
    "AVX10_2_AMX_2": 0x22FFF, "AVX10_2_512_AMX_2": 0x22FFF,
}
# The CPU flag of each instruction set that gives a fast matmul kind, and the oneDNN
# instruction set its kernels need.
BF16_ISAS = {"avx512_bf16": "AVX512_CORE_BF16", "amx_bf16": "AVX512_CORE_AMX"}
INT8_DOT_ISAS = {"avx_vnni": "AVX2_VNNI", "avx512_vnni": "AVX512_CORE_VNNI",
                 "amx_int8": "AVX512_CORE_AMX"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first processor's flags; None where they cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                 if line.startswith("flags")), set())


def isa_cap(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(variable, value)`` of the cap set on oneDNN's instruction sets; None where none is.
    As oneDNN reads it: the first variable set to a non-empty value decides, its case
    ignored; ``ALL``, ``DEFAULT`` and a value oneDNN does not know (it ignores those: an
    unknown name, ``" avx2"`` with its space, measured with torch 2.13's oneDNN) are no cap."""
    environ = os.environ if environ is None else environ
    for name in ISA_CAP_VARIABLES:
        value = environ.get(name, "")
        if value:
            return (name, value) if value.upper() in ONEDNN_ISA else None
    return None


def _allowed(isa: str, environ: Mapping[str, str] | None) -> bool:
    cap = isa_cap(environ)
    if cap is None:
        return True
    mask = ONEDNN_ISA[cap[1].upper()]
    return ONEDNN_ISA[isa] & mask == ONEDNN_ISA[isa]


def matmul_isa(kinds: Mapping[str, str], flags: set[str] | None,
               environ: Mapping[str, str] | None = None) -> bool | None:
    """Whether oneDNN multiplies with one of ``kinds`` (CPU flag -> the oneDNN instruction set
    it needs: :data:`BF16_ISAS`, :data:`INT8_DOT_ISAS`): the CPU has the flag and no cap
    withholds the set. None where the flags are unknown (``flags`` None)."""
    if flags is None:
        return None
    return any(flag in flags and _allowed(isa, environ) for flag, isa in kinds.items())


def withheld_note(kinds: Mapping[str, str], environ: Mapping[str, str] | None = None) -> str:
    """``" (oneDNN capped at AVX2 by ONEDNN_MAX_CPU_ISA)"`` where this CPU has one of
    ``kinds`` and the cap alone withholds it, else ``""``: said beside the decision it made."""
    flags = cpu_flags()
    cap = isa_cap(environ)
    if cap is None or not matmul_isa(kinds, flags, {}) or matmul_isa(kinds, flags, environ):
        return ""
    return f" (oneDNN capped at {cap[1]} by {cap[0]})"

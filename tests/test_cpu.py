"""``raybm.cpu``: which fast matmuls torch's oneDNN may use here (CPU flags less a cap on
oneDNN), read from tables and checked against oneDNN itself in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from raybm import cpu
from raybm.cpu import BF16_ISAS, INT8_DOT_ISAS, isa_cap, matmul_isa, withheld_note

ZEN4 = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}


def test_the_cap_is_read_as_onednn_reads_it():
    assert isa_cap({}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "avx2"}) == ("ONEDNN_MAX_CPU_ISA", "avx2")
    assert isa_cap({"DNNL_MAX_CPU_ISA": "AVX2"}) == ("DNNL_MAX_CPU_ISA", "AVX2")
    # The new name first; ALL / DEFAULT / empty are no cap.
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "DNNL_MAX_CPU_ISA": "AVX2"})[1] == \
        "AVX512_CORE"
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "ALL", "DNNL_MAX_CPU_ISA": "AVX2"}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "", "DNNL_MAX_CPU_ISA": "AVX2"})[1] == "AVX2"
    # Values oneDNN does not know, which it ignores (checked against torch 2.13's oneDNN):
    # no cap, not even from the older variable.
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "NOT_AN_ISA"}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": " avx2", "DNNL_MAX_CPU_ISA": "AVX2"}) is None
    assert isa_cap({"ONEDNN_MAX_CPU_ISA": "avx10_2_512_amx_2"})[1] == "avx10_2_512_amx_2"


def test_the_note_names_a_cap_only_where_it_decided(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: ZEN4)
    capped = {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert withheld_note(BF16_ISAS, capped) == " (oneDNN capped at AVX2 by ONEDNN_MAX_CPU_ISA)"
    assert withheld_note(BF16_ISAS, {}) == ""
    assert withheld_note(BF16_ISAS, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}) == ""
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2", "fma"})  # no bf16 to withhold
    assert withheld_note(BF16_ISAS, capped) == ""


@pytest.mark.parametrize("cap, flags, bf16, int8", [
    (None, ZEN4, True, True),
    (None, {"avx2", "fma"}, False, False),
    (None, {"avx2", "avx_vnni"}, False, True),
    ("AVX2", ZEN4, False, False),
    ("AVX2_VNNI", SAPPHIRE_RAPIDS, False, True),
    ("AVX2_VNNI", ZEN4, False, False),  # Zen 4 has no avx_vnni
    # avx512_core's mask lacks the avx2_vnni bit: capped there, no int8 dot at all
    ("AVX512_CORE", SAPPHIRE_RAPIDS, False, False),
    ("AVX512_CORE_VNNI", ZEN4, False, True),
    ("avx512_core_bf16", ZEN4, True, True),
    ("AVX512_CORE_BF16", {"avx512f", "amx_bf16", "amx_int8"}, False, False),
    ("AVX512_CORE_AMX", {"avx512f", "amx_bf16", "amx_int8"}, True, True),
    ("AVX10_1_512_AMX_FP16", SAPPHIRE_RAPIDS, True, True),
    ("AVX10_2_512", ZEN4, True, True),
    ("NOT_AN_ISA", ZEN4, True, True),  # oneDNN ignores it: no cap
])
def test_fast_matmuls_need_the_flag_and_no_cap_withholding_them(cap, flags, bf16, int8):
    env = {} if cap is None else {"ONEDNN_MAX_CPU_ISA": cap}
    assert matmul_isa(BF16_ISAS, flags, env) is bf16
    assert matmul_isa(INT8_DOT_ISAS, flags, env) is int8
    assert matmul_isa(BF16_ISAS, None, env) is None


_PROBE = r"""
import json, torch
torch.set_num_threads(1)
from raybm.models.products import digit_product, int8_sums_exact
from raybm.models.rbm import BernoulliRBM
from raybm.cpu import BF16_ISAS, cpu_flags, matmul_isa
from raybm.samplers.gibbs import GibbsKernel, bf16_native, int8_exact, matmul_support
from raybm.samplers import prepared
from raybm.samplers.fused import formed
from raybm.samplers.gibbs import _digit_field
from raybm.samplers.scratch import Scratch
a = torch.full((32, 1024), 127, dtype=torch.int8)
b = torch.full((1024, 32), 127, dtype=torch.int8)
onednn_exact = int(torch._int_mm(a, b)[0, 0]) == 127 * 127 * 1024
gen = torch.Generator().manual_seed(0)
x = (torch.rand(300, 784, generator=gen) < 0.5).to(torch.uint8)
w = torch.randn(784, 64, generator=gen, dtype=torch.float64)
exact = x.double() @ w
bound = (x.double().sum(1, keepdim=True) * w.abs().amax(0) / 32258
         + x.double() @ w.abs() * 2**-23 + exact.abs() * 2**-23)
within = bool(((digit_product(x, w.float()).double() - exact).abs() <= bound).all())
kernel = GibbsKernel("auto").for_run(BernoulliRBM(784, 512), matmul_support())
# a digits sweep's hidden field (int8 sums where exact, else the fp32 layout's product)
model = BernoulliRBM(784, 64)
with torch.no_grad():
    model.weight.copy_(w)
p = prepared.prepare(model, "digits")
xs = x.to(p.matmul_dtype)
field = (formed(_digit_field(p.digits_up, xs, Scratch())) if p.digits_up is not None
         else xs @ p.up)
digits_within = bool(((field.double() - exact).abs()
                      <= x.double().sum(1, keepdim=True) * w.abs().amax(0) / (2 * 127**3)
                      + exact.abs() * 2**-22 + x.double() @ w.abs() * 2**-23).all())
print(json.dumps({"claims_exact": int8_sums_exact(), "onednn_exact": onednn_exact,
                  "within": within, "digits_within": digits_within,
                  "digits_used": p.digits_up is not None, "bf16_native": bf16_native(),
                  "flags_bf16": bool(matmul_isa(BF16_ISAS, cpu_flags(), {})),
                  "auto": kernel.precision, "chosen": kernel.chosen}))
"""


@pytest.mark.parametrize("cap", [None, "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI",
                                 "NOT_AN_ISA"])
def test_under_a_cap_on_onednn_the_products_stay_within_their_bound(cap):
    """In a fresh process with oneDNN capped (it reads the cap once, at its first use): the
    int8-digit product claims exact int8 sums only where oneDNN really makes them (capped
    below VNNI it saturates: it must then be the float32 product), stays within its bound,
    and precision ``auto`` runs bf16 only where oneDNN may use bf16 instructions, naming the
    cap in its first lines where the cap decided. (On a CPU without VNNI or bf16 the claims
    are all False: what is checked there is the bound and fp32.)"""
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA",
                                                            "DNNL_MAX_CPU_ISA")}
    if cap is not None:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["within"] and got["digits_within"]
    assert got["digits_used"] == got["claims_exact"]
    if got["claims_exact"]:
        assert got["onednn_exact"]
    if cap in ("AVX2", "AVX512_CORE"):
        assert not got["claims_exact"] and not got["bf16_native"]
    if cap == "NOT_AN_ISA":  # ignored by oneDNN: as uncapped
        assert got["bf16_native"] == got["flags_bf16"]
    note = f"oneDNN capped at {cap} by ONEDNN_MAX_CPU_ISA"
    assert (note in got["chosen"]) == (got["flags_bf16"] and not got["bf16_native"])
    # auto: bf16 where native, else the int8 digits where their sums are exact, else fp32
    assert got["auto"] == ("bf16" if got["bf16_native"] else
                           "digits" if got["claims_exact"] else "fp32")

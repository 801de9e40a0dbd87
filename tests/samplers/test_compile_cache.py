"""``samplers.compile_cache``: compiled kernels are never served to another instruction set."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import torch.compiler.config

from raybm.samplers.compile_cache import cache_key, tag_compile_caches


def test_the_key_joins_the_cache_key_tag_once(monkeypatch):
    assert torch.backends.cpu.get_cpu_capability().lower() in cache_key()
    monkeypatch.setattr(torch.compiler.config, "cache_key_tag", "")
    assert tag_compile_caches() == cache_key()
    assert tag_compile_caches() == cache_key()  # idempotent
    monkeypatch.setattr(torch.compiler.config, "cache_key_tag", "users-own")
    assert tag_compile_caches() == f"users-own+{cache_key()}"  # a user's tag is kept
    assert tag_compile_caches() == f"users-own+{cache_key()}"


_PROBE = r"""
import json, sys, torch
torch.set_num_threads(2)
from raybm.samplers import fused
gen = torch.Generator().manual_seed(0)
worst = 0.0
for _ in range(3):
    y = torch.randn(4000, 512, generator=gen) * 0.3
    bias = torch.randn(512, generator=gen) * 0.1
    coef = torch.cat([torch.full((2000,), 1 / 2000), torch.full((2000,), -1 / 2000)])
    _, cp, operand = fused.stats_fields(y, bias, None, None, coef, torch.float32,
                                        compiled=True, value=False)
    _, cp_eager, operand_eager = fused.stats_fields(y, bias, None, None, coef, torch.float32)
    worst = max(worst, float((operand - operand_eager).abs().max()),
                float((cp - cp_eager).abs().max()))
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "compiled": fused.runs_compiled(True), "worst": worst}))
"""


@pytest.mark.slow
def test_kernels_compiled_for_avx512_are_not_served_to_avx2(tmp_path):
    """One cache directory, two processes: the first compiles the gradient statistics with
    torch's default instruction set, the second runs with ``ATEN_CPU_CAPABILITY=avx2``. Served
    the first's kernels (Inductor's cache alone), the second's operand was off by ~4e21;
    with the instruction set in the cache key, both equal the eager computation."""
    base = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    base["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "inductor")
    results = []
    for capability in (None, "avx2"):
        env = dict(base, **({} if capability is None else {"ATEN_CPU_CAPABILITY": capability}))
        out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-2000:]
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if results[0]["capability"] == results[1]["capability"]:
        pytest.skip("this CPU has no instruction set above AVX2 to compile for first")
    for got in results:
        assert got["compiled"], "compilation failed: nothing compiled to compare"
        assert got["worst"] <= 1e-6, got

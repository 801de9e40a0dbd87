"""``digit_product``: 0/1 rows times float weights through int8 digits, within its stated bound
of the exact (float64) product."""

from __future__ import annotations

import pytest
import torch

from raybm.models.products import digit_product


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 7), (33, 210, 17), (2000, 784, 512)])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 300.0])
def test_digit_product_is_within_its_bound(shape, scale):
    n, k, m = shape
    gen = torch.Generator().manual_seed(n + k + m)
    x = (torch.rand(n, k, generator=gen) < 0.4).to(torch.uint8)
    weight = torch.randn(k, m, generator=gen, dtype=torch.float64) * scale
    weight[:, 0] = 0.0  # a zero column (no scale to take)
    exact = x.double() @ weight
    out = digit_product(x, weight.float())
    assert out.dtype == torch.float32 and out.shape == (n, m)
    # The stated bound, plus the float32 rounding of the weights given and of the output.
    bound = (x.double().sum(1, keepdim=True) * weight.abs().amax(0) / 32258
             + x.double() @ weight.abs() * 2**-23 + exact.abs() * 2**-23)
    assert ((out.double() - exact).abs() <= bound).all()
    assert (out[:, 0] == 0).all()


def test_a_nan_weight_gives_a_nan_column_as_float32_does():
    """The digits must not hide a NaN coupling behind finite int8 digits (a bf16 Jarzynski
    run's work would stay finite and the trainer's divergence check would not see it)."""
    gen = torch.Generator().manual_seed(4)
    x = (torch.rand(6, 30, generator=gen) < 0.5).to(torch.uint8)
    x[:, 3] = 1
    weight = torch.randn(30, 5, generator=gen)
    weight[3, 2] = float("nan")
    out = digit_product(x, weight)
    assert torch.isnan(out[:, 2]).all() and torch.isfinite(out[:, [0, 1, 3, 4]]).all()


def test_without_exact_int8_sums_it_is_a_float32_product(monkeypatch):
    """A CPU without VNNI / AMX-INT8 (oneDNN would add int8 pairs in 16 bits, which the digits
    overflow): the product is a float32 one, within the same bound."""
    from raybm.models import products

    monkeypatch.setattr(products, "int8_sums_exact", lambda: False)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 200, generator=gen) < 0.5).to(torch.uint8)
    weight = torch.randn(200, 40, generator=gen)
    out = digit_product(x, weight)
    torch.testing.assert_close(out, x.float() @ weight, rtol=0, atol=0)


@pytest.mark.parametrize("flags, exact", [("fpu avx2 fma", False), ("avx2 avx512f avx512_vnni", True),
                                          ("avx2 avx_vnni", True), ("avx512f amx_int8", True)])
def test_int8_sums_are_exact_only_with_vnni_or_amx(tmp_path, monkeypatch, flags, exact):
    from raybm import cpu
    from raybm.models import products

    for name in cpu.ISA_CAP_VARIABLES:  # no cap on oneDNN (tests/test_cpu.py has those)
        monkeypatch.delenv(name, raising=False)

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(products, "cpu_flags", lambda: cpu.cpu_flags(info))
    products.int8_sums_exact.cache_clear()
    try:
        assert products.int8_sums_exact() is exact
    finally:
        products.int8_sums_exact.cache_clear()

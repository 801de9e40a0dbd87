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


def test_digit_product_takes_one_hot_rows():
    """Potts walkers arrive one-hot in float: the same product as from int rows."""
    gen = torch.Generator().manual_seed(0)
    states = torch.randint(0, 5, (40, 6), generator=gen)
    onehot = torch.nn.functional.one_hot(states, 5).reshape(40, 30).float()
    weight = torch.randn(30, 8, generator=gen)
    assert torch.equal(digit_product(onehot, weight), digit_product(onehot.to(torch.uint8), weight))

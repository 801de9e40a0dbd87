"""The energy contract's derivatives for second-order methods (``EnergyModel.score``,
``laplacian``, ``hutchinson_laplacian``): the closed forms of the Gaussian and the mixture
against the autograd defaults, the default against a finite difference, Hutchinson's estimate
unbiased within its Monte-Carlo standard error, and gradients that flow into the parameters
with ``create_graph``."""

from __future__ import annotations

import pytest
import torch

from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.models.neural import MLPEnergy


def models():
    g = torch.Generator().manual_seed(0)
    yield GaussianEnergy(4, torch.randn(4, generator=g), torch.randn(4, generator=g)).double()
    yield GaussianMixtureEnergy(torch.randn(3, 4, generator=g) * 2,
                                torch.randn(3, generator=g), std=0.7).double()
    yield MLPEnergy(4, (16, 16), "softplus", base_scale=0.5, gen=g).double()


@pytest.mark.parametrize("model", list(models()), ids=lambda m: type(m).__name__)
def test_closed_forms_equal_the_autograd_defaults(model):
    x = torch.randn(7, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.allclose(model.score(x), -model.energy_and_grad(x)[1], rtol=1e-10)
    exact = EnergyModel.laplacian(model, x)  # the autograd default, whatever the class
    assert torch.allclose(model.laplacian(x), exact, rtol=1e-10, atol=1e-12)
    # The default against a central difference of the score.
    h, fd = 1e-5, torch.zeros(7, dtype=torch.float64)
    for i in range(4):
        e = torch.zeros_like(x)
        e[:, i] = h
        fd -= (model.score(x + e)[:, i] - model.score(x - e)[:, i]) / (2 * h)
    assert torch.allclose(exact, fd, rtol=1e-5, atol=1e-6)


def test_hutchinson_is_unbiased_within_its_standard_error():
    model = list(models())[2]
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    draws = torch.stack([model.hutchinson_laplacian(gen, x) for _ in range(4000)])
    mean, se = draws.mean(0), draws.std(0) / 4000**0.5
    assert ((mean - model.laplacian(x)).abs() < 4 * se + 1e-12).all()
    assert (draws.std(0) > 0).all()  # an MLP's Hessian is not diagonal: the estimate varies


@pytest.mark.parametrize("model", list(models()), ids=lambda m: type(m).__name__)
def test_second_order_terms_carry_gradients_into_the_parameters(model):
    """A score-matching loss ``|score|^2 / 2 + laplacian`` differentiates through both: its
    parameter gradient by autograd equals a finite difference along a random direction."""
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss() -> torch.Tensor:
        s = model.score(x, create_graph=True)
        return (0.5 * s.square().sum(-1) - model.laplacian(x, create_graph=True)).mean()

    params = list(model.parameters())
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    g = torch.Generator().manual_seed(5)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    slope = sum(float((d * gr).sum()) for d, gr in zip(direction, grads) if gr is not None)
    h = 1e-6
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(h * d)
        up = float(loss())
        for p, d in zip(params, direction):
            p.sub_(2 * h * d)
        down = float(loss())
        for p, d in zip(params, direction):
            p.add_(h * d)
    assert slope == pytest.approx((up - down) / (2 * h), rel=1e-4, abs=1e-7)

"""Closed-form normalisations of the Gaussian energies, checked by quadrature, and the
default autograd ``grad_energy`` against the closed form."""

from __future__ import annotations

import math

import torch

from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy


def quadrature_log_z(model: EnergyModel, low: float, high: float, n: int = 4001) -> float:
    """``log int exp(-E)`` over a 1-D or 2-D box by the trapezoid rule in float64."""
    d = model.event_shape[0]
    t = torch.linspace(low, high, n, dtype=torch.float64)
    if d == 1:
        grid = t.unsqueeze(1)
        f = torch.exp(-model.double().energy(grid)).detach()
        return math.log(float(torch.trapezoid(f, t)))
    u = torch.linspace(low, high, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(u, u)
    f = torch.exp(-model.double().energy(grid)).detach().view(801, 801)
    return math.log(float(torch.trapezoid(torch.trapezoid(f, u), u)))


def test_gaussian_log_partition():
    model = GaussianEnergy(1, mean=torch.tensor([0.7]), log_precision=torch.tensor([1.3]))
    assert abs(model.log_partition() - quadrature_log_z(model, -12, 12)) < 1e-9


def test_mixture_log_partition_and_mode_weights():
    model = GaussianMixtureEnergy(torch.tensor([[-3.0, 0.5], [2.0, -1.0]]),
                                  log_weights=torch.tensor([0.2, -0.9]), std=0.8)
    assert abs(model.log_partition() - quadrature_log_z(model, -9, 9)) < 1e-6
    w = model.mode_weights()
    torch.testing.assert_close(w, torch.softmax(torch.tensor([0.2, -0.9], dtype=torch.float64), 0))


def test_autograd_grad_energy_matches_the_closed_form():
    model = GaussianEnergy(3, mean=torch.tensor([1.0, -2.0, 0.5]),
                           log_precision=torch.tensor([0.1, -0.4, 1.2]))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    mix = GaussianMixtureEnergy(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
                                log_weights=torch.tensor([0.3, -0.2]), std=0.7)
    for m in (model, mix):
        e, closed = m.energy_and_grad(x)
        e_auto, autograd = EnergyModel.energy_and_grad(m, x)
        torch.testing.assert_close(autograd, closed)
        torch.testing.assert_close(e, e_auto)
        torch.testing.assert_close(m.grad_energy(x), closed)
    g = mix.grad_energy(mix.means.detach()[:1])  # exactly on a mean: finite
    assert torch.isfinite(g).all()

"""Exact starts (``samplers.exact``): each registered model is drawn without a Markov chain
and its log Z is the closed form; a model that cannot be drawn exactly is refused."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.models.gaussian import GaussianMixtureEnergy
from raybm.models.neural import ConvEnergy, MLPEnergy
from raybm.models.rbm import build_rbm
from raybm.samplers.exact import exact_start

N = 40_000


def _moments_match(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
    """Sample mean and variance per coordinate within 5 Monte-Carlo standard errors."""
    x = x.reshape(len(x), -1).double()
    se_mean = (var / len(x)).sqrt()
    se_var = var * math.sqrt(2 / (len(x) - 1))
    assert ((x.mean(0) - mean).abs() < 5 * se_mean).all()
    assert ((x.var(0) - var).abs() < 5 * se_var).all()


@pytest.mark.parametrize("model", [
    MLPEnergy(3, (8,), base_scale=4.0, zero_last=True, gen=torch.Generator().manual_seed(1)),
    ConvEnergy(1, 8, base_scale=0.5, zero_last=True, gen=torch.Generator().manual_seed(2)),
], ids=["mlp", "conv"])
def test_neural_energy_with_zero_read_out_is_drawn_from_its_gaussian(model):
    walkers, log_z = exact_start(torch.Generator().manual_seed(0), model, N)
    d = math.prod(model.event_shape)
    assert walkers.x.shape == (N, *model.event_shape)
    assert log_z == pytest.approx(0.5 * d * math.log(2 * math.pi / model.base_scale))
    _moments_match(walkers.x, torch.zeros(d, dtype=torch.float64),
                   torch.full((d,), 1 / model.base_scale, dtype=torch.float64))
    with torch.no_grad():
        model.readout.bias.add_(0.1)
    with pytest.raises(ValueError, match="read-out at zero"):
        exact_start(torch.Generator(), model, 4)


def test_mixture_components_are_drawn_at_their_weights():
    means = torch.tensor([[-5.0, 0.0], [5.0, 1.0]])
    model = GaussianMixtureEnergy(means, torch.log(torch.tensor([0.2, 0.8])), std=0.5)
    walkers, log_z = exact_start(torch.Generator().manual_seed(0), model, N)
    assert log_z == pytest.approx(model.log_partition())
    share = float((walkers.x[:, 0] < 0).double().mean())
    assert abs(share - 0.2) < 5 * math.sqrt(0.2 * 0.8 / N)


def test_coupled_rbm_is_refused():
    rbm = build_rbm(6, 3, 2, 0)
    rbm.init_parameters(torch.Generator().manual_seed(0), weight_std=0.1)
    with pytest.raises(ValueError, match="without couplings"):
        exact_start(torch.Generator(), rbm, 4)


def test_neural_energy_inside_a_box_is_drawn_from_its_truncated_gaussian():
    model = MLPEnergy(3, (4,), base_scale=2.0, zero_last=True)
    walkers, log_z = exact_start(torch.Generator().manual_seed(0), model, N, (-1.0, 0.5))
    assert walkers.x.min() >= -1.0 and walkers.x.max() <= 0.5
    xs = torch.linspace(-1.0, 0.5, 100_001, dtype=torch.float64)
    density = torch.exp(-xs**2)  # exp(-s x^2 / 2) with s = 2
    z1 = torch.trapezoid(density, xs)
    assert log_z == pytest.approx(3 * math.log(float(z1)), abs=1e-8)
    mean = torch.trapezoid(xs * density, xs) / z1
    var = torch.trapezoid((xs - mean) ** 2 * density, xs) / z1
    _moments_match(walkers.x, mean.expand(3), var.expand(3))


def test_a_box_is_refused_where_no_exact_draw_is_declared():
    model = GaussianMixtureEnergy(torch.zeros(2, 2))
    with pytest.raises(ValueError, match="inside the box"):
        exact_start(torch.Generator(), model, 4, (-1.0, 1.0))

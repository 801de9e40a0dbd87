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

"""The held-out score-matching loss every continuous run reports (``metrics.continuous``):
for a Gaussian energy ``E = |x - mu|^2 / (2 v) + const`` on Gaussian data ``N(m, s^2 I)``,

    J = < |grad E|^2 / 2 - Lap E > = (d s^2 + |m - mu|^2) / (2 v^2) - d / v,

checked within 4 standard errors of its sample mean, with the exact Laplacian (d = 2) and
Hutchinson's (d = 20), and smallest at the data's own Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.data.dataset import Dataset
from raybm.metrics.continuous import SM_EXACT_DIM, sm_loss
from raybm.models.gaussian import GaussianMixtureEnergy


def closed_form(d: int, s: float, offset: float, v: float) -> float:
    return (d * s * s + offset) / (2 * v * v) - d / v


@pytest.mark.parametrize("d", [2, 20], ids=["exact", "hutchinson"])
def test_sm_loss_of_a_gaussian_energy_is_its_closed_form(d):
    assert (d <= SM_EXACT_DIM) == (d == 2)
    g = torch.Generator().manual_seed(0)
    s, n = 1.5, 1000
    x = 0.3 + s * torch.randn(n, d, generator=g)
    data = Dataset(x=x, n_states=0, source="test")
    mu, v = torch.zeros(d), 2.0
    model = GaussianMixtureEnergy(mu[None], std=math.sqrt(v))
    # per point |x - mu|^2 / (2 v^2) - d / v: its sample spread (Rademacher probes of the
    # isotropic Hessian I / v read d / v exactly, so Hutchinson adds no noise here)
    per_point = (x - mu).square().sum(1) / (2 * v * v) - d / v
    se = float(per_point.std()) / math.sqrt(n)
    truth = closed_form(d, s, d * 0.09, v)
    assert sm_loss(model, data) == pytest.approx(truth, abs=4 * se)
    own = GaussianMixtureEnergy(torch.full((1, d), 0.3), std=s)
    assert sm_loss(own, data) < sm_loss(model, data)


def test_tweedie_denoising_with_the_noisy_datas_energy_is_the_posterior_mean():
    """Data ``N(m, s^2 I)``, noise sigma: with the energy of the noisy density ``N(m, (s^2 +
    sigma^2) I)`` Tweedie's one step is the posterior mean, whose error per coordinate has
    variance ``s^2 sigma^2 / (s^2 + sigma^2)``; the noisy input's is ``sigma^2``."""
    from raybm.metrics.continuous import denoise_rmse

    g = torch.Generator().manual_seed(0)
    d, s, sigma, n = 4, 1.0, 0.5, 4000
    data = Dataset(x=0.3 + s * torch.randn(n, d, generator=g), n_states=0, source="test")
    noisy = GaussianMixtureEnergy(torch.full((1, d), 0.3), std=math.sqrt(s * s + sigma**2))
    rmse, rmse_noisy = denoise_rmse(noisy, data, sigma, g, n=n)
    # mean squared errors of n d coordinates: relative standard error sqrt(2 / (n d))
    rel = 4 * math.sqrt(2 / (n * d))
    assert rmse**2 == pytest.approx(s * s * sigma**2 / (s * s + sigma**2), rel=rel)
    assert rmse_noisy**2 == pytest.approx(sigma**2, rel=rel)

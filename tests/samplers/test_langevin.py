"""ULA and MALA against Gaussians whose answers are known in closed form.

Tolerances are Monte-Carlo standard errors of independent walkers: for ``n`` draws of a
variance-``v`` quantity the mean has SE ``sqrt(v / n)`` and the sample variance
``v sqrt(2 / n)`` (Gaussian). Each check allows 5 SE (a correct kernel fails with probability
~1e-6 per check) and, where a biased answer must be told apart, the biased value lies more
than 5 SE away too.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybm.models.gaussian import GaussianEnergy
from raybm.samplers.base import KernelInfo
from raybm.samplers.langevin import MALA, ULA, _log_q, _reflect
from raybm.walkers import WalkerState

N = 40_000


def target_walkers(gen, model: GaussianEnergy, n: int) -> WalkerState:
    """Exact draws of the Gaussian ``model``."""
    std = (-0.5 * model.log_precision.detach()).exp()
    x = model.mean.detach() + std * torch.randn((n, model.event_shape[0]), generator=gen)
    return WalkerState.unweighted(x)


def gaussian(dim: int = 2) -> GaussianEnergy:
    return GaussianEnergy(dim, mean=torch.tensor([1.5, -0.5])[:dim],
                          log_precision=torch.tensor([0.0, math.log(4.0)])[:dim])


def assert_moments(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
    x = x.double()
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt(2 / n)
    assert ((x.mean(0) - mean).abs() <= 5 * se_mean).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() <= 5 * se_var).all(), (x.var(0), var)


def test_mala_leaves_the_gaussian_invariant_at_a_large_step():
    model = gaussian()
    gen = torch.Generator().manual_seed(0)
    start = target_walkers(gen, model, N)
    out, info = MALA(step_size=0.4).step(gen, start, model, 10)
    assert isinstance(info, KernelInfo) and info.log_weight_increment is None
    assert 0.3 < info.acceptance < 0.99  # a step that rejects often: the test has teeth
    assert_moments(out.x, model.mean.detach().double(),
                   1 / model.log_precision.detach().double().exp(), N)
    assert not torch.equal(out.x, start.x)


def test_ula_has_its_closed_form_order_h_bias():
    """ULA on ``N(mu, s^2)`` converges to ``N(mu, s^2 / (1 - h / (2 s^2)))``: both the
    variance of precision 1 (s^2 = 1) and of precision 4 (s^2 = 1/4), after enough steps that
    the start is forgotten (|1 - h / s^2|^k < 1e-9)."""
    model = gaussian()
    h = 0.1
    gen = torch.Generator().manual_seed(1)
    out, info = ULA(step_size=h).step(gen, target_walkers(gen, model, N), model, 120)
    s2 = 1 / model.log_precision.detach().double().exp()
    biased = s2 / (1 - h / (2 * s2))
    assert_moments(out.x, model.mean.detach().double(), biased, N)
    # ... and the bias is resolved: the exact variance is more than 5 SE away.
    assert ((out.x.double().var(0) - s2).abs() > 5 * biased * math.sqrt(2 / N)).all()
    assert info.log_weight_increment.shape == (N,)


def test_ula_log_weight_increments_correct_its_bias():
    """From exact draws, k ULA steps with the accumulated increments are importance weights
    for the target itself: the weighted variance is the exact one (SE from the ESS), while the
    unweighted one has drifted towards ULA's biased law."""
    model = GaussianEnergy(1, mean=torch.tensor([0.5]))
    h, k = 0.3, 6
    gen = torch.Generator().manual_seed(2)
    out, info = ULA(step_size=h).step(gen, target_walkers(gen, model, N), model, k)
    w = torch.softmax(info.log_weight_increment, 0)
    ess = float(1 / (w * w).sum())
    assert ess > N / 4
    x = out.x.double()[:, 0]
    mean = (w * x).sum()
    var = (w * (x - mean) ** 2).sum()
    assert abs(float(mean) - 0.5) <= 5 * math.sqrt(1 / ess)
    assert abs(float(var) - 1.0) <= 5 * math.sqrt(2 / ess)
    # ULA's variance recursion v' = (1 - h)^2 v + 2 h, from v = 1, towards 1 / (1 - h / 2).
    stationary = 1 / (1 - h / 2)
    drifted = stationary + (1 - h) ** (2 * k) * (1 - stationary)
    assert abs(float(x.var()) - drifted) <= 5 * drifted * math.sqrt(2 / N)
    assert abs(drifted - 1.0) > 5 * math.sqrt(2 / ess) + 5 * drifted * math.sqrt(2 / N)


def test_box_constrained_mala_keeps_the_truncated_gaussian():
    """Target ``N(0, 1)`` restricted to [-1, 1]: variance ``1 - 2 phi(1) / (2 Phi(1) - 1)``."""
    model = GaussianEnergy(1)
    gen = torch.Generator().manual_seed(3)
    draws = torch.randn(3 * N, generator=gen)
    x = draws[draws.abs() <= 1][:N].unsqueeze(1)
    out, info = MALA(step_size=0.5, box=(-1.0, 1.0)).step(gen, WalkerState.unweighted(x),
                                                          model, 10)
    assert float(out.x.abs().max()) <= 1.0
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    big_phi = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    var = 1 - 2 * phi / (2 * big_phi - 1)
    # Fourth moment of the truncated normal, for the SE of its sample variance.
    m4 = 3 - (2 * phi * (1 + 3)) / (2 * big_phi - 1)
    se_var = math.sqrt((m4 - var**2) / len(x))
    assert abs(float(out.x.double().var()) - var) <= 5 * se_var
    assert abs(float(out.x.double().mean())) <= 5 * math.sqrt(var / len(x))
    assert info.acceptance < 0.95


def truncated_normal_moments(c: float) -> tuple[float, float]:
    """Variance and fourth moment of N(0, 1) restricted to [-c, c]."""
    phi = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(c / math.sqrt(2))
    var = 1 - 2 * c * phi / mass
    return var, 3 * var - 2 * c**3 * phi / mass


def test_reflected_ula_moves_every_walker_and_its_increments_correct_its_bias_in_the_box():
    """Target N(0, 1) restricted to [-1, 1], from exact draws; ULA at h = 0.5 with its
    proposals reflected into the box. Every walker moves and stays inside; unweighted, the
    walkers drift away from the truncated law (k steps of a kernel that does not keep it);
    weighted by the increments (the reflected proposal's density forwards and backwards),
    they keep it within Monte-Carlo error."""
    model = GaussianEnergy(1)
    gen = torch.Generator().manual_seed(4)
    draws = torch.randn(3 * N, generator=gen)
    start = draws[draws.abs() <= 1][:N].unsqueeze(1)
    out, info = ULA(step_size=0.5, box=(-1.0, 1.0)).step(gen, WalkerState.unweighted(start),
                                                          model, 4)
    assert float(out.x.abs().max()) <= 1.0 and not (out.x == start).any()
    var, m4 = truncated_normal_moments(1.0)
    w = torch.softmax(info.log_weight_increment, 0)
    ess = float(1 / (w * w).sum())
    assert ess > N / 4
    x = out.x.double()[:, 0]
    weighted = float((w * x * x).sum())  # the mean is 0 by symmetry
    assert abs(weighted - var) <= 5 * math.sqrt((m4 - var**2) / ess)
    assert abs(float(x.var()) - var) > 5 * math.sqrt((m4 - var**2) / N)  # it has teeth


@pytest.mark.parametrize("mean", [0.3, -0.98, 1.7, -6.0])
def test_the_reflected_proposal_density_integrates_to_one_over_the_box(mean):
    """``exp(log_q)`` with its constant, by quadrature over [-1, 1], for proposal means
    inside, at and far beyond a face (where several foldings overlap)."""
    h, n = 0.3, 200_000
    y = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 - 1
    log_q = _log_q(y.unsqueeze(1), torch.full((n, 1), mean, dtype=torch.float64), h,
                   (-1.0, 1.0))
    total = float((log_q - 0.5 * math.log(4 * math.pi * h)).exp().sum() * 2 / n)
    assert total == pytest.approx(1.0, abs=1e-6)
    folded = _reflect(mean + math.sqrt(2 * h) * torch.randn(N, generator=torch.Generator()
                                                             .manual_seed(9)), -1.0, 1.0)
    # The folded draws have the density's mean (5 SE of the draws' mean).
    density = (log_q - 0.5 * math.log(4 * math.pi * h)).exp() * 2 / n
    expected = float((density * y).sum())
    assert abs(float(folded.double().mean()) - expected) <= 5 * float(folded.double().std()) \
        / math.sqrt(N)


def test_kernels_follow_the_contract_on_images():
    """Per-walker shapes other than vectors, the model passed on every call, one generator."""

    class ImageGaussian(GaussianEnergy):
        def __init__(self):
            super().__init__(4)
            self.event_shape = (1, 2, 2)

    model = ImageGaussian()
    for kernel in (ULA(0.1), MALA(0.1)):
        assert kernel.invariant == (kernel.name == "mala")
        a = kernel.init(torch.Generator().manual_seed(5), model, 7)
        assert a.x.shape == (7, 1, 2, 2) and a.x.dtype == torch.float32
        out1, _ = kernel.step(torch.Generator().manual_seed(6), a, model, 3)
        out2, _ = kernel.step(torch.Generator().manual_seed(6), a, model, 3)
        assert out1.x.shape == a.x.shape and torch.equal(out1.x, out2.x)
        assert not out1.x.requires_grad
        assert all(p.grad is None for p in model.parameters())  # no graph into the weights


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_step_size_is_refused(bad):
    with pytest.raises(ValueError, match="step_size"):
        ULA(bad)
    with pytest.raises(ValueError, match="box"):
        MALA(0.1, box=(1.0, -1.0))


@pytest.mark.parametrize("h", [1e-4, 0.01, 0.5, 20.0])
def test_the_reflected_density_equals_the_sum_over_every_unfolded_point(h):
    """``_log_q`` (the few points that count) against the sum over 242 unfolded points of
    each coordinate, for means far outside the box and step sizes up to 20."""
    gen = torch.Generator().manual_seed(10)
    y = torch.rand(500, 3, generator=gen, dtype=torch.float64) * 2 - 1
    mean = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 4
    shifts = torch.arange(-60, 61, dtype=torch.float64).view(-1, 1, 1) * 4
    points = torch.cat([y + shifts, -2 - y + shifts])  # y + nP and 2 low - y + nP
    exact = torch.logsumexp(-(points - mean) ** 2 / (4 * h), 0).sum(1)
    assert torch.allclose(_log_q(y, mean, h, (-1.0, 1.0)), exact, rtol=1e-12, atol=1e-10)

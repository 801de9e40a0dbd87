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

from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.samplers.base import KernelInfo
from raybm.samplers.langevin import MALA, ULA, _log_q, _log_q_revert, _reflect
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


# ---- noise_std (the proposal's own noise) and box_rule="revert" ------------------------


class CorrelatedGaussian(EnergyModel):
    """``E(x) = (x - mu)^T P (x - mu) / 2`` with a full precision ``P``: the gradient of one
    coordinate depends on the others, so a reverted coordinate's atom differs forwards and
    backwards (with a diagonal Gaussian, or in 1-D, its two masses are equal and cancel)."""

    def __init__(self, mean: list[float], cov: list[list[float]]) -> None:
        super().__init__()
        self.event_shape = (len(mean),)
        self.register_buffer("mu", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("precision", torch.linalg.inv(torch.tensor(cov,
                                                                        dtype=torch.float64)))

    def spec(self) -> dict:
        return {"kind": "CorrelatedGaussian"}

    @classmethod
    def from_spec(cls, spec: dict) -> "CorrelatedGaussian":
        raise NotImplementedError

    def energy(self, x, cond=None):
        d = x - self.mu.to(x.dtype)
        return 0.5 * ((d @ self.precision.to(x.dtype)) * d).sum(-1)

    def energy_and_grad(self, x, cond=None):
        d = x - self.mu.to(x.dtype)
        g = d @ self.precision.to(x.dtype)
        return 0.5 * (g * d).sum(-1), g


def truncated_draws(gen, n: int, dim: int = 1) -> torch.Tensor:
    """``n`` exact draws of N(0, I) restricted to [-1, 1]^dim (rejection)."""
    draws = torch.randn(4 * n, dim, generator=gen)
    return draws[(draws.abs() <= 1).all(1)][:n]


def ratio_by_hand(model, x, y, h, sigma, box) -> torch.Tensor:
    """``log [pi(y) q_V(x | y)] - log [pi(x) q_V(y | x)]`` of the reverting kernel, coordinate
    by coordinate in Python floats (``math.erfc`` for the masses outside the box, the float
    lattice's cell at a kept coordinate from ``math.nextafter``)."""
    low, high = box
    e_x, g_x = model.energy_and_grad(x)
    e_y, g_y = model.energy_and_grad(y)

    def big_phi(t):
        return 0.5 * math.erfc(-t / math.sqrt(2))

    def log_q(to, frm, mean):  # up to -(moved) log(sigma sqrt(2 pi)), as _log_q_revert
        total = 0.0
        for t, f, m in zip(to.tolist(), frm.tolist(), mean.tolist()):
            if t != f:
                total += -(t - m) ** 2 / (2 * sigma**2)
            else:
                cell = (math.nextafter(f, math.inf) - math.nextafter(f, -math.inf)) / 2
                gauss = math.exp(-(f - m) ** 2 / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
                total += math.log(big_phi((low - m) / sigma) + big_phi((m - high) / sigma)
                                  + gauss * cell)
        return total

    return torch.tensor([
        -float(e_y[i]) + float(e_x[i]) + log_q(x[i], y[i], y[i] - h * g_y[i])
        - log_q(y[i], x[i], x[i] - h * g_x[i]) for i in range(len(x))], dtype=torch.float64)


@pytest.mark.parametrize("box", [None, (-1.0, 1.0)])
def test_noise_std_sqrt_2h_is_the_default(box):
    """``noise_std=sqrt(2 h)`` draws the same proposals as None (the same float), so the same
    walkers; its increments differ by the rounding of ``2 sigma^2`` against ``4 h``."""
    model = GaussianEnergy(3, mean=torch.tensor([0.3, -0.2, 0.5]),
                           log_precision=torch.tensor([0.0, 1.0, -0.5]))
    h = 0.3
    x = 0.9 * (2 * torch.rand(500, 3, generator=torch.Generator().manual_seed(20)) - 1)
    for cls in (ULA, MALA):
        runs = [cls(h, box, **kw).step(torch.Generator().manual_seed(21),
                                       WalkerState.unweighted(x), model, 5)
                for kw in ({}, {"noise_std": math.sqrt(2 * h)})]
        (a, info_a), (b, info_b) = runs
        assert torch.equal(a.x, b.x) and info_a.acceptance == info_b.acceptance
        if cls is ULA:
            assert torch.allclose(info_a.log_weight_increment, info_b.log_weight_increment,
                                  rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sigma", [1e-4, 0.05, 0.6, 6.0])
def test_the_proposal_density_uses_the_noise_variance(sigma):
    """``_log_q`` with ``noise_std``: ``-|y - m|^2 / (2 sigma^2)`` without a box; in the box,
    the sum over 242 unfolded points of each coordinate with variance ``sigma^2`` (as the
    default's test with ``2 h``), with a step size that would give another variance."""
    gen = torch.Generator().manual_seed(22)
    y = torch.rand(500, 3, generator=gen, dtype=torch.float64) * 2 - 1
    mean = torch.randn(500, 3, generator=gen, dtype=torch.float64) * 4
    h = 0.37  # irrelevant once noise_std is given
    plain = -((y - mean) ** 2).sum(1) / (2 * sigma**2)
    assert torch.allclose(_log_q(y, mean, h, None, sigma), plain, rtol=1e-12, atol=0)
    shifts = torch.arange(-60, 61, dtype=torch.float64).view(-1, 1, 1) * 4
    points = torch.cat([y + shifts, -2 - y + shifts])
    exact = torch.logsumexp(-(points - mean) ** 2 / (2 * sigma**2), 0).sum(1)
    assert torch.allclose(_log_q(y, mean, h, (-1.0, 1.0), sigma), exact, rtol=1e-12,
                          atol=1e-10)


def test_ula_with_its_own_noise_drifts_and_its_increments_correct_it():
    """``y = x - h grad E + sigma xi`` on N(0.5, 1) with ``sigma^2 != 2 h``: the walkers'
    variance follows ``v' = (1 - h)^2 v + sigma^2`` (the noise is used), and the increments
    are still exact importance weights for the target (Crooks; Neal 2001)."""
    model = GaussianEnergy(1, mean=torch.tensor([0.5]))
    h, sigma, k = 0.3, 0.6, 4
    gen = torch.Generator().manual_seed(23)
    out, info = ULA(h, noise_std=sigma).step(gen, target_walkers(gen, model, N), model, k)
    w = torch.softmax(info.log_weight_increment, 0)
    ess = float(1 / (w * w).sum())
    assert ess > N / 4
    x = out.x.double()[:, 0]
    mean = (w * x).sum()
    assert abs(float(mean) - 0.5) <= 5 * math.sqrt(1 / ess)
    assert abs(float((w * (x - mean) ** 2).sum()) - 1.0) <= 5 * math.sqrt(2 / ess)
    stationary = sigma**2 / (1 - (1 - h) ** 2)
    drifted = stationary + (1 - h) ** (2 * k) * (1 - stationary)
    assert abs(float(x.var()) - drifted) <= 5 * drifted * math.sqrt(2 / N)
    assert abs(drifted - 1.0) > 5 * math.sqrt(2 / ess) + 5 * drifted * math.sqrt(2 / N)


@pytest.mark.parametrize("box_rule", ["reflect", "revert"])
def test_ula_with_its_own_noise_keeps_the_truncated_normal_under_its_weights(box_rule):
    """Target N(0, 1) restricted to [-1, 1], from exact draws; ULA with ``sigma = 1 !=
    sqrt(2 h)``, proposals reflected or reverted. Weighted by the increments the variance is
    the truncated law's within 5 SE (of the ESS); unweighted it has drifted away."""
    model = GaussianEnergy(1)
    gen = torch.Generator().manual_seed(24)
    start = truncated_draws(gen, N)
    kernel = ULA(0.3, (-1.0, 1.0), noise_std=1.0, box_rule=box_rule)
    out, info = kernel.step(gen, WalkerState.unweighted(start), model, 4)
    assert float(out.x.abs().max()) <= 1.0
    if box_rule == "revert":  # some walkers had every proposal leave the box: they stayed
        assert 0 < float((out.x == start).double().mean()) < 0.1
    var, m4 = truncated_normal_moments(1.0)
    w = torch.softmax(info.log_weight_increment, 0)
    ess = float(1 / (w * w).sum())
    assert ess > N / 4
    x = out.x.double()[:, 0]
    assert abs(float((w * x * x).sum()) - var) <= 5 * math.sqrt((m4 - var**2) / ess)
    assert abs(float(x.var()) - var) > 5 * math.sqrt((m4 - var**2) / N)  # it has teeth


def test_reverting_mala_with_its_own_noise_keeps_the_truncated_normal():
    """Target N(0, 1) restricted to [-1, 1]: mean 0 and variance ``1 - 2 phi(1) / (2 Phi(1)
    - 1)`` kept, within 5 SE, by MALA with ``sigma != sqrt(2 h)`` and reverted proposals."""
    model = GaussianEnergy(1)
    gen = torch.Generator().manual_seed(25)
    x = truncated_draws(gen, N)
    out, info = MALA(0.5, (-1.0, 1.0), noise_std=0.8, box_rule="revert").step(
        gen, WalkerState.unweighted(x), model, 10)
    assert float(out.x.abs().max()) <= 1.0
    var, m4 = truncated_normal_moments(1.0)
    assert abs(float(out.x.double().var()) - var) <= 5 * math.sqrt((m4 - var**2) / N)
    assert abs(float(out.x.double().mean())) <= 5 * math.sqrt(var / N)
    assert info.acceptance < 0.995


def correlated_truncated_reference(model: CorrelatedGaussian, m: int = 1000):
    """``E f`` and ``Var f`` under ``model`` restricted to [-1, 1]^2 for ``f`` = (x1, x2,
    x1^2, x2^2, x1 x2), by the midpoint rule on an ``m x m`` grid (error ~1e-6, far below
    the Monte-Carlo SEs)."""
    t = (torch.arange(m, dtype=torch.float64) + 0.5) / m * 2 - 1
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    p = torch.softmax(-model.energy(grid), 0)
    f = stats(grid)
    mean = (p[:, None] * f).sum(0)
    return mean, (p[:, None] * (f - mean) ** 2).sum(0)


def stats(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return torch.stack([x[:, 0], x[:, 1], x[:, 0] ** 2, x[:, 1] ** 2, x[:, 0] * x[:, 1]], 1)


def correlated_start(gen, model: CorrelatedGaussian, n: int) -> torch.Tensor:
    """``n`` exact float32 draws of ``model`` restricted to [-1, 1]^2 (rejection)."""
    chol = torch.linalg.cholesky(torch.linalg.inv(model.precision))
    z = torch.randn(4 * n, 2, generator=gen, dtype=torch.float64) @ chol.T + model.mu
    return z[(z.abs() <= 1).all(1)][:n].float()


def test_reverting_kernels_keep_a_correlated_truncated_gaussian():
    """2-D Gaussian of correlation 0.8 restricted to [-1, 1]^2, where a reverted coordinate's
    atom ``P_out`` differs forwards and backwards. ULA (``sigma != sqrt(2 h)``) weighted by its
    increments, and MALA, give the first and second moments within 5 SE (quadrature
    reference). Without the atoms' terms (a kept coordinate weighing nothing, or the plain
    Gaussian density) MALA's moments land up to ~20 SE off and ULA's ~7 SE (checked by
    hand): the test has teeth; unweighted ULA is 15-40 SE off."""
    model = CorrelatedGaussian([0.3, -0.2], [[1.0, 0.8], [0.8, 1.0]])
    mean, var = correlated_truncated_reference(model)
    gen = torch.Generator().manual_seed(26)
    start = WalkerState.unweighted(correlated_start(gen, model, N))
    out, info = ULA(0.2, (-1.0, 1.0), noise_std=0.9, box_rule="revert").step(gen, start,
                                                                             model, 5)
    assert float(out.x.abs().max()) <= 1.0
    w = torch.softmax(info.log_weight_increment, 0)
    ess = float(1 / (w * w).sum())
    assert ess > N / 4
    f = stats(out.x)
    assert (((w[:, None] * f).sum(0) - mean).abs() <= 5 * (var / ess).sqrt()).all()
    assert ((f.mean(0) - mean).abs() > 5 * (var / N).sqrt()).any()
    out, info = MALA(0.5, (-1.0, 1.0), noise_std=0.8, box_rule="revert").step(gen, start,
                                                                             model, 10)
    assert float(out.x.abs().max()) <= 1.0 and 0.5 < info.acceptance < 0.9
    assert ((stats(out.x).mean(0) - mean).abs() <= 5 * (var / N).sqrt()).all()


def test_the_reverting_increment_is_the_exact_formula():
    """One ULA step with reverted proposals from walkers at, near and away from the faces of
    [-1, 1]^3 under a Gaussian mixture (whose gradient couples the coordinates): the reported
    increment against the coordinate-by-coordinate formula in Python floats, to 1e-12; and
    the step did revert some coordinates and move others."""
    model = GaussianMixtureEnergy(torch.tensor([[0.8, -0.5, 0.2], [-0.6, 0.4, -0.9]]),
                                  torch.tensor([0.3, -0.2]), std=0.5)
    gen = torch.Generator().manual_seed(27)
    x = torch.rand(200, 3, generator=gen, dtype=torch.float64) * 2 - 1
    x[:40, 0], x[40:80, 1] = -1.0, 1.0  # on the faces
    x[80:120] = x[80:120].sign() * (1 - 1e-3 * torch.rand(40, 3, generator=gen,
                                                          dtype=torch.float64))
    h, sigma, box = 0.05, 0.2, (-1.0, 1.0)
    out, info = ULA(h, box, noise_std=sigma, box_rule="revert").step(
        gen, WalkerState.unweighted(x), model, 1)
    kept = out.x == x
    assert 0.05 < float(kept.double().mean()) < 0.5
    assert torch.allclose(info.log_weight_increment, ratio_by_hand(model, x, out.x, h, sigma,
                                                                   box), rtol=1e-12, atol=1e-12)
    # _log_q_revert's masses alone, for means inside, at and beyond the faces.
    mean = torch.tensor([[0.2, -1.0, 1.3], [-2.5, 0.99, 4.0]], dtype=torch.float64)
    frm = torch.tensor([[0.3, -1.0, 1.0], [-0.9, 1.0, 0.97]], dtype=torch.float64)
    to = torch.tensor([[0.3, -0.7, 1.0], [-0.9, 0.5, 0.97]], dtype=torch.float64)
    by_hand = []
    for t_row, f_row, m_row in zip(to.tolist(), frm.tolist(), mean.tolist()):
        total = 0.0
        for t, f, m in zip(t_row, f_row, m_row):
            if t != f:
                total -= (t - m) ** 2 / (2 * sigma**2)
            else:  # the lattice's cell is ~1e-16: below 1e-12 relative to these masses
                total += math.log(0.5 * math.erfc((m + 1) / (sigma * math.sqrt(2)))
                                  + 0.5 * math.erfc((1 - m) / (sigma * math.sqrt(2))))
        by_hand.append(total)
    assert torch.allclose(_log_q_revert(to, frm, mean, sigma, box),
                          torch.tensor(by_hand, dtype=torch.float64), rtol=1e-12, atol=0)


def test_a_float32_lattice_stay_far_from_a_face_weighs_as_the_move_it_is():
    """At ``sigma = 1e-4`` a float32 proposal inside the box rounds onto ``x_i`` itself
    with probability ~2e-4 per coordinate. Far from a face ``P_out ~ e^-(4e6)``: the atom is
    then the lattice cell's Gaussian mass, and the stay's ratio is the move formula's
    ``[(x - m)^2 - (x - m')^2] / (2 sigma^2)`` (to float32 rounding), not a difference of
    two ``log P_out ~ -4e6`` (rounding noise of nats); at a face it is ``P_out``'s."""
    sigma, box = 1e-4, (-1.0, 1.0)
    x = torch.tensor([[0.7], [-1.0]])
    m_fwd = torch.tensor([[0.7 - 3e-5], [-1.0 + 2e-5]])
    m_back = torch.tensor([[0.7 - 3.5e-5], [-1.0 + 4e-5]])
    ratio = (_log_q_revert(x, x, m_back, sigma, box) - _log_q_revert(x, x, m_fwd, sigma, box))
    d_fwd, d_back = (x - m_fwd).double(), (x - m_back).double()
    as_move = ((d_fwd**2 - d_back**2) / (2 * sigma**2))[0, 0]
    assert abs(float(ratio[0]) - float(as_move)) < 1e-4

    cell = (2.0**-24 + 2.0**-23) / 2  # half float32's gaps either side of -1

    def log_atom(m):  # P_out, and the cell's Gaussian mass (~4e-4 of it here)
        gauss = math.exp(-(1 + m) ** 2 / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
        return math.log(0.5 * math.erfc((m + 1) / (sigma * math.sqrt(2)))
                        + 0.5 * math.erfc((1 - m) / (sigma * math.sqrt(2))) + gauss * cell)

    at_face = log_atom(float(m_back[1, 0])) - log_atom(float(m_fwd[1, 0]))
    assert abs(float(ratio[1]) - at_face) < 1e-5


def test_the_options_reach_the_image_contract_and_the_step():
    """Both options on image-shaped walkers: walkers stay in the box, shapes kept, the same
    generator gives the same walkers."""
    model = GaussianEnergy(4)
    model.event_shape = (1, 2, 2)
    for kernel in (ULA(5e-5, (-1.0, 1.0), noise_std=1e-4, box_rule="revert"),
                   MALA(0.05, (-1.0, 1.0), noise_std=0.3, box_rule="revert")):
        a = kernel.init(torch.Generator().manual_seed(28), model, 64)
        out1, _ = kernel.step(torch.Generator().manual_seed(29), a, model, 3)
        out2, _ = kernel.step(torch.Generator().manual_seed(29), a, model, 3)
        assert out1.x.shape == a.x.shape and torch.equal(out1.x, out2.x)
        assert float(out1.x.abs().max()) <= 1.0 and not torch.equal(out1.x, a.x)


@pytest.mark.parametrize("bad", [0.0, -1e-4, float("nan"), float("inf")])
def test_bad_noise_std_and_box_rule_are_refused(bad):
    for cls in (ULA, MALA):
        with pytest.raises(ValueError, match="noise_std"):
            cls(0.1, noise_std=bad)
        with pytest.raises(ValueError, match="box_rule"):
            cls(0.1, (-1.0, 1.0), box_rule="clip")
    assert ULA(0.1, noise_std=1e-4).noise_std == 1e-4
    assert MALA(0.1, (-1.0, 1.0), box_rule="revert").box_rule == "revert"


@pytest.mark.parametrize("noise_std", [None, 0.05])
def test_the_difference_form_of_the_proposal_ratio_is_the_two_densities(noise_std):
    """``log q(x | y) - log q(y | x)`` of the unboxed proposal in its difference form equals
    the two Gaussian log-densities subtracted (float64: to rounding), and in float32 it
    stays within float32 rounding of the float64 value, far below what the ratio means
    (walkers of 784 coordinates, as MNIST's)."""
    from raybm.samplers.langevin import _log_q, _log_q_ratio

    g = torch.Generator().manual_seed(4)
    h = 1e-3
    x = torch.randn(64, 1, 28, 28, generator=g, dtype=torch.float64)
    g_x = 30 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    g_y = g_x + 3 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    sigma = (2 * h) ** 0.5 if noise_std is None else noise_std
    y = x - h * g_x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
    want = _log_q(x, y - h * g_y, h, None, noise_std) - _log_q(y, x - h * g_x, h, None,
                                                                noise_std)
    got = _log_q_ratio(x, y, g_x, g_y, h, noise_std)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    low = _log_q_ratio(x.float(), y.float(), g_x.float(), g_y.float(), h, noise_std)
    assert low.dtype == torch.float64
    torch.testing.assert_close(low, want, rtol=1e-4, atol=1e-4)


def test_ula_skips_the_increment_only_where_nothing_reads_it(tmp_path):
    """A ULA told that no estimator weighs its moves (PCD) makes the same moves from the same
    draws and reports no increment; the trainer tells it so for PCD and not for Jarzynski."""
    import numpy as np

    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    model = GaussianMixtureEnergy(torch.tensor([[0.0, 0.0], [2.0, 1.0]]),
                                  torch.tensor([0.3, -0.2]), std=0.5)
    start = WalkerState.unweighted(torch.randn(64, 2,
                                               generator=torch.Generator().manual_seed(1)))
    weighed, info = ULA(0.1).step(torch.Generator().manual_seed(2), start, model, 5)
    bare, bare_info = ULA(0.1, weighs_moves=False).step(torch.Generator().manual_seed(2),
                                                        start, model, 5)
    assert torch.equal(weighed.x, bare.x)
    assert info.log_weight_increment is not None and bare_info.log_weight_increment is None
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(100, 2)).astype("f4"))
    for algorithm, weighs in (("pcd", False), ("jarzynski", True)):
        cfg = load_config(None, [
            f"data.path={tmp_path / 'x.npy'}", "data.format=floats", "model.kind=mlp",
            "model.widths=[8]", "sampler.name=ula", f"algorithm.name={algorithm}",
            "algorithm.k=2", "algorithm.n_walkers=20", "train.batch_size=20",
            "train.progress=false", "tracking.enabled=false"])
        train, _ = load_data(cfg)
        assert make_trainer(cfg, train).estimator.kernel.weighs_moves is weighs

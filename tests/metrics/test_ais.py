"""AIS against exact enumeration.

Tolerance reasoning. The AIS estimator ``log Z_hat = log mean w`` has (delta method) standard
deviation ``stderr`` and, by Jensen, a downward bias ``E[log Z_hat] - log Z ~ -stderr^2 / 2``.
So ``|log Z_hat - log Z| <= 4 stderr + stderr^2 / 2`` fails with probability ~6e-5 when the
delta method holds; ``test_stderr_is_calibrated`` checks that it does on these models (the
z-scores of repeated runs have unit variance). The extra 1e-3 absorbs the float32 rounding of
the Gibbs probabilities (relative 1e-7 per draw), far below any stderr here. Each test also
asserts that the stderr is small, so the bound has teeth.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybm.metrics.ais import AISResult, ais_log_partition, beta_schedule, log_mean_exp_stderr
from raybm.metrics.exact import log_partition
from raybm.models.rbm import BernoulliRBM, PottsRBM


def _randomise(model, seed: int, coupling_std: float, bias_std: float = 0.5):
    """Couplings ``N(0, coupling_std^2)`` (moderately strong: several times the 1e-2 init),
    biases ``N(0, bias_std^2)``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            std = coupling_std if p.dim() >= 2 else bias_std
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def _assert_close(result: AISResult, exact: float, max_stderr: float) -> None:
    se = result.stderr
    assert 0 < se < max_stderr, se
    assert abs(result.log_z - exact) <= 4 * se + se**2 / 2 + 1e-3, (result.log_z, exact, se)


def test_beta_schedule_shape():
    for n in (2, 10, 29, 30, 1000, 14500):
        b = beta_schedule(n)
        assert b.shape == (n,) and b.dtype == torch.float64
        assert b[0] == 0 and b[-1] == 1 and (b.diff() >= 0).all()
    b = beta_schedule(14500)  # Salakhutdinov & Murray's own counts
    assert int((b < 0.5).sum()) == 500 and int(((b >= 0.5) & (b < 0.9)).sum()) == 4000


@pytest.mark.parametrize("bad", [[0.0], [0.1, 1.0], [0.0, 0.9], [0.0, 0.6, 0.5, 1.0]])
def test_bad_schedule_rejected(bad):
    with pytest.raises(ValueError):
        ais_log_partition(torch.Generator(), BernoulliRBM(3, 2), 10, bad)


def test_log_mean_exp_stderr_matches_direct_formula():
    log_w = torch.tensor([0.1, -0.3, 0.5, 0.0, 1.2], dtype=torch.float64) + 700.0  # overflows exp
    log_z, se = log_mean_exp_stderr(log_w)
    w = torch.exp(log_w - 700.0)
    assert log_z == pytest.approx(700.0 + math.log(w.mean()), abs=1e-12)
    assert se == pytest.approx(float(w.std() / (math.sqrt(5) * w.mean())), rel=1e-12)


def test_independent_model_is_exact():
    # No couplings and the base = the model's own visible bias: every chain's weight is
    # log Z_0 + log(Z_hidden(1) Z_label(1) / (2^M L)) whatever its states, so AIS is exact.
    model = _randomise(BernoulliRBM(7, 4, n_labels=3), seed=1, coupling_std=1.0)
    with torch.no_grad():
        model.weight.zero_()
        model.label_weight.zero_()
    result = ais_log_partition(torch.Generator().manual_seed(0), model, 20, 50)
    assert result.log_z == pytest.approx(log_partition(model), abs=1e-10)
    assert result.stderr < 1e-10
    assert result.log_weights.shape == (20,) and result.log_weights.dtype == torch.float64


def test_bernoulli_with_labels_matches_exact():
    model = _randomise(BernoulliRBM(12, 6, n_labels=3), seed=2, coupling_std=2.0)
    result = ais_log_partition(torch.Generator().manual_seed(0), model, 500, 1000)
    _assert_close(result, log_partition(model), max_stderr=0.05)


def test_bernoulli_uniform_base_matches_exact():
    # A base bias different from the model's exercises the (1 - beta) a0 + beta a mixing.
    model = _randomise(BernoulliRBM(12, 6), seed=3, coupling_std=1.5, bias_std=1.0)
    base = torch.zeros(12)
    result = ais_log_partition(torch.Generator().manual_seed(0), model, 500, 1000, base_vbias=base)
    _assert_close(result, log_partition(model), max_stderr=0.05)


def test_potts_matches_exact():
    model = _randomise(PottsRBM(6, 3, 5), seed=4, coupling_std=1.5)
    result = ais_log_partition(torch.Generator().manual_seed(0), model, 500, 1000)
    _assert_close(result, log_partition(model), max_stderr=0.05)


def test_potts_with_labels_explicit_schedule_matches_exact():
    model = _randomise(PottsRBM(6, 3, 5, n_labels=2), seed=5, coupling_std=1.5)
    base = torch.randn(6, 3, generator=torch.Generator().manual_seed(9))
    betas = torch.linspace(0, 1, 1000, dtype=torch.float64) ** 0.5  # denser near beta = 1
    result = ais_log_partition(torch.Generator().manual_seed(0), model, 500, betas, base)
    _assert_close(result, log_partition(model), max_stderr=0.05)


def test_stderr_is_calibrated():
    # Short schedules give large, honest stderrs: across independent runs the z-scores
    # (log Z_hat - log Z) / stderr must have mean square ~1. With 24 runs, mean(z^2) is
    # ~chi^2_24 / 24, whose 0.05% and 99.95% quantiles are 0.34 and 2.25; the bounds below
    # leave room for the tails of the estimated stderr.
    model = _randomise(BernoulliRBM(12, 6, n_labels=3), seed=6, coupling_std=2.0)
    exact = log_partition(model)
    z = []
    for seed in range(24):
        r = ais_log_partition(torch.Generator().manual_seed(100 + seed), model, 100, 60)
        assert r.stderr > 0.02  # the schedule is short enough for the test to mean something
        z.append((r.log_z - exact) / r.stderr)
    mean_sq = float(torch.tensor(z).pow(2).mean())
    assert 0.3 < mean_sq < 2.6, z


def test_base_shape_checked():
    with pytest.raises(ValueError):
        ais_log_partition(torch.Generator(), PottsRBM(4, 3, 2), 10, 10, base_vbias=torch.zeros(4))

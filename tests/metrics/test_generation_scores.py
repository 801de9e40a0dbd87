"""Generation scores on sets whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raybm.metrics import generation
from raybm.metrics.generation import (
    SCORE_NAMES,
    generation_scores,
    nearest_distances,
    score_curve,
)
from raybm.models.rbm import BernoulliRBM, PottsRBM
from raybm.samplers import gibbs


def _clusters(gen: torch.Generator, prototypes: torch.Tensor, n: int, flip: float) -> torch.Tensor:
    """``n`` rows: a random prototype with each bit flipped with probability ``flip``."""
    rows = prototypes[torch.randint(0, len(prototypes), (n,), generator=gen)]
    noise = (torch.rand(rows.shape, generator=gen) < flip).to(torch.uint8)
    return rows ^ noise


def _bits(gen: torch.Generator, n: int, n_sites: int) -> torch.Tensor:
    return torch.randint(0, 2, (n, n_sites), generator=gen).to(torch.uint8)


def _brute_nearest(a: np.ndarray, b: np.ndarray, exclude_self: bool) -> np.ndarray:
    d = (a[:, None, :] != b[None, :, :]).sum(-1).astype(float)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(1).astype(np.int64)


@pytest.mark.parametrize("n_states", [2, 4])
def test_nearest_distances_match_brute_force(n_states):
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, n_states, (37, 11), generator=gen).to(torch.uint8)
    b = torch.randint(0, n_states, (23, 11), generator=gen).to(torch.uint8)
    # block_elements=50 splits a into blocks of 2 rows: exercises the blocked diagonal
    for small in (False, True):
        kw = {"block_elements": 50} if small else {}
        got = nearest_distances(a, b, n_states, **kw)
        np.testing.assert_array_equal(got.numpy(), _brute_nearest(a.numpy(), b.numpy(), False))
        got = nearest_distances(a, a, n_states, exclude_self=True, **kw)
        np.testing.assert_array_equal(got.numpy(), _brute_nearest(a.numpy(), a.numpy(), True))


def test_copies_of_the_data():
    gen = torch.Generator().manual_seed(1)
    data = _bits(gen, 300, 64)  # 2^64 states: 300 distinct rows with overwhelming probability
    copies = data[torch.randperm(300, generator=gen)]
    s = generation_scores(gen, data, copies)
    assert set(s) == set(SCORE_NAMES)
    # every point's nearest sample is its copy at distance 0 < the nearest other point
    assert s["aa_truth"] == 0.0 and s["aa_syn"] == 0.0 and s["aai"] == 0.0
    assert s["copy_rate"] == 1.0
    assert s["first_moment_error"] < 1e-12 and s["second_moment_error"] < 1e-12
    assert s["spectrum_error"] < 1e-10
    # The same multiset of rows in another random order: gzip finds no cross-row matches in
    # random bits, so the sizes differ only by block-boundary effects (~1%).
    assert s["entropy_ratio"] == pytest.approx(1.0, abs=0.03)


def test_same_distribution_gives_half():
    # Two independent samples of one clustered distribution: the 1-NN classifier is at chance.
    # aa_truth and aa_syn are means of 600 indicators (ties 1/2) with standard deviation at
    # most 0.5 / sqrt(600) = 0.02 each if independent; nearest-neighbour indicators are only
    # locally correlated, so +-0.1 on aai is > 4 standard deviations even if that doubles it.
    # (Exact expectation: (n - 1) / (2n - 1) = 0.4996 for continuous distances.)
    gen = torch.Generator().manual_seed(2)
    protos = _bits(gen, 6, 48)
    data, samples = _clusters(gen, protos, 600, 0.15), _clusters(gen, protos, 600, 0.15)
    s = generation_scores(gen, data, samples)
    assert abs(s["aai"] - 0.5) < 0.1, s
    assert abs(s["aa_truth"] - 0.5) < 0.12 and abs(s["aa_syn"] - 0.5) < 0.12, s
    assert s["entropy_ratio"] == pytest.approx(1.0, abs=0.05)
    assert s["spectrum_error"] < 0.1
    assert s["copy_rate"] < 0.02


def test_uniform_noise_against_structured_data():
    # Data: 4 tight clusters, samples: uniform noise. Each data point's nearest other data
    # point (~0.05 N = 3 sites away) beats any noise point (~N/2 away): aa_truth ~ 1. A noise
    # point's distance to a row is Binomial(64, 1/2) (mean 32, sd 4): its nearest of 399 other
    # noise points is ~3 sd closer (~20), while the data offer only ~4 independent distances
    # (one per cluster, spread by the 5% flips), the nearest ~1 sd closer (~25-28); so aa_syn is
    # well above 1/2 and aai near 1.
    gen = torch.Generator().manual_seed(3)
    data = _clusters(gen, _bits(gen, 4, 64), 400, 0.05)
    noise = _bits(gen, 400, 64)
    s = generation_scores(gen, data, noise)
    assert s["aa_truth"] > 0.98
    assert s["aa_syn"] > 0.7 and s["aai"] > 0.85, s
    assert s["entropy_ratio"] > 1.3  # noise does not compress, clusters do
    assert s["copy_rate"] == 0.0


def test_samples_far_from_the_data_give_one():
    # Samples clustered around other prototypes: both classifiers always win, aai ~ 1.
    gen = torch.Generator().manual_seed(4)
    data = _clusters(gen, _bits(gen, 4, 64), 400, 0.05)
    samples = _clusters(gen, _bits(gen, 4, 64), 500, 0.05)  # larger: subsampled to 400
    s = generation_scores(gen, data, samples)
    assert s["aai"] > 0.98 and s["aa_truth"] > 0.98 and s["aa_syn"] > 0.98


@pytest.mark.parametrize("n_states", [2, 3])
def test_moment_errors_within_sampling_error(n_states):
    # Two independent samples of n rows of independent sites with frequencies f. Each
    # frequency difference has variance 2 f (1 - f) / n; for features a, b of distinct sites the
    # connected-correlation difference has variance 2 v_a v_b / n (v = f (1 - f)) to leading
    # order. So RMSE^2 / E[RMSE^2] ~ chi^2_D / D: with D = 120 (first) it has sd 0.13; the
    # ~7000 second-order terms are nearly independent, sd a few percent. Bounds: ~4 sd.
    gen = torch.Generator().manual_seed(5 + n_states)
    n, n_sites = 2000, 120 if n_states == 2 else 40
    logits = torch.randn(n_sites, n_states, generator=gen)
    freq = torch.softmax(logits, -1)
    def draw():
        return torch.multinomial(freq, n, replacement=True, generator=gen).T.to(torch.uint8)
    a, b = draw(), draw()
    s = generation_scores(gen, a, b, n_states=n_states)
    f = freq[:, 1:] if n_states == 2 else freq  # features: the sites, or one-hot columns
    v = (f * (1 - f)).reshape(-1).double()
    site = torch.arange(len(v)) // (1 if n_states == 2 else n_states)
    pairs = site[:, None] < site[None, :]
    expected_first = float((2 * v / n).mean())
    expected_second = float((2 * torch.outer(v, v) / n)[pairs].mean())
    assert 0.45 < s["first_moment_error"] ** 2 / expected_first < 1.6, s
    assert 0.8 < s["second_moment_error"] ** 2 / expected_second < 1.25, s
    assert abs(s["aai"] - 0.5) < 0.1


def test_categorical_copies_and_sizes():
    gen = torch.Generator().manual_seed(6)
    data = torch.randint(0, 5, (200, 30), generator=gen).to(torch.uint8)
    samples = torch.cat([data[:50], torch.randint(0, 5, (100, 30), generator=gen).to(torch.uint8)])
    s = generation_scores(gen, data.numpy(), samples, max_rows=80)  # numpy input accepted
    assert s["copy_rate"] == pytest.approx(50 / 150)
    assert all(math.isfinite(x) for x in s.values())


def test_mismatched_shapes_rejected():
    gen = torch.Generator()
    a, b = torch.zeros(5, 4, dtype=torch.uint8), torch.zeros(5, 3, dtype=torch.uint8)
    with pytest.raises(ValueError):
        generation_scores(gen, a, b)


def test_score_curve_runs_one_population(monkeypatch):
    sweeps = []
    real_step = gibbs.step

    def counting_step(gen, state, model, k, **kw):
        sweeps.append(k)
        return real_step(gen, state, model, k, **kw)

    monkeypatch.setattr(generation.gibbs, "step", counting_step)
    model = BernoulliRBM(16, 8, n_labels=2)
    model.init_parameters(torch.Generator().manual_seed(0), weight_std=0.5)
    gen = torch.Generator().manual_seed(7)
    data = _bits(gen, 100, 16)
    t_list = [0, 1, 5, 5, 20]
    curves = score_curve(gen, model, data, t_list, n_samples=80, label=1)
    assert set(curves) == set(SCORE_NAMES)
    assert all(len(c) == len(t_list) for c in curves.values())
    assert sweeps == [1, 4, 15]  # increments of one chain, never a restart
    with pytest.raises(ValueError):
        score_curve(gen, model, data, [5, 1], n_samples=10)


def test_score_curve_potts():
    model = PottsRBM(10, 3, 4)
    model.init_parameters(torch.Generator().manual_seed(0), weight_std=0.5)
    gen = torch.Generator().manual_seed(8)
    data = torch.randint(0, 3, (60, 10), generator=gen).to(torch.uint8)
    curves = score_curve(gen, model, data, [0, 3], n_samples=60)
    assert all(len(c) == 2 and all(math.isfinite(x) for x in c) for c in curves.values())

"""Resampling: ancestors drawn in proportion to the weights, ESS on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.algorithms.resample import ess_fraction, log_mean_weight, resample


def test_ess_known_cases():
    assert ess_fraction(torch.zeros(10)) == pytest.approx(1.0)
    one_hot = torch.full((10,), -1e9)
    one_hot[3] = 0.0
    assert ess_fraction(one_hot) == pytest.approx(0.1)
    lw = torch.log(torch.tensor([1.0, 1.0, 2.0]))
    assert ess_fraction(lw) == pytest.approx((4.0**2 / 6.0) / 3)
    assert log_mean_weight(lw) == pytest.approx(math.log(4 / 3))


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_ancestor_counts_match_the_weights(method):
    """Offspring counts average n w_i: over 2,000 repetitions the mean count of each walker is
    within 5 standard errors of n w_i (systematic counts are floor/ceil of n w_i exactly)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor([0.05, 0.4, 0.15, 0.3, 0.1], dtype=torch.float64)
    n, reps = 50, 2000
    counts = torch.stack([torch.bincount(resample(gen, w.log(), n, method), minlength=5)
                          for _ in range(reps)]).double()
    mean, se = counts.mean(0), counts.std(0) / math.sqrt(reps) + 1e-12
    assert ((mean - n * w).abs() <= 5 * se + 1e-9).all()
    if method == "systematic":
        assert ((counts - n * w).abs() < 1 + 1e-9).all()


def test_unknown_method_is_refused():
    with pytest.raises(ValueError):
        resample(torch.Generator(), torch.zeros(3), 3, "stratified-ish")

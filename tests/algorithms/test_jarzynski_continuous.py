"""Jarzynski on float walkers: the running log Z of a Gaussian whose parameters move, against
its closed form, with ULA (whose log-weight increments the estimator must add) and MALA.

Tolerance: ``log mean exp(A)`` over ``n`` walkers has a delta-method standard error of about
``sqrt(1 / ESS)``; across resamplings the banked estimates add their variances. Each check
allows 5 SE. ULA with its increments dropped (an estimator that trusted the kernel to be
invariant) drifts by many SE on the same run: the test has teeth.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybm.algorithms.base import Batch
from raybm.algorithms.jarzynski import Jarzynski
from raybm.algorithms.resample import ess_fraction
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.samplers.base import KernelInfo
from raybm.samplers.langevin import MALA, ULA

N = 40_000


class UncorrectedULA(ULA):
    """ULA whose increments are dropped: what a Jarzynski that ignored them would do."""

    def step(self, gen, state, model, k):
        out, _ = super().step(gen, state, model, k)
        return out, KernelInfo()


def track_log_z(kernel, ess_threshold: float, updates: int = 80):
    """Move a 2-D Gaussian's mean and precision on a fixed schedule; after each parameter
    change charge the work, as training does. Returns (max |error| / SE, last error)."""
    torch.manual_seed(0)
    model = GaussianEnergy(2)
    est = Jarzynski(k=1, ess_threshold=ess_threshold, kernel=kernel)
    gen = torch.Generator().manual_seed(0)
    walkers = est.init_walkers(gen, model, N)
    assert est.log_z_base == pytest.approx(model.log_partition())
    batch = Batch(torch.zeros(4, 2))
    banked_var, worst, error = 0.0, 0.0, 0.0
    for t in range(1, updates + 1):
        out = est.estimate(gen, model, batch, walkers, "joint")
        if out.info["resampled"]:
            banked_var += 1 / (out.info["ess"] * N)
        walkers = out.walkers
        token = est.before_update(model, walkers)
        with torch.no_grad():
            model.mean[0] += 0.04
            model.log_precision += 0.02
        walkers = est.after_update(model, walkers, token)
        if t % 10 == 0:
            se = math.sqrt(banked_var + 1 / (ess_fraction(walkers.log_weight) * N))
            error = est.log_z(walkers) - model.log_partition()
            worst = max(worst, abs(error) / se)
    return worst, error, est.n_resamplings


@pytest.mark.parametrize("kernel", [ULA(0.25), MALA(0.25)], ids=["ula", "mala"])
@pytest.mark.parametrize("ess_threshold", [0.0, 0.8], ids=["no-resampling", "resampling"])
def test_running_log_z_follows_the_closed_form(kernel, ess_threshold):
    worst, _, n_resamplings = track_log_z(kernel, ess_threshold)
    assert worst <= 5
    assert (n_resamplings > 0) == (ess_threshold > 0)


def test_dropping_ulas_increments_is_caught():
    worst, error, _ = track_log_z(UncorrectedULA(0.25), 0.0)
    assert worst > 10 and error < -0.3


def test_mixture_walkers_start_exact_and_keep_the_mode_weights():
    """The research's student: walkers drawn exactly, then held by MALA, keep its weights."""
    model = GaussianMixtureEnergy(torch.tensor([[-4.0, 0.0], [3.0, 0.0]]),
                                  log_weights=torch.tensor([math.log(0.25), math.log(0.75)]))
    est = Jarzynski(k=5, kernel=MALA(0.3))
    gen = torch.Generator().manual_seed(1)
    walkers = est.init_walkers(gen, model, N)
    assert est.log_z_base == pytest.approx(model.log_partition())
    out = est.estimate(gen, model, Batch(torch.zeros(4, 2)), walkers, "joint")
    minor = float((out.walkers.x[:, 0] < -0.5).double().mean())
    assert abs(minor - 0.25) <= 5 * math.sqrt(0.25 * 0.75 / N)
    assert 0 < out.info["acceptance"] <= 1

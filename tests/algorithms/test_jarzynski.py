"""Jarzynski-weighted walkers: the work update gives unbiased weights for the new parameters,
and the running log Z estimate follows the exact log Z of a small model during training."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.algorithms.jarzynski import Jarzynski
from raybm.samplers.exact import independent_log_partition, sample_independent
from raybm.config import load_config
from raybm.data.synthetic import teacher_rbm_samples
from raybm.metrics.exact import as_float64, log_partition
from raybm.models import BernoulliRBM
from raybm.train import make_trainer, run_updates
from tests.enumeration import random_model


def teacher_problem(n_walkers: int, batch_size: int, precision: str = "fp32"):
    """A strong 10 x 3 teacher's samples and a Jarzynski config whose log Z moves > 0.3 nats
    in a few hundred updates, with several resamplings (ESS threshold 0.97)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(10, 3, generator=g, dtype=torch.float64) * 1.5
    train = teacher_rbm_samples(g, W, -W.sum(1) / 2, -W.sum(0) / 2, 3000)
    config = load_config(None, [
        "algorithm.name=jarzynski", "algorithm.k=2", f"algorithm.n_walkers={n_walkers}",
        "algorithm.ess_threshold=0.97", "model.n_hidden=6", "model.labels=false",
        "optimizer.name=adam", "optimizer.lr=0.01", f"train.batch_size={batch_size}",
        "train.progress=false", "train.log_every=50", f"sampler.precision={precision}"])
    return config, train


@pytest.mark.parametrize("kind, n_labels", [("bernoulli", 0), ("bernoulli", 3), ("potts", 2)])
def test_zero_coupling_model_is_sampled_exactly_with_its_log_z(kind, n_labels):
    model = as_float64(random_model(kind, torch.Generator().manual_seed(0), n_labels))
    with torch.no_grad():
        model.weight.zero_()
        if n_labels:
            model.label_weight.zero_()
    assert independent_log_partition(model) == pytest.approx(log_partition(model), abs=1e-9)
    walkers = sample_independent(torch.Generator().manual_seed(1), model, 50_000)
    if kind == "bernoulli":
        freq = walkers.x.double().mean(0)
        p = torch.sigmoid(model.vbias)
        assert ((freq - p).abs() <= 5 * (p * (1 - p) / 50_000).sqrt()).all()


def test_work_update_reweights_exact_samples_to_the_new_model():
    """Samples of theta, reweighted by -(F' - F), estimate log Z'/Z and E_theta'[v] within
    5 standard errors (delta method on the importance weights)."""
    gen = torch.Generator().manual_seed(2)
    old = as_float64(random_model("bernoulli", gen, 3, scale=0.5))
    new = as_float64(random_model("bernoulli", gen, 3, scale=0.5))
    with torch.no_grad():
        for p_old, p_new in zip(old.parameters(), new.parameters()):
            p_new.copy_(p_old + 0.3 * (p_new - p_old))  # a modest update, like training
    from tests.enumeration import all_visible_states

    vs = all_visible_states(old)
    states = torch.arange(len(vs) * 3)
    f_old = old.free_energy(vs[states // 3], states % 3).detach()
    draws = torch.multinomial(torch.softmax(-f_old, 0), 100_000, replacement=True, generator=gen)
    from raybm.walkers import WalkerState

    walkers = WalkerState.unweighted(vs[draws // 3], draws % 3)
    est = Jarzynski(k=1)
    walkers = est.reweight(new, walkers, est.before_change(old, walkers))
    lw = walkers.log_weight
    w = torch.exp(lw - lw.max())
    log_ratio = float(torch.logsumexp(lw, 0) - math.log(len(lw)))
    exact = log_partition(new) - log_partition(old)
    se = float((w / w.mean()).std() / math.sqrt(len(w)))
    assert abs(log_ratio - exact) <= 5 * se, (log_ratio, exact, se)


def test_running_log_z_tracks_the_exact_log_z_through_resamplings():
    """Training a 10 x 6 RBM on a strong teacher's samples: the Jarzynski log Z (with several
    resampling events) stays within 0.05 nats of the exact log Z. The weights' own delta-method
    error is ~0.005 per resampling segment at 4,000 walkers; 0.05 leaves room for the O(1/n)
    bias that resampling adds, and is far below the ~0.5-nat drift of log Z during training."""
    config, train = teacher_problem(n_walkers=4000, batch_size=300)
    trainer = make_trainer(config, train)
    start = log_partition(trainer.model)
    run_updates(trainer, 400)
    exact = log_partition(trainer.model)
    assert abs(exact - start) > 0.3, "log Z barely moved: the test would prove nothing"
    assert trainer.estimator.n_resamplings >= 2, "no resampling: the carry-over is untested"
    assert abs(trainer.estimator.log_z(trainer.walkers) - exact) <= 0.05


def test_walkers_must_start_from_zero_couplings():
    model = BernoulliRBM(4, 3)
    model.init_parameters(torch.Generator().manual_seed(0), weight_std=0.1)
    with pytest.raises(ValueError, match="without couplings"):
        Jarzynski(k=1).init_walkers(torch.Generator(), model, 10)

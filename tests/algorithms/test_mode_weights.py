"""The Jarzynski research's Gaussian-mixture result, shortened (the full study is
``benchmarks/gmm_mode_weights.py``): ULA walkers cannot cross between modes 16 standard
deviations apart, so PCD loses the minor mode, CD never moves its weight from the start, and
Jarzynski-weighted walkers find the data's weight.

Shortened to d = 10, 1,800 training points, 2,000 walkers, 800 full-batch updates at ten
times the research's learning rates (the means travel the same distance). The Jarzynski
tolerance is measured: over 8 seeds the minor weight was 0.272 +- 0.030 (sd; values 0.232 to
0.307) against a data fraction of 0.252, so the band is the data fraction +- 3 sd. PCD ended
at 0.000 and CD at 0.486-0.487 on every seed tried.
"""

from __future__ import annotations

import pytest

from raybm.config import load_config
from raybm.data.load import load_data
from raybm.train import make_trainer, run_updates

SHORT = ["data.format=gaussian_mixture", "data.mixture.dim=10", "data.mixture.n_samples=2000",
         "data.test_fraction=0.1", "model.kind=gaussian_mixture",
         "model.init_means=[[-0.1], [0.1]]", "model.init_noise=0.01", "sampler.name=ula",
         "sampler.step_size=0.1", "algorithm.k=1", "train.batch_size=2000",
         "train.log_every=50", "train.progress=false", "tracking.enabled=false"]
RATES = {1: ["optimizer.lr=0.025", "optimizer.param_lr={log_weights: 0.0625}"],
         10: ["optimizer.lr=0.25", "optimizer.param_lr={log_weights: 0.625}"]}
SD_OVER_SEEDS = 0.030


def train_student(method: list[str], rates: int = 1):
    config = load_config(None, SHORT + method + RATES[rates])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    run_updates(trainer, 800)
    model = trainer.model
    minor = int(model.means.detach()[:, 0].argmin())
    data_fraction = float((train.labels == 0).double().mean())  # label 0: the -10 e1 mode
    return trainer, float(model.mode_weights()[minor]), data_fraction


def test_jarzynski_finds_the_minor_mode_weight_and_log_z():
    trainer, weight, truth = train_student(
        ["algorithm.name=jarzynski", "algorithm.n_walkers=2000", "algorithm.ess_threshold=0.71"])
    assert trainer.model.means.detach()[:, 0].sort().values.tolist() == pytest.approx(
        [-10, 6], abs=0.3)
    assert abs(weight - truth) < 3 * SD_OVER_SEEDS
    # The running log Z of the weighted walkers against the student's closed form, after 800
    # updates in which log Z moved by the means' travel and the weights' change. Each
    # resampling banks log(mean weight) with a variance of about CV^2 / n, CV^2 <= 0.4 at the
    # threshold: 4 standard deviations of the sum over the epochs.
    epochs = trainer.estimator.n_resamplings + 1
    log_z = trainer.estimator.log_z(trainer.walkers)
    assert log_z == pytest.approx(trainer.model.log_partition(), abs=4 * (epochs * 0.4 / 2000) ** 0.5)


def test_pcd_loses_the_minor_mode():
    _, weight, _ = train_student(
        ["algorithm.name=pcd", "algorithm.n_walkers=2000", "algorithm.walker_init=data"])
    assert weight < 0.05


def test_cd_keeps_the_initial_weight():
    # The research runs CD with ten times the learning rates; its weight stays near 1/2.
    _, weight, _ = train_student(["algorithm.name=cd"], rates=10)
    assert 0.42 < weight < 0.55

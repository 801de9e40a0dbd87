"""DCD-VE (``algorithms.dcd``) where the answer is known: a Gaussian energy
``E(x) = |x - mu|^2 / (2 tau^2) + d log tau`` on Gaussian data ``N(m, s^2 I)``.

Closed forms (``v = tau^2``, each point's term divided by ``sigma^2``, as the estimator does):

- taylor: the expected loss is ``A / (2 v^2) - d / v`` with ``A = d (s^2 + sigma^2) + |m -
  mu|^2``, so ``dL/dmu = (mu - m) / v^2`` and ``dL/dlog tau = -2 A / v^2 + 2 d / v``: the
  fixed point ``mu = m``, ``v = s^2 + sigma^2`` (the expansion's O(sigma^2) bias);
- posterior (exact posterior draws): the posterior of ``x'`` given ``y`` is ``N(mu + r (y -
  mu), c I)`` with ``r = v / (v + sigma^2)``, ``c = r sigma^2``, so ``dL/dmu = -(m - mu) /
  (v (v + sigma^2))`` and ``dL/dlog tau = [-(d s^2 + |m - mu|^2) + d c + r^2 (d (s^2 +
  sigma^2) + |m - mu|^2)] / (v sigma^2)``: zero at ``mu = m``, ``v = s^2`` exactly.
"""

from __future__ import annotations

import math

import pytest
import torch

from raybm.algorithms.base import Batch
from raybm.algorithms.dcd import DiffusionCD, PosteriorEnergy
from raybm.data.dataset import Dataset
from raybm.models.gaussian import GaussianMixtureEnergy
from raybm.samplers.langevin import MALA, ULA

D = 2
M = torch.tensor([0.5, -1.0])
S = 1.0  # the data's std


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian(mu: list[float], tau: float) -> GaussianMixtureEnergy:
    return GaussianMixtureEnergy(torch.tensor([mu]), std=tau, learn_std=True)


def batch(g: torch.Generator, n: int) -> Batch:
    return Batch(M + S * torch.randn(n, D, generator=g))


def mean_gradient(estimator: DiffusionCD, model, batches: int, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean over ``batches`` of the estimator's gradient in ``(mu, log tau)``, and its
    standard error."""
    g = gen(1)
    rows = []
    for _ in range(batches):
        model.zero_grad()
        estimator.estimate(g, model, batch(g, n), None, "joint").loss.backward()
        rows.append(torch.cat([model.means.grad[0], model.log_stds.grad]).double())
    rows = torch.stack(rows)
    return rows.mean(0), rows.std(0) / math.sqrt(batches)


def taylor_closed_form(mu: torch.Tensor, tau: float, sigma: float) -> torch.Tensor:
    v = tau * tau
    a = D * (S * S + sigma * sigma) + float((M - mu).square().sum())
    return torch.cat([(mu - M) / v**2, torch.tensor([-2 * a / v**2 + 2 * D / v])]).double()


def posterior_closed_form(mu: torch.Tensor, tau: float, sigma: float) -> torch.Tensor:
    v, var = tau * tau, sigma * sigma
    r, off = v / (v + var), float((M - mu).square().sum())
    c = r * var
    g_mu = -(M - mu) / (v * (v + var))
    g_tau = (-(D * S * S + off) + D * c + r * r * (D * (S * S + var) + off)) / (v * var)
    return torch.cat([g_mu, torch.tensor([g_tau])]).double()


@pytest.mark.parametrize("probes", [0, 3], ids=["exact-laplacian", "hutchinson"])
def test_taylor_gradient_matches_its_closed_form(probes):
    mu, tau, sigma = [1.5, 0.0], 1.6, 0.3
    model = gaussian(mu, tau)
    estimator = DiffusionCD(k=1, kernel=ULA(0.01), sigma=sigma, probes=probes)
    mean, se = mean_gradient(estimator, model, 200, 256)
    truth = taylor_closed_form(torch.tensor(mu), tau, sigma)
    assert ((mean - truth).abs() < 4 * se + 1e-6).all(), (mean, truth, se)


def test_posterior_gradient_matches_its_closed_form_with_converged_chains():
    """MALA on the posterior, 40 steps of half its width from the clean data: converged
    (the drift contracts the distance to the posterior mean by half per step), and MALA's
    accept step leaves the posterior exact."""
    mu, tau, sigma = [1.5, 0.0], 1.6, 0.3
    v = tau * tau
    c = v * sigma**2 / (v + sigma**2)
    model = gaussian(mu, tau)
    estimator = DiffusionCD(k=40, kernel=MALA(0.5 * c), route="posterior", sigma=sigma,
                            posterior_start="data")
    mean, se = mean_gradient(estimator, model, 200, 256)
    truth = posterior_closed_form(torch.tensor(mu), tau, sigma)
    assert ((mean - truth).abs() < 4 * se + 1e-6).all(), (mean, truth, se)


def train(estimator: DiffusionCD, updates: int) -> GaussianMixtureEnergy:
    model = gaussian([1.0, 0.0], 1.0)
    # Plain SGD: near the fixed point the gradient is linear in the error, so the iterates
    # contract at a known rate; Adam's steps shrink with the gradient's noise instead.
    # (Far from it, the gradient in log tau grows like |m - mu|^2 / tau^4: started at a width
    # of 0.5 two units away, one step of 0.1 sent tau to 10^4.)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    g = gen(2)
    for i in range(updates):
        if i == updates // 2:
            for group in optimizer.param_groups:
                group["lr"] = 0.01
        optimizer.zero_grad()
        estimator.estimate(g, model, batch(g, 512), None, "joint").loss.backward()
        optimizer.step()
    return model


def test_taylor_training_recovers_the_mean_and_its_biased_variance():
    """Trained from (1, 0), width 1: the mean is the data's, the variance the data's plus
    sigma^2 (1.09 here, not 1: the O(sigma^2) truncation of the heat expansion)."""
    sigma = 0.3
    model = train(DiffusionCD(k=1, kernel=ULA(0.01), sigma=sigma), 600)
    assert model.means.detach()[0] == pytest.approx(M, abs=0.05)
    assert float(model.stds().detach()[0]) ** 2 == pytest.approx(S * S + sigma * sigma, abs=0.04)


def test_posterior_training_recovers_the_mean_and_the_variance():
    """The posterior route from the clean data with MALA: a Gibbs sweep that leaves the model
    invariant, so the fixed point is the data's own variance."""
    sigma = 0.3
    c = sigma**2 / 2  # about the posterior's width near the fixed point (v ~ 1)
    model = train(DiffusionCD(k=10, kernel=MALA(0.5 * c), route="posterior", sigma=sigma,
                              posterior_start="data"), 600)
    assert model.means.detach()[0] == pytest.approx(M, abs=0.05)
    assert float(model.stds().detach()[0]) ** 2 == pytest.approx(S * S, abs=0.04)


def test_a_noise_schedule_draws_each_points_scale_between_its_bounds():
    estimator = DiffusionCD(k=1, kernel=ULA(0.01), sigma=0.01, sigma_max=1.0)
    scales = estimator.noise_scales(gen(), 20000)
    assert scales.min() >= 0.01 and scales.max() <= 1.0
    # log-uniform: the median is the geometric mean of the bounds
    assert float(scales.median()) == pytest.approx(0.1, rel=0.05)


def test_the_posterior_energy_adds_the_pull_to_the_noised_point():
    model = gaussian([0.0, 0.0], 1.0)
    y = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    post = PosteriorEnergy(model, y, 0.5)
    x = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    e, grad = post.energy_and_grad(x)
    assert torch.allclose(e, model.energy(x) + 2 * (x - y).square().sum(1))
    assert torch.allclose(grad, model.grad_energy(x) + 4 * (x - y))
    assert torch.allclose(post.energy(x), e)


def test_a_schedule_on_the_posterior_route_is_one_line():
    from raybm.config import load_config
    from raybm.errors import InputError

    base = ["data.format=toy2d", "model.kind=mlp", "sampler.name=ula",
            "algorithm.name=dcd_ve"]
    with pytest.raises(InputError, match="algorithm") as caught:
        load_config(None, base + ["algorithm.route=posterior", "algorithm.sigma_max=1.0"])
    assert "route taylor" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="sigma_max 0.03 must exceed sigma 0.05"):
        load_config(None, base + ["algorithm.sigma_max=0.03"])
    with pytest.raises(InputError, match="algorithm.name"):
        load_config(None, ["algorithm.name=dcd_ve"])  # an RBM


def _dcd_gradients(rank: int, world: int, route: str = "taylor") -> dict[str, torch.Tensor]:
    """The energy's DCD gradient on this rank's shard of 9 points, summed over the ranks; the
    noise of every point drawn once for all (per point, whatever the split)."""
    from raybm.distributed.comm import TorchComm
    from raybm.gradients import sum_gradients
    from raybm.models.neural import MLPEnergy
    from raybm.samplers.short_run import ShortRunLangevin
    from raybm.walkers import shard_slice

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    model = MLPEnergy(2, (8, 8), gen=torch.Generator().manual_seed(1), zero_last=False)
    x = torch.randn(9, 2, generator=g)
    eps = torch.randn(9, 2, generator=g)
    part = shard_slice(9, world, rank)

    class Fixed(DiffusionCD):
        def perturb(self, gen, xs):
            sigma = torch.full((xs.shape[0],), self.sigma)
            return xs + self.sigma * eps[part], sigma

    # A Langevin kernel's noise is per rank by design: the posterior route is compared with a
    # noiseless one (short-run Langevin without noise: a deterministic descent of the
    # posterior energy); the split of the sum is what is checked
    est = Fixed(k=2, kernel=ShortRunLangevin(0.001, 0.0), route=route, sigma=0.2,
                posterior_start="data")
    loss = est.estimate(torch.Generator().manual_seed(rank), model,
                        Batch(x[part], total_weight=9.0), None, "joint").loss
    loss.backward()
    if world > 1:
        sum_gradients(TorchComm(), model, loss)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("route", ["taylor", "posterior"])
def test_two_ranks_sum_the_dcd_gradient_to_the_single_process_one(route):
    from raybm.distributed.spawn import run_ranks

    single = _dcd_gradients(0, 1, route)
    for ranked in run_ranks(2, _dcd_gradients, route):
        assert ranked.keys() == single.keys()
        for name, value in single.items():
            assert torch.allclose(ranked[name], value, rtol=1e-5, atol=1e-6), name


TOY = ["data.format=toy2d", "data.toy.name=two_modes", "data.toy.n_samples=1000",
       "model.kind=mlp", "model.widths=[16, 16]", "sampler.name=ula",
       "sampler.step_size=0.01", "algorithm.name=dcd_ve", "algorithm.sigma=0.2",
       "optimizer.name=adam", "optimizer.lr=0.01", "train.batch_size=200",
       "train.threads=1", "train.progress=false", "distributed.workers=0"]


@pytest.mark.parametrize("route", ["taylor", "posterior"])
def test_a_dcd_run_reports_score_matching_and_resumes_exactly(tmp_path, route):
    """``raybm train`` of DCD-VE on a 2-D set as a user runs it: walker-less, it logs its
    loss and noise scale, and summary.json holds the held-out score-matching loss, the
    training rate, the quadrature likelihood and mode weights; stopped and resumed, it ends
    where a straight run does."""
    import json

    from raybm.cli import main
    from tests.test_continuous_run import straight_and_resumed

    sets = TOY + [f"algorithm.route={route}", "algorithm.k=3", "train.n_updates=20",
                  "train.log_every=10", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert {"sm_loss_test", "updates_per_s", "test_loglik_grid", "mode_weight_0",
            "mode_weight_error"} <= set(summary)
    assert math.isfinite(summary["sm_loss_test"]) and summary["updates_per_s"] > 0
    assert "rhat" not in summary  # no persistent walkers: no frozen chains
    a, b = straight_and_resumed(tmp_path / "resume", [s for s in sets if "tracking" not in s]
                                + ["tracking.enabled=false", "train.checkpoint_every=7"],
                                20, 7)
    assert a.walkers is None and b.walkers is None
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name


def test_the_noise_and_the_posterior_step_scale_with_the_data_width():
    """``sigma_unit: width`` (the default): sigma in units of the training set's width, read
    on building the trainer; the posterior route's ULA step is ``posterior_step sigma^2`` in
    the data's units. The same config on data 10 times wider: 10 times the noise, 100 times
    the step."""
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    sets = TOY + ["algorithm.route=posterior", "algorithm.sigma=0.1",
                  "algorithm.posterior_step=0.2", "train.n_updates=2"]
    config = load_config(None, sets)
    train, _ = load_data(config)
    width = train.width()
    x = train.x.double().reshape(train.n_samples, -1)
    assert width == pytest.approx(float(x.var(0, unbiased=False).mean().sqrt()), rel=1e-9)
    for factor in (1.0, 10.0):
        data = Dataset(train.x * factor, n_states=0, labels=train.labels,
                       label_names=train.label_names, source="scaled")
        trainer = make_trainer(config, data)
        est = trainer.estimator
        assert est.noise == pytest.approx(0.1 * factor * width, rel=1e-6)
        assert est.posterior_kernel().step_size == pytest.approx(
            0.2 * (0.1 * factor * width) ** 2, rel=1e-6)
        info = trainer.update()
        assert info["dcd_sigma"] == pytest.approx(0.1 * factor * width, rel=1e-6)
    absolute = make_trainer(load_config(None, sets + ["algorithm.sigma_unit=absolute"]), train)
    assert absolute.estimator.noise == pytest.approx(0.1)


def test_a_posterior_step_needs_a_langevin_kernel_with_a_fixed_step():
    from raybm.config import load_config
    from raybm.errors import InputError

    base = ["data.format=toy2d", "model.kind=mlp", "algorithm.name=dcd_ve",
            "algorithm.route=posterior"]
    with pytest.raises(InputError, match="sampler.name") as caught:
        load_config(None, base + ["sampler.name=short_run"])
    assert "posterior_step" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(InputError, match="sampler.target_acceptance"):
        load_config(None, base + ["sampler.name=mala", "sampler.target_acceptance=0.6"])
    with pytest.raises(InputError, match="sampler.noise_std"):
        load_config(None, base + ["sampler.name=ula", "sampler.noise_std=0.1"])
    # without a posterior step, the sampler's own step serves
    load_config(None, base + ["sampler.name=short_run", "algorithm.posterior_step=null"])
    load_config(None, base + ["sampler.name=mala", "sampler.target_acceptance=0.6",
                              "algorithm.posterior_step=null"])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_without_tracking_still_reports_its_rate(tmp_path, workers):
    """``tracking.enabled: false``: summary.json still holds updates_per_s (the run's last
    logged rate) beside sm_loss_test, also when Ray workers trained it (their checkpoint
    reports carry it to the driver, which has no MLflow run to read it from)."""
    import json

    from raybm.cli import main

    sets = TOY + ["train.n_updates=6", "train.log_every=3", "train.checkpoint_every=3",
                  "tracking.enabled=false", f"distributed.workers={workers}"]
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["updates_per_s"] > 0 and math.isfinite(summary["sm_loss_test"])


def test_data_without_width_is_one_line_naming_the_key():
    from raybm.errors import InputError

    est = DiffusionCD(k=1, kernel=ULA(0.01), sigma_unit="width")
    with pytest.raises(RuntimeError, match="read_data first"):
        est.noise
    with pytest.raises(InputError, match="algorithm.sigma_unit") as caught:
        est.read_data(Dataset(torch.ones(5, 2), n_states=0, source="flat.csv"))
    assert str(caught.value).startswith("flat.csv: ") and "\n" not in str(caught.value)

"""The pieces of the image-EBM recipe as estimator options for every continuous model: the
energy penalty on the surrogate loss, PCD with a persistent buffer larger than the walkers an
update moves (with restarts from the kernel's start), data jitter; and Jarzynski refusing a
kernel whose moves it cannot weight."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.algorithms.base import Batch
from raybm.algorithms.contrastive import PersistentContrastiveDivergence
from raybm.algorithms.jarzynski import Jarzynski
from raybm.algorithms.population import LOCAL
from raybm.algorithms.registry import build_estimator
from raybm.config import load_config, parse_config
from raybm.errors import InputError
from raybm.models.neural import MLPEnergy
from raybm.samplers.langevin import ULA
from raybm.samplers.short_run import ShortRunLangevin
from raybm.walkers import WalkerState, shard_sizes

MIXTURE = ["data.format=gaussian_mixture", "data.mixture.dim=6",
           "data.mixture.centers=[[-4.0], [3.0]]", "data.mixture.n_samples=1200",
           "model.kind=mlp", "model.widths=[16]", "sampler.name=short_run",
           "sampler.step_size=0.1", "sampler.noise_std=0.05", "sampler.box=[-6, 6]",
           "optimizer.name=adam", "optimizer.lr=0.001", "train.batch_size=50",
           "train.log_every=5", "train.progress=false", "tracking.enabled=false"]
BUFFER = ["algorithm.name=pcd", "algorithm.k=3", "algorithm.n_walkers=300",
          "algorithm.walkers_per_update=40", "algorithm.reinit_fraction=0.25",
          "algorithm.energy_penalty=0.1", "algorithm.data_noise=0.01"]


def _mlp(seed: int = 0) -> MLPEnergy:
    return MLPEnergy(3, (8,), gen=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_energy_penalty_gradient_is_the_formula(alpha):
    """dL = <(1 + 2 a E) dE>_data - sum_i w_i (1 - 2 a E_i) dE_i, the weights normalised
    (walker_term's docstring), checked per parameter against the formula evaluated from
    per-sample gradients."""
    model, gen = _mlp(), torch.Generator().manual_seed(1)
    data = torch.randn(7, 3, generator=gen)
    walkers = WalkerState(torch.randn(5, 3, generator=gen),
                          torch.randn(5, generator=gen, dtype=torch.float64))
    est = PersistentContrastiveDivergence(k=1, kernel=ULA(0.1))
    est.energy_penalty = alpha
    model.zero_grad()
    est.loss(model, Batch(data), walkers).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    w = torch.softmax(walkers.log_weight, 0)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, coeff in [(data[b], 1.0 / 7) for b in range(7)] + [
            (walkers.x[i], -float(w[i])) for i in range(5)]:
        model.zero_grad()
        e = model.energy(x[None])[0]
        e.backward()
        sign = 1.0 if coeff > 0 else -1.0
        factor = coeff * (1 + sign * 2 * alpha * float(e.detach()))
        for n, p in model.named_parameters():
            want[n] += factor * p.grad
    for n in got:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7)


def test_energy_penalty_of_shards_sums_to_the_whole():
    model, gen = _mlp(2), torch.Generator().manual_seed(3)
    data, x = torch.randn(8, 3, generator=gen), torch.randn(6, 3, generator=gen)
    est = PersistentContrastiveDivergence(k=1, kernel=ULA(0.1))
    est.energy_penalty = 0.2
    whole = est.loss(model, Batch(data), WalkerState.unweighted(x))

    class TwoShards:  # the walker normaliser over both shards, as TorchComm gathers it
        rank, world_size = 0, 2

        def gather(self, values):
            return torch.cat([values, torch.zeros(3, dtype=values.dtype)])

    est.population = TwoShards()
    parts = sum(est.loss(model, Batch(data[s], total_weight=8.0),
                         WalkerState.unweighted(x[w]))
                for s, w in ((slice(0, 4), slice(0, 3)), (slice(4, 8), slice(3, 6))))
    torch.testing.assert_close(parts, whole, rtol=1e-6, atol=1e-7)


def test_buffer_moves_its_share_and_restarts_the_declared_fraction():
    """Each update moves exactly walkers_per_update rows of the buffer (the others are
    untouched bit for bit). With a kernel that does not move them (0 noise, 0 gradient
    steps), the rows that change are exactly the restarted ones: their share over many
    updates is within 4 binomial SE of reinit_fraction, and they hold fresh start draws (in
    the box, off the old values)."""
    model = _mlp(4)
    still = ShortRunLangevin(0.05, 0.0, None, (-1.0, 1.0))
    est = PersistentContrastiveDivergence(k=1, kernel=still, walkers_per_update=40,
                                          reinit_fraction=0.2)
    gen = torch.Generator().manual_seed(5)
    walkers = est.init_walkers(gen, model, 300)
    batch = Batch(torch.rand(10, 3, generator=gen) * 2 - 1)
    moving = PersistentContrastiveDivergence(k=1, kernel=ShortRunLangevin(0.05, 0.01),
                                             walkers_per_update=40)
    out = moving.estimate(gen, model, batch, walkers, "joint")
    assert int((out.walkers.x != walkers.x).any(1).sum()) == 40
    est.k = 0  # restarts only: nothing else moves a walker
    restarted, updates = 0, 300
    for _ in range(updates):
        out = est.estimate(gen, model, batch, walkers, "joint")
        changed = (out.walkers.x != walkers.x).any(1)
        restarted += int(changed.sum())
        assert out.walkers.n_walkers == 300
        assert out.walkers.x[changed].abs().max() <= 1
        walkers = out.walkers
    p = restarted / (40 * updates)
    se = math.sqrt(0.2 * 0.8 / (40 * updates))
    assert abs(p - 0.2) < 4 * se, (p, se)


def test_buffer_of_a_labelled_rbm_keeps_the_labels_its_kernel_samples():
    """Gibbs samples an RBM's label with its visibles: the buffer writes both back, and a
    restarted walker draws a fresh label as the kernel's start does."""
    from raybm.samplers.gibbs import GibbsKernel
    from tests.enumeration import random_model

    model = random_model("bernoulli", torch.Generator().manual_seed(0), 4, scale=0.8)
    gen = torch.Generator().manual_seed(1)
    for fraction in (0.0, 1.0):
        est = PersistentContrastiveDivergence(k=2, kernel=GibbsKernel(), walkers_per_update=200,
                                              reinit_fraction=fraction)
        walkers = est.init_walkers(gen, model, 200)
        classic = PersistentContrastiveDivergence(k=2, kernel=GibbsKernel())
        seed = int(torch.randint(2**31, (), generator=gen))
        out = est.estimate(torch.Generator().manual_seed(seed), model,
                           Batch(walkers.x[:5], walkers.label[:5]), walkers, "joint")
        assert int((out.walkers.label != walkers.label).sum()) > 50
        if fraction == 0.0:  # every walker moved: the same labels change as in classic PCD
            ref = classic.estimate(torch.Generator().manual_seed(seed), model,
                                   Batch(walkers.x[:5], walkers.label[:5]), walkers, "joint")
            assert int((ref.walkers.label != walkers.label).sum()) > 50


def test_buffer_of_a_shard_moves_its_share_of_the_walkers_per_update():
    est = PersistentContrastiveDivergence(k=1, kernel=ShortRunLangevin(0.05, 0.01, None, None),
                                          walkers_per_update=41)

    class Rank1Of3:
        rank, world_size = 1, 3

        def gather(self, values):
            return torch.cat([values] * 3)

    est.population = Rank1Of3()
    gen = torch.Generator().manual_seed(6)
    model = _mlp(6)
    walkers = est.init_walkers(gen, model, 100)
    out = est.estimate(gen, model, Batch(torch.randn(4, 3, generator=gen)), walkers, "joint")
    changed = int((out.walkers.x != walkers.x).any(1).sum())
    assert changed == shard_sizes(41, 3)[1] == 14


def test_a_buffer_run_checkpoints_and_resumes_bit_for_bit(tmp_path):
    from tests.test_continuous_run import straight_and_resumed

    a, b = straight_and_resumed(tmp_path, MIXTURE + BUFFER + ["train.checkpoint_every=6"],
                                15, 6)
    assert a.step == b.step == 15 and a.walkers.n_walkers == 300
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)
    assert torch.equal(a.state["generator"], b.state["generator"])


@pytest.mark.slow
def test_a_buffer_run_resumes_bit_for_bit_on_two_ray_workers(tmp_path, ray_session):
    from tests.test_continuous_run import straight_and_resumed

    a, b = straight_and_resumed(tmp_path, MIXTURE + BUFFER + [
        "train.checkpoint_every=6", "distributed.workers=2"], 12, 6)
    assert a.step == b.step == 12 and a.walkers.n_walkers == 300
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)


def test_jarzynski_refuses_the_short_run_kernel_in_one_line():
    with pytest.raises(InputError) as err:
        load_config(None, MIXTURE[:-2] + ["algorithm.name=jarzynski", "model.base_scale=1"])
    assert str(err.value).count("\n") == 0
    assert "sampler.name" in str(err.value) and "short_run" in str(err.value)
    with pytest.raises(ValueError, match="cannot weight"):
        Jarzynski(k=1, kernel=ShortRunLangevin(0.1, 0.01))


def test_buffer_options_are_checked():
    with pytest.raises(InputError, match="algorithm.walkers_per_update"):
        load_config(None, MIXTURE + ["algorithm.name=pcd", "algorithm.n_walkers=30",
                                     "algorithm.walkers_per_update=31"])
    with pytest.raises(InputError, match="set algorithm.n_walkers"):
        load_config(None, MIXTURE + ["algorithm.name=pcd", "algorithm.walkers_per_update=3"])
    with pytest.raises(InputError, match="each moves at least one"):
        load_config(None, MIXTURE + ["algorithm.name=pcd", "algorithm.n_walkers=30",
                                     "algorithm.walkers_per_update=1", "distributed.workers=2"])
    with pytest.raises(InputError) as err:
        load_config(None, ["algorithm.name=pcd", "algorithm.data_noise=0.01"])
    assert str(err.value) == ("--set: algorithm.data_noise: jitters continuous data, not the "
                              "states of model.kind rbm")
    with pytest.raises(InputError, match="sampler.box_rule: revert applies to a box"):
        load_config(None, MIXTURE[:6] + ["sampler.name=ula", "sampler.box_rule=revert",
                                         "algorithm.name=pcd"])
    with pytest.raises(InputError, match="algorithm.reinit_fraction"):
        load_config(None, MIXTURE + ["algorithm.name=pcd", "algorithm.reinit_fraction=1.5"])
    cfg = load_config(None, MIXTURE + BUFFER)
    est = build_estimator(cfg.algorithm, ShortRunLangevin(0.1, 0.01), 0, LOCAL)
    assert (est.walkers_per_update, est.reinit_fraction, est.energy_penalty) == (40, 0.25, 0.1)


def test_the_shipped_buffer_config_parses():
    from pathlib import Path

    from raybm.config import read_config_file

    path = Path(__file__).resolve().parents[2] / "configs" / "mnist236_conv_buffer.yaml"
    cfg = parse_config(read_config_file(path), str(path))
    assert cfg.sampler.name == "short_run" and cfg.algorithm.walkers_per_update == 64


def test_a_buffer_run_on_images_samples_its_buffer_and_fresh_short_runs(tmp_path, capsys,
                                                                         monkeypatch):
    """A user's path: a config with relative paths, ``raybm train``, then ``raybm sample``
    draws the buffer by default and fresh k-step short runs with ``--from chains``; the run's
    artifacts hold both grids."""
    import numpy as np

    from raybm.cli import main

    monkeypatch.chdir(tmp_path)
    gen = np.random.default_rng(0)
    np.savez("images.npz", x=np.clip(gen.normal(0.3, 0.4, (120, 16)), -1, 1).astype("float32"))
    sets = ["data.format=floats", "data.path=images.npz", "data.test_fraction=0.1",
            "model.kind=mlp", "model.widths=[8]", "model.base_scale=0",
            "sampler.name=short_run", "sampler.box=[-1, 1]", "algorithm.name=pcd",
            "algorithm.k=5", "algorithm.n_walkers=200", "algorithm.walkers_per_update=16",
            "algorithm.reinit_fraction=0.05", "algorithm.energy_penalty=0.1",
            "algorithm.data_noise=0.005", "optimizer.name=adam", "optimizer.lr=0.001",
            "optimizer.betas=[0, 0.999]", "optimizer.clip_norm=1", "train.n_updates=12",
            "train.batch_size=16", "train.log_every=4", "train.eval_samples=50",
            "train.progress=false", "tracking.enabled=false", "distributed.workers=0"]
    assert main(["train", *[f"--set={s}" for s in sets], "--out", "run"]) == 0
    artifacts = tmp_path / "run" / "artifacts"
    assert (artifacts / "samples.png").stat().st_size > 1000
    assert (artifacts / "chains.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["sample", "run", "--n", "30", "--out", "buffer.npz"]) == 0
    assert "distinct persistent walkers of the run's 200 at update 12" in capsys.readouterr().out
    assert main(["sample", "run", "--from", "chains", "--n", "30", "--out", "fresh.npz"]) == 0
    assert "5 short_run steps from uniform noise in [-1.0, 1.0] per sample" in (
        capsys.readouterr().out)
    with np.load("buffer.npz") as f:
        assert f["x"].shape == (30, 16) and np.abs(f["x"]).max() <= 1
    assert main(["eval", "run"]) == 0
    assert capsys.readouterr().out.strip().endswith(
        "wrote chains.png, data.png, samples.png to run/eval")
    assert (tmp_path / "run" / "eval" / "chains.png").stat().st_size > 1000
    assert main(["eval", "run", "--out", "pictures"]) == 0
    assert (tmp_path / "pictures" / "samples.png").stat().st_size > 1000
    from raybm.checkpoint import load_checkpoint

    assert load_checkpoint("run").walkers.x.shape == (200, 16)  # the whole buffer is saved


def test_jarzynski_waits_for_resample_after():
    from raybm.models.gaussian import GaussianEnergy

    model = GaussianEnergy(2)
    est = Jarzynski(k=1, kernel=ULA(0.5), ess_threshold=0.99, resample_after=3)
    gen = torch.Generator().manual_seed(0)
    walkers = est.init_walkers(gen, model, 50)
    walkers = walkers.replace(log_weight=torch.randn(50, generator=gen, dtype=torch.float64))
    resampled = []
    for _ in range(5):
        out = est.estimate(gen, model, Batch(torch.randn(8, 2, generator=gen)), walkers, "joint")
        resampled.append(out.info["resampled"])
        walkers = out.walkers.replace(
            log_weight=torch.randn(50, generator=gen, dtype=torch.float64))
    assert resampled == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert est.state_dict()["updates"] == 5
    again = Jarzynski(k=1, kernel=ULA(0.5), resample_after=3)
    again.load_state_dict(est.state_dict())
    assert again.updates == 5


def test_temperature_divides_the_network_and_is_recorded():
    from raybm.models.neural import ConvEnergy

    cold = MLPEnergy(3, (8,), base_scale=0.5, gen=torch.Generator().manual_seed(7),
                     temperature=0.01)
    warm = MLPEnergy(3, (8,), base_scale=0.5, gen=torch.Generator().manual_seed(7))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(8))
    base = 0.25 * x.square().sum(1)
    torch.testing.assert_close(cold.energy(x) - base, (warm.energy(x) - base) / 0.01)
    assert "temperature" not in warm.spec() and cold.spec()["temperature"] == 0.01
    assert MLPEnergy.from_spec(cold.spec()).temperature == 0.01
    conv = ConvEnergy(temperature=1e-3)
    assert ConvEnergy.from_spec(conv.spec()).temperature == 1e-3
    with pytest.raises(ValueError, match="temperature"):
        MLPEnergy(3, temperature=0.0)


@pytest.mark.parametrize("name", ["mnist236_conv_buffer", "mnist236_conv_jarzynski_research",
                                  "mnist236_conv_jarzynski_exact"])
def test_the_shipped_image_configs_train_from_the_repository_root(name, shared_file, tmp_path,
                                                                  monkeypatch):
    """Each image config as a user runs it (relative data paths, from the repository root),
    shrunk to two updates of a few walkers: the research protocol's revert rule, noise std and
    schedule, the buffer recipe and the tempered Jarzynski comparison all build and train."""
    from pathlib import Path

    from raybm.checkpoint import load_checkpoint
    from raybm.cli import main

    shared_file("mnist/t10k-images-idx3-ubyte.gz")
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    walkers = ["algorithm.n_walkers=12"] + (
        ["algorithm.walkers_per_update=6"] if name.endswith("buffer") else [])
    sets = walkers + ["algorithm.k=2", "train.n_updates=2", "train.batch_size=8",
                      "train.log_every=1", "train.eval_samples=10", "train.eval_k_long=3",
                      "train.progress=false",
                      "tracking.enabled=false"]
    assert main(["train", f"configs/{name}.yaml", *[f"--set={s}" for s in sets],
                 "--out", str(tmp_path / "run")]) == 0
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2 and ckpt.walkers.n_walkers == 12
    assert ckpt.walkers.x.abs().max() <= 1


def test_eval_refuses_out_for_a_run_without_pictures(tmp_path, capsys):
    from raybm.cli import main

    sets = ["model.n_hidden=8", "algorithm.name=pcd", "algorithm.k=1", "train.n_updates=2",
            "train.log_every=1", "train.eval_samples=10", "train.progress=false",
            "tracking.enabled=false", "distributed.workers=0"]
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(tmp_path / "rbm")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "rbm"), "--out", str(tmp_path / "pics")]) == 2
    assert "--out" in capsys.readouterr().err and not (tmp_path / "pics").exists()


def test_data_jitter_is_the_configured_noise_on_the_batch():
    """``algorithm.data_noise``: the batch an estimator sees is the minibatch plus
    N(0, s^2) noise drawn for it (its std within 5 SE of s over the batch's pixels)."""
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    cfg = load_config(None, MIXTURE + BUFFER + ["train.n_updates=1", "train.threads=1"])
    train, _ = load_data(cfg)
    trainer = make_trainer(cfg, train)
    seen = []
    estimate = trainer.estimator.estimate

    def spy(gen, model, batch, walkers, phase):
        seen.append(batch.x.clone())
        return estimate(gen, model, batch, walkers, phase)

    trainer.estimator.estimate = spy
    plain = trainer.batch(0).x
    trainer.update()
    diff = (seen[0] - plain).flatten().double()
    n = diff.numel()
    assert abs(float(diff.std()) - 0.01) < 5 * 0.01 / math.sqrt(2 * n)
    assert abs(float(diff.mean())) < 5 * 0.01 / math.sqrt(n)

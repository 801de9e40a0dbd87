"""Neural energies through the run path: an MLP on 2-D toy data (log Z by quadrature, and the
Jarzynski running log Z checked against it while the network trains), the conv energy on MNIST
digits in [-1, 1] at chosen proportions, resume, artifacts, and one-line errors for data and
configs that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from raybm.checkpoint import load_checkpoint
from raybm.cli import main
from raybm.config import load_config
from raybm.errors import InputError
from raybm.algorithms.resample import log_mean_weight
from raybm.metrics.continuous import grid_extent, grid_log_density, mean_log_likelihood
from raybm.run import train_run
from raybm.data.load import load_data
from raybm.train import make_trainer, run_updates
from tests.conftest import SHARED_DATA
from tests.test_continuous_run import straight_and_resumed

# The shared data sets live beside the repository (../shared/data), never inside it.
SHARED_MNIST = SHARED_DATA / "mnist"
TOY = ["data.format=toy2d", "data.toy.name=two_modes", "data.toy.n_samples=2000",
       "model.kind=mlp", "model.widths=[32, 32]", "sampler.name=ula", "sampler.step_size=0.05",
       "train.batch_size=500", "train.progress=false", "tracking.enabled=false"]


def test_jarzynski_log_z_of_a_training_mlp_follows_quadrature():
    """A 2-D MLP energy has no closed-form log Z, but a 400 x 400 grid gives it to ~1e-3 (the
    border mass is reported). The walkers start exactly (read-out at zero: N(0, I)) and their
    running log Z must follow the grid's while training moves log Z by about 2 nats."""
    config = load_config(None, TOY + ["algorithm.name=jarzynski", "algorithm.k=5",
                                      "algorithm.n_walkers=4000", "algorithm.ess_threshold=0.5",
                                      "optimizer.lr=0.05"])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    extent = grid_extent(train, margin=1.0)
    start = trainer.estimator.log_z(trainer.walkers)
    assert start == pytest.approx(grid_log_density(trainer.model, extent, 400)[1], abs=1e-3)
    run_updates(trainer, 200)
    _, log_z, border = grid_log_density(trainer.model, extent, 400)
    assert border < 1e-5 and log_z - start > 1.5
    # Each resampling epoch adds about CV^2 / n to the variance of the banked log mean
    # weight, with CV^2 <= 1 / ess_threshold - 1 = 1 here: 4 standard deviations.
    epochs = trainer.estimator.n_resamplings + 1
    assert trainer.estimator.log_z(trainer.walkers) == pytest.approx(
        log_z, abs=4 * (epochs / 4000) ** 0.5)


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_live_jarzynski_log_z_is_the_checkpoints_and_follows_quadrature(tmp_path, workers):
    """What MLflow shows at a step belongs to the parameters of that step: the live running
    log Z equals the one the step's checkpoint holds (log-weights after the update's work),
    follows the quadrature log Z of that checkpoint's energy within its standard error, and
    the live test log-likelihood is read with it. (The log Z of the weights *before* the
    update was logged beside the new parameters: 4.96 against the checkpoint's 5.44.)"""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    n = 2000
    config = load_config(None, [s for s in TOY if not s.startswith("tracking.")] + [
        "algorithm.name=jarzynski", "algorithm.k=5", f"algorithm.n_walkers={n}",
        "optimizer.lr=0.05", "train.n_updates=100", "train.log_every=20",
        "train.checkpoint_every=20", f"tracking.uri={uri}", f"distributed.workers={workers}"])
    summary = train_run(config, out=tmp_path / "run", evaluate_at_end=False)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    live = {m.step: m.value for m in client.get_metric_history(summary.run_id, "log_z")}
    loglik = {m.step: m.value
              for m in client.get_metric_history(summary.run_id, "test_loglik_jarzynski")}
    assert sorted(live) == sorted(loglik) == [20, 40, 60, 80, 100]
    train, test = load_data(config)
    extent = grid_extent(train, margin=1.0)
    start = None
    for step, value in sorted(live.items()):
        ckpt = load_checkpoint(summary.run_dir / "checkpoints" / f"step_{step:08d}")
        estimator = ckpt.state["estimator"]
        held = estimator["log_z_base"] + log_mean_weight(ckpt.walkers.log_weight)
        assert value == pytest.approx(held, rel=1e-12, abs=1e-12), step
        assert loglik[step] == pytest.approx(
            mean_log_likelihood(ckpt.model, test, held), rel=1e-9), step
        _, log_z, border = grid_log_density(ckpt.model, extent, 400)
        assert border < 1e-5
        epochs = estimator["n_resamplings"] + 1  # as in the test above
        assert value == pytest.approx(log_z, abs=4 * (epochs / n) ** 0.5), step
        start = log_z if start is None else start
    assert log_z - start > 0.5  # the parameters moved log Z well beyond the tolerance


def test_mlp_on_toy_data_trains_resumes_and_reports_grid_likelihoods(tmp_path):
    common = TOY + ["algorithm.name=pcd", "algorithm.k=3", "algorithm.n_walkers=300",
                    "train.checkpoint_every=7", "train.log_every=5"]
    a, b = straight_and_resumed(tmp_path, common, 14, 8)
    assert a.meta["model"]["kind"] == "MLPEnergy" and a.meta["model"]["widths"] == [32, 32]
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)
    evaluated = train_run(load_config(None, common + ["train.n_updates=3"]),
                          out=tmp_path / "evaluated")
    summary = json.loads((evaluated.run_dir / "summary.json").read_text())
    assert {"log_z_grid", "train_loglik_grid", "test_loglik_grid",
            "grid_border_mass"} <= set(summary)
    assert (evaluated.run_dir / "artifacts" / "density.png").stat().st_size > 10_000
    picture = tmp_path / "samples.png"
    assert main(["sample", str(evaluated.run_dir), "--n", "300", "--k", "2", "--out",
                 str(picture)]) == 0
    assert picture.stat().st_size > 10_000 and not list(tmp_path.glob(".samples*"))


def test_conv_energy_on_mnist_digits_at_proportions(tmp_path, monkeypatch):
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"real data not found: {SHARED_MNIST}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "mnist" / name).symlink_to(SHARED_MNIST / name)
    # Relative paths, as users write them; the labels file is found beside the images.
    config = load_config(None, [
        "data.format=mnist", "data.path=mnist/t10k-images-idx3-ubyte.gz", "data.digits=[2, 3, 6]",
        "data.proportions=[4, 2, 1]", "data.test_fraction=0.1", "model.kind=conv",
        "sampler.name=mala", "sampler.step_size=0.0005", "sampler.box=[-1, 1]",
        "algorithm.name=pcd", "algorithm.k=2", "algorithm.n_walkers=64",
        "train.batch_size=32", "train.n_updates=3", "train.progress=false",
        "tracking.enabled=false"])
    train, test = load_data(config)
    assert train.x.shape[1:] == (1, 28, 28) and train.n_samples + test.n_samples == 1806
    counts = torch.bincount(torch.cat([train.labels, test.labels]))
    assert counts.tolist() == [1032, 516, 258]
    summary = train_run(config, out="run")  # a relative path, as users write it
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.meta["model"]["kind"] == "ConvEnergy"
    assert ckpt.walkers.x.shape == (64, 1, 28, 28)
    assert ckpt.walkers.x.min() >= -1 and ckpt.walkers.x.max() <= 1  # the box holds
    names = {p.name for p in (summary.run_dir / "artifacts").iterdir()}
    assert {"samples.png", "data.png"} <= names
    assert main(["sample", "run", "--n", "5", "--k", "1", "--out", "s.npz"]) == 0
    with np.load("s.npz") as f:
        assert f["x"].shape == (5, 1, 28, 28)
    assert main(["sample", "run", "--n", "20", "--k", "1", "--out", "grid.png"]) == 0
    assert Path("grid.png").stat().st_size > 1_000


@pytest.mark.parametrize("changes, key", [
    (["data.format=idx"], "data.format"),
    (["algorithm.name=jarzynski", "model.base_scale=0"], "model.base_scale"),
    (["data.digits=[1, 2]"], "data.digits"),
    (["data.proportions=[1, 2]"], "data.proportions"),
    (["model.n_hidden=10"], "model.n_hidden"),
])
def test_configs_that_cannot_work_are_one_line_errors(changes, key):
    with pytest.raises(InputError) as err:
        load_config(None, TOY + changes)
    assert str(err.value).startswith(f"--set: {key}: ")
    assert "\n" not in str(err.value)


def test_data_that_does_not_fit_is_one_line_error_with_exit_code(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    x = np.zeros((10, 3), dtype=np.float32)
    x[4, 2] = np.nan
    np.save(bad, x)
    base = ["--workers", "0", "--set", "model.kind=mlp", "--set", "sampler.name=ula",
            "--set", "algorithm.name=pcd", "--set", "tracking.enabled=false"]
    assert main(["train", *base, "--set", f"data.path={bad}", "--out",
                 str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"raybm: error: {bad}: x: NaN at index (4, 2)"
    good = tmp_path / "pts.npy"
    np.save(good, np.ones((10, 3), dtype=np.float32))
    assert main(["train", *base[:2], "--set", "model.kind=conv", "--set", "sampler.name=ula",
                 "--set", "algorithm.name=pcd", "--set", "tracking.enabled=false",
                 "--set", f"data.path={good}", "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "conv takes square images" in err and str(good) in err and "\n" not in err
    assert main(["train", *base, "--set", "data.format=mnist", "--out",
                 str(tmp_path / "r3")]) == 2
    assert "data.path: format mnist reads a file" in capsys.readouterr().err
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3"))


def test_jarzynski_inside_a_box_follows_the_log_z_of_the_boxed_energy():
    """With ``sampler.box`` the target is the energy restricted to the box: the walkers start
    as truncated-normal draws (base_scale 0.25: 8% of each coordinate's mass lies beyond 3.5)
    and refused moves keep them inside, so the running log Z must follow the quadrature over
    the box itself."""
    config = load_config(None, TOY + ["algorithm.name=jarzynski", "algorithm.k=5",
                                      "algorithm.n_walkers=4000", "algorithm.ess_threshold=0.5",
                                      "optimizer.lr=0.05", "model.base_scale=0.25",
                                      "sampler.box=[-3.5, 3.5]"])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    box = (-3.5, 3.5, -3.5, 3.5)
    start = trainer.estimator.log_z(trainer.walkers)
    assert start == pytest.approx(grid_log_density(trainer.model, box, 400)[1], abs=1e-3)
    run_updates(trainer, 150)
    assert trainer.walkers.x.abs().max() <= 3.5
    _, log_z, _ = grid_log_density(trainer.model, box, 400)
    epochs = trainer.estimator.n_resamplings + 1
    assert abs(log_z - start) > 0.25  # training moved it well beyond the tolerance below
    assert trainer.estimator.log_z(trainer.walkers) == pytest.approx(
        log_z, abs=4 * (epochs / 4000) ** 0.5)

"""Continuous energies through the same run path as RBMs: config, training in-process,
checkpoints of float walkers with exact resume, the metrics a Gaussian mixture reports, and
one-line errors for combinations that cannot work."""

from __future__ import annotations

import json

import pytest
import torch

from raybm.checkpoint import load_checkpoint
from raybm.cli import main
from raybm.config import dump_config, load_config, parse_config
from raybm.errors import InputError
from raybm.evaluate import live_metrics
from raybm.run import train_run
from raybm.data.load import load_data
from raybm.train import make_trainer, run_updates

MIXTURE = ["data.format=gaussian_mixture", "data.mixture.dim=6",
           "data.mixture.centers=[[-4.0], [3.0]]", "data.mixture.n_samples=1200",
           "model.kind=gaussian_mixture", "model.n_components=2",
           "sampler.name=ula", "sampler.step_size=0.1",
           "optimizer.lr=0.01", "optimizer.param_lr={log_weights: 0.05}",
           "train.batch_size=100", "train.log_every=5", "train.progress=false",
           "tracking.enabled=false"]
def straight_and_resumed(tmp_path, common: list[str], total: int, first: int):
    """The checkpoints of a run straight to ``total`` updates and of one stopped at ``first``
    then resumed to ``total``: equal when resume continues exactly."""
    train_run(load_config(None, common + [f"train.n_updates={total}"]),
              out=tmp_path / "straight", evaluate_at_end=False)
    train_run(load_config(None, common + [f"train.n_updates={first}"]),
              out=tmp_path / "resumed", evaluate_at_end=False)
    train_run(resume=tmp_path / "resumed", overrides=[f"train.n_updates={total}"],
              evaluate_at_end=False)
    return load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")


JARZYNSKI = ["algorithm.name=jarzynski", "algorithm.k=1", "algorithm.n_walkers=500",
             "algorithm.ess_threshold=0.9"]


@pytest.mark.parametrize("algorithm", [
    JARZYNSKI,
    ["algorithm.name=pcd", "algorithm.k=2", "algorithm.n_walkers=300", "sampler.name=mala"],
    ["algorithm.name=cd", "algorithm.k=2", "sampler.name=mala"],
    ["algorithm.name=kstep", "algorithm.k=4"],
], ids=["jarzynski-ula", "pcd-mala", "cd-mala", "kstep-ula"])
def test_resume_of_float_walkers_continues_exactly(tmp_path, algorithm):
    a, b = straight_and_resumed(tmp_path, MIXTURE + algorithm + ["train.checkpoint_every=7"],
                                20, 11)
    assert a.step == b.step == 20
    assert a.meta["model"] == {"kind": "GaussianMixtureEnergy", "n_components": 2, "dim": 6,
                               "std": 1.0}
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    if a.walkers is not None:
        assert a.walkers.x.dtype == torch.float32 and a.walkers.x.shape[1:] == (6,)
        assert torch.equal(a.walkers.x, b.walkers.x)
        assert torch.equal(a.walkers.log_weight, b.walkers.log_weight)
    assert a.state["estimator"] == b.state["estimator"]


def test_mixture_run_reports_mode_weights_and_exact_likelihoods(tmp_path, capsys):
    tracked = ["tracking.enabled=true", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    overrides = [f"--set={s}" for s in MIXTURE + JARZYNSKI + tracked + ["train.n_updates=30"]]
    assert main(["train", *overrides, "--workers", "0", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) == {"mode_weight_0", "mode_weight_1", "mode_weight_error",
                            "log_z_exact", "train_loglik_exact", "test_loglik_exact", "log_z",
                            "test_loglik_jarzynski",
                            # frozen chains from the final walkers (metrics.modes)
                            "rhat", "rhat_mode", "rhat_first_coordinate", "chain_rounds",
                            "chain_mode_weight_0", "chain_mode_weight_1",
                            "chain_mode_weight_error",
                            # held-out score matching (metrics.continuous.sm_loss) and the
                            # last log window's training rate
                            "sm_loss_test", "updates_per_s"}
    assert summary["mode_weight_error"] == pytest.approx(
        abs(summary["mode_weight_0"] - 0.25), abs=1e-9)  # the data's weights: 0.25, 0.75
    # The last checkpoint's weighted walkers against the closed form of the trained mixture.
    assert abs(summary["test_loglik_jarzynski"] - summary["test_loglik_exact"]) < 0.1
    assert {"mode_weights.png", "jarzynski.png", "sampler.png"} <= {
        p.name for p in (tmp_path / "run" / "artifacts").iterdir()}
    assert summary["mode_weight_0"] + summary["mode_weight_1"] == pytest.approx(1.0)
    config = load_config(None, MIXTURE + JARZYNSKI)
    train, test = load_data(config)
    trainer = make_trainer(config, train)
    run_updates(trainer, 40)
    live = live_metrics(trainer.model, test, trainer.history[-1])
    assert {"ess", "log_z", "test_loglik_jarzynski", "test_loglik_exact",
            "mode_weight_0"} <= set(live)
    # The running log Z of the walkers against the closed form of the trained mixture.
    assert abs(live["test_loglik_jarzynski"] - live["test_loglik_exact"]) < 0.1


@pytest.mark.parametrize("changes, key", [
    (["sampler.name=gibbs", "sampler.step_size=0.01"], "sampler.name"),
    (["sampler.name=gibbs"], "sampler.name"),  # not its step_size: the sampler is wrong
    (["algorithm.centered=true"], "algorithm.centered"),
    (["algorithm.hidden_offset_momentum=0.1"], "algorithm.hidden_offset_momentum"),
    (["data.format=digits"], "data.format"),
    (["model.n_hidden=20"], "model.n_hidden"),
    (["sampler.precision=bf16"], "sampler.precision"),
    (["sampler.box=[1, -1]"], "sampler.box"),
])
def test_combinations_that_cannot_work_are_one_line_errors(changes, key):
    with pytest.raises(InputError) as err:
        load_config(None, MIXTURE + changes)
    assert str(err.value).startswith(f"--set: {key}: ")


def test_unknown_parameter_learning_rate_names_the_parameters(tmp_path):
    config = load_config(None, MIXTURE + ["optimizer.param_lr={weights: 0.1}",
                                          "train.n_updates=2"])
    with pytest.raises(InputError, match="optimizer.param_lr: weights: not a parameter of "
                                         "this model \\(its parameters: means, log_weights\\)"):
        train_run(config, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_continuous_configs_leave_out_the_centred_gradients_keys():
    config = load_config(None, MIXTURE)
    assert "centered" not in config.model_dump()["algorithm"]
    assert not {"algorithm.centered", "algorithm.hidden_offset_momentum"} & set(config.flat())
    assert "hidden_offset_momentum" not in dump_config(config)
    # A config.yaml written before they were left out (both at their defaults) still loads.
    old = config.model_dump()
    old["algorithm"].update(centered=None, hidden_offset_momentum=0.01)
    assert parse_config(old, "old-run/config.yaml") == config


def test_configs_written_before_the_sampler_section_still_load():
    old = {"algorithm": {"name": "pcd", "k": 3, "precision": "bf16", "classification": True,
                         "ess_threshold": 0.5, "resampling": "systematic", "centered": True,
                         "n_walkers": None, "hidden_offset_momentum": 0.01},
           "model": {"n_hidden": 20, "labels": True, "weight_std": 0.01}}
    config = parse_config(old, "old-run/config.yaml")
    assert config.sampler.name == "gibbs" and config.sampler.precision == "bf16"
    assert config.model.kind == "rbm" and config.algorithm.name == "pcd"


def test_sample_and_eval_a_continuous_run(tmp_path, capsys):
    overrides = [f"--set={s}" for s in MIXTURE + JARZYNSKI + ["train.n_updates=10"]]
    assert main(["train", *overrides, "--workers", "0", "--out", str(tmp_path / "run")]) == 0
    out = tmp_path / "s.npz"
    assert main(["sample", str(tmp_path / "run"), "--n", "7", "--k", "3", "--out",
                 str(out)]) == 0
    import numpy as np

    with np.load(out) as f:
        assert f["x"].shape == (7, 6) and f["x"].dtype == np.float32
    assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s.png")]) == 2
    assert "neither 2-D points nor square images" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run")]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["step"] == 10 and "test_loglik_exact" in metrics


def test_initial_means_and_pcd_walkers_from_the_data():
    config = load_config(None, MIXTURE + ["model.init_means=[[-0.5], [0.5, 2.0]]",
                                          "algorithm.name=pcd", "algorithm.k=1",
                                          "algorithm.n_walkers=50", "algorithm.walker_init=data"])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    expected = torch.zeros(2, 6)
    expected[0, 0], expected[1, 0], expected[1, 1] = -0.5, 0.5, 2.0
    assert torch.equal(trainer.model.means.detach(), expected)
    # Every walker is a training sample (drawn with replacement by the walkers' stream).
    rows = {tuple(r) for r in train.x.tolist()}
    assert all(tuple(w) in rows for w in trainer.walkers.x.tolist())
    assert len({tuple(w) for w in trainer.walkers.x.tolist()}) > 40


@pytest.mark.parametrize("changes, message", [
    (["model.init_means=[[0.0]]"], "--set: model.init_means: 1 means for n_components=2"),
    (["model.init_means=[[0, 0, 0, 0, 0, 0, 0], [1]]"],
     "model: init_means.0: 7 coordinates for dim 6"),
])
def test_initial_means_that_do_not_fit_are_one_line_errors(tmp_path, changes, message):
    with pytest.raises(InputError) as err:
        train_run(load_config(None, MIXTURE + JARZYNSKI + changes + ["train.n_updates=2"]),
                  out=tmp_path / "run")
    assert str(err.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_a_built_in_data_set_names_the_default_run(tmp_path, monkeypatch):
    from raybm.run import default_run_name

    assert default_run_name(load_config(None, MIXTURE)).startswith("kstep10-gaussian_mixture-")
    assert default_run_name(load_config(None, [])).startswith("kstep10-digits-")


def test_mala_step_size_adapts_to_the_target_acceptance_and_resumes_exactly(tmp_path):
    common = MIXTURE + ["algorithm.name=pcd", "algorithm.k=3", "algorithm.n_walkers=400",
                        "sampler.name=mala", "sampler.step_size=4.0",
                        "sampler.target_acceptance=0.574", "sampler.adapt_rate=0.2",
                        "optimizer.lr=0.001", "train.checkpoint_every=30"]
    config = load_config(None, common)
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    run_updates(trainer, 150)
    late = [h["acceptance"] for h in trainer.history[-50:]]
    # Started at h = 4 (acceptance near 0 in d = 6); the mean of the last 50 updates
    # (3 steps x 400 walkers each) is within 0.05 of the target.
    assert trainer.history[0]["acceptance"] < 0.3
    assert abs(sum(late) / len(late) - 0.574) < 0.05
    assert trainer.estimator.kernel.step_size < 1.0
    a, b = straight_and_resumed(tmp_path, common, 60, 30)
    assert a.state["kernel"]["step_size"] == b.state["kernel"]["step_size"] != 4.0
    assert torch.equal(a.walkers.x, b.walkers.x)

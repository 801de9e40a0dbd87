"""``raybm tune`` end to end on real Ray Tune trials (and Ray Train workers), tracked in MLflow.

The default set runs one small sweep as a user would (relative paths, from its own working
directory) and checks the parent / child runs, the per-trial metric histories, the best config
re-run with ``raybm train``, ``raybm runs``, and a directory that is not a sweep. The slow set
runs the acceptance sweeps: ASHA and PBT with four trials each, the PBT clone check in the
trial process and on two Ray workers per trial, and a sweep killed mid-way and resumed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from raybm.cli import main
from raybm.checkpoint import checkpoint_digest, load_checkpoint

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[2]
BASE = {"data": {"max_samples": 500},
        "model": {"n_hidden": 16},
        "algorithm": {"name": "kstep", "k": 2},
        "optimizer": {"lr": 0.05},
        "train": {"n_updates": 60, "batch_size": 50, "log_every": 10, "checkpoint_every": 20,
                  "eval_t": [1, 5], "eval_samples": 100, "eval_k_long": 10, "threads": 1},
        "distributed": {"workers": 0}}


def write_space(path: Path, **fields) -> Path:
    body = {"base": BASE, "metric": "test_accuracy", "mode": "max",
            "max_concurrent_trials": 2, "resources": {"workers": 0, "cpus_per_worker": 1}}
    body.update(fields)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def children(uri: str, parent: str) -> list:
    c = client(uri)
    exp = c.get_run(parent).info.experiment_id
    return c.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")


def steps(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client(uri).get_metric_history(run_id, key))


def sweep_record(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep.json").read_text())


# ---------------------------------------------------------------------------- default set
def test_small_sweep_end_to_end_from_its_own_directory(tmp_path, monkeypatch, capsys,
                                                       ray_session):
    """Two trials (a grid over lr) in their own processes, from relative paths: one parent run
    with two children, a metric point every log_every, hp/* beside them; the best config
    re-run with ``raybm train`` gives the trial's figure exactly."""
    monkeypatch.chdir(tmp_path)
    from raybm.data.digits import load_digits

    digits = load_digits()  # as a user's own file, given by a path relative to here
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "d.npz", x=digits.x.numpy()[:500],
             labels=digits.labels.numpy()[:500])
    write_space(tmp_path / "space.yaml",
                param_space={"optimizer.lr": {"grid_search": [0.005, 0.1]},
                             "data.path": "data/d.npz"})
    assert main(["tune", "space.yaml", "--out", "sweep"]) == 0
    out, err = capsys.readouterr()
    assert "best trial" in out and "reproduce with  : raybm train" in out
    assert "update 60/60" in err  # one progress line per trial result
    sweep_dir = tmp_path / "sweep"
    record = sweep_record(sweep_dir)
    uri = record["tracking_uri"]
    assert uri == f"sqlite:///{tmp_path / 'mlflow.db'}"  # resolved on the driver
    parent = client(uri).get_run(record["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["raybm.metric"] == "test_accuracy"
    assert parent.data.tags["raybm.searched"] == "optimizer.lr"
    kids = children(uri, record["parent_run_id"])
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    assert {float(k.data.params["optimizer.lr"]) for k in kids} == {0.005, 0.1}
    assert {k.data.params["data.path"] for k in kids} == {str(tmp_path / "data" / "d.npz")}
    for kid in kids:
        history = steps(uri, kid.info.run_id, "test_accuracy")
        assert [s for s, _ in history] == [10, 20, 30, 40, 50, 60, 60]  # live, then final
        lr = float(kid.data.params["optimizer.lr"])
        assert {v for _, v in steps(uri, kid.info.run_id, "hp/optimizer.lr")} == {lr}
        artifacts = {a.path for a in client(uri).list_artifacts(kid.info.run_id)}
        assert {"config.yaml", "plots", "checkpoint"} <= artifacts
    best_id = parent.data.tags["raybm.best_run_id"]
    best = client(uri).get_run(best_id)
    figure = best.data.metrics["test_accuracy"]
    assert parent.data.metrics["best/test_accuracy"] == figure
    assert main(["train", "sweep/best_config.yaml", "--out", "again", "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["test_accuracy"] == figure

    capsys.readouterr()
    assert main(["runs", "--sweep", record["parent_run_id"]]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "name", "status", "test_accuracy"]
    assert len(table) == 4 and best_id[:8] in table[2]  # header, rule, best first


def test_resume_of_a_directory_that_is_not_a_sweep_is_one_line(tmp_path, capsys):
    code = main(["tune", "--resume", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"raybm: error: {tmp_path}: --resume: is not a sweep "
                                 "directory (no sweep.json and tune/ from raybm tune)"]


# ---------------------------------------------------------------------------- slow set
def shipped(name: str, tmp_path: Path, **changes) -> Path:
    """A copy of a shipped space file with some top-level fields changed (its base path kept
    relative to tune_spaces/)."""
    body = yaml.safe_load((ROOT / "tune_spaces" / name).read_text())
    body.update(changes)
    body["base"] = str((ROOT / "tune_spaces" / body["base"]).resolve())
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@pytest.mark.slow
def test_asha_sweep_of_four_trials_and_its_best_config(tmp_path, monkeypatch, ray_session):
    monkeypatch.chdir(tmp_path)
    space = shipped("ff_digits_k_lr.yaml", tmp_path, num_samples=4)
    budget = ["--set", "train.n_updates=300", "--set", "train.log_every=50",
              "--set", "train.checkpoint_every=100", "--set", "model.n_hidden=64"]
    assert main(["tune", str(space), *budget, "--out", "asha"]) == 0
    record = sweep_record(tmp_path / "asha")
    kids = children(record["tracking_uri"], record["parent_run_id"])
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
    best = client(record["tracking_uri"]).get_run(record["parent_run_id"]).data.tags[
        "raybm.best_run_id"]
    figure = client(record["tracking_uri"]).get_run(best).data.metrics["test_accuracy"]
    assert main(["train", "asha/best_config.yaml", "--out", "again", "--no-progress"]) == 0
    assert json.loads((tmp_path / "again" / "summary.json").read_text())[
        "test_accuracy"] == figure


def exploits(sweep_dir: Path) -> list[tuple[Path, dict]]:
    """Restore records whose checkpoint came from another trial (a PBT exploit)."""
    out = []
    for record in sorted((sweep_dir / "trials").glob("*/restores/*.json")):
        info = json.loads(record.read_text())
        trial = record.parent.parent.name
        donor = Path(info["source"]).parent.name
        if donor != trial:
            out.append((record, info))
    return out


def check_clone(sweep_dir: Path, uri: str, key: str = "optimizer.lr") -> int:
    """Every exploit restored exactly the donor's checkpoint, and the exploited trial logged
    its new hyperparameters from the next step on; returns the number of exploits. ``key``:
    the mutated learning rate (``optimizer.lr``, the energy's, or ``optimizers.<m>.lr``)."""
    parts = key.split(".")
    module = "energy" if parts[0] == "optimizer" else parts[1]
    found = exploits(sweep_dir)
    for record, info in found:
        trial_dir = record.parent.parent
        donor_id = Path(info["source"]).parent.name
        rank, world = info["rank"], info["world_size"]
        # What the exploited trial held after restoring = Tune's copy = the donor's original.
        # Tune keeps only num_to_keep copies per trial, so an early one may be gone by the
        # sweep's end (seen in CI: checkpoint_000000 deleted); the donor's own is kept.
        if Path(info["source"]).exists():
            assert info["digest"] == checkpoint_digest(info["source"], rank, world)
        original = sweep_dir / "trials" / donor_id / "checkpoints" / f"step_{info['step']:08d}"
        assert info["digest"] == checkpoint_digest(original, rank, world)
        if rank:
            continue
        # Its next checkpoint ran with the mutated lr, and MLflow shows it from the next log.
        step = info["step"]
        later = sorted(p for p in (trial_dir / "checkpoints").glob("step_*")
                       if int(p.name[5:]) > step)
        if not later:
            continue
        nxt = load_checkpoint(later[0])
        lr = nxt.meta["config"]
        for part in parts:
            lr = lr[part]
        # applied, not only said
        assert nxt.state["optimizers"][module]["param_groups"][0]["lr"] == lr
        run_id = (trial_dir / "mlflow_run_id").read_text().strip()
        # Every value logged at each step: async PBT can run a step twice (a later exploit
        # from an older donor checkpoint logs it again with other values).
        hp: dict[int, list[float]] = {}
        for s, v in steps(uri, run_id, f"hp/{key}"):
            hp.setdefault(s, []).append(v)
        after = [s for s in sorted(hp) if step < s <= nxt.step]
        assert after and all(any(v == pytest.approx(lr) for v in hp[s]) for s in after)
    return len(found)


PBT_CLONE = {"name": "pbt", "perturbation_interval": 20, "quantile_fraction": 0.5,
             "resample_probability": 0.0, "synch": True,
             "hyperparam_mutations": {"optimizer.lr": {"loguniform": [0.001, 0.3]}}}


@pytest.mark.slow
def test_pbt_exploit_clones_the_donor_bit_for_bit(tmp_path, ray_session, monkeypatch):
    """Two trials, one with a learning rate too small to learn: at each perturbation the worse
    continues from the better one's checkpoint with a perturbed lr."""
    from raybm.tuning.sweep import tune_sweep

    monkeypatch.chdir(tmp_path)  # its mlflow.db goes here

    space = write_space(tmp_path / "space.yaml", scheduler=PBT_CLONE,
                        param_space={"optimizer.lr": {"grid_search": [0.0002, 0.1]}})
    summary = tune_sweep(space, out=tmp_path / "pbt")
    assert check_clone(tmp_path / "pbt", summary.tracking_uri) >= 1
    kids = children(summary.tracking_uri, summary.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}


@pytest.mark.slow
def test_pbt_exploit_clones_both_trained_modules_of_a_plugin_method(tmp_path, ray_session,
                                                                     monkeypatch):
    """A method that exists only in the test files (``plugins:``), with a second trained
    module (an affine flow) at its own rate: Tune's trials import the plugin, and an exploit
    restores both modules' parameters and both optimizers' states bit for bit (the restore
    digest covers every module), then trains at the mutated rates."""
    from raybm.tuning.sweep import tune_sweep

    monkeypatch.chdir(tmp_path)
    base = {"plugins": ["tests.algorithms.plugin_estimators"],
            "data": {"format": "gaussian_mixture",
                     "mixture": {"dim": 3, "n_samples": 400, "centers": [[-2.0], [2.0]]}},
            "model": {"kind": "gaussian_mixture", "n_components": 2},
            "sampler": {"name": "ula", "step_size": 0.05},
            "algorithm": {"name": "pcd_affine_flow", "k": 2, "n_walkers": 101},
            "optimizer": {"name": "adam", "lr": 0.01},
            "optimizers": {"flow": {"name": "adam", "lr": 0.05}},
            "train": {"n_updates": 60, "batch_size": 50, "log_every": 10,
                      "checkpoint_every": 20, "threads": 1},
            "distributed": {"workers": 0}}
    scheduler = {**PBT_CLONE, "hyperparam_mutations": {
        "optimizers.flow.lr": {"loguniform": [0.001, 0.3]}}}
    space = write_space(tmp_path / "space.yaml", base=base, scheduler=scheduler,
                        metric="flow_nll", mode="min",
                        param_space={"optimizers.flow.lr": {"grid_search": [0.0005, 0.1]}})
    summary = tune_sweep(space, out=tmp_path / "pbt")
    assert check_clone(tmp_path / "pbt", summary.tracking_uri, "optimizers.flow.lr") >= 1
    for record, info in exploits(tmp_path / "pbt"):
        ckpt = load_checkpoint(info["source"])
        assert set(ckpt.state["optimizers"]) == {"energy", "flow"}
        assert set(ckpt.state["modules"]) == {"flow"}
    kids = children(summary.tracking_uri, summary.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}


@pytest.mark.slow
def test_pbt_exploit_clones_a_flowmc_run_with_its_flow_and_walkers(tmp_path, ray_session,
                                                                  monkeypatch):
    """FlowMC-EBM under PBT (tune_spaces/flowmc_lr_ratio.yaml, shrunk): an exploit restores
    the donor's energy, flow, both optimizers, FlowMC walkers and adapted MALA step bit for
    bit (the restore digest covers them all), and the exploited trial trains on at its
    mutated rate; the flow's rate follows the energy's through its ratio."""
    from raybm.tuning.sweep import tune_sweep

    monkeypatch.chdir(tmp_path)
    base = {"data": {"format": "gaussian_mixture",
                     "mixture": {"dim": 4, "n_samples": 400, "centers": [[-4.0], [4.0]],
                                 "weights": [0.25, 0.75]}},
            "model": {"kind": "gaussian_mixture", "n_components": 2,
                      "init_means": [[-0.1], [0.1]], "init_noise": 0.01},
            "sampler": {"name": "flowmc", "step_size": 0.1, "n_mala": 3,
                        "target_acceptance": 0.574},
            "algorithm": {"name": "flowmc_ebm", "k": 1, "n_walkers": 64,
                          "flow_transforms": 2, "flow_hidden": [8, 8]},
            "optimizer": {"name": "adam", "lr": 0.01},
            "optimizers": {"flow": {"name": "adam", "lr_ratio": 0.3}},
            "train": {"n_updates": 60, "batch_size": 64, "log_every": 10,
                      "checkpoint_every": 20, "threads": 1, "eval_chain_rounds": 10},
            "distributed": {"workers": 0}}
    space = write_space(tmp_path / "space.yaml", base=base, scheduler=PBT_CLONE,
                        metric="mode_weight_error", mode="min",
                        param_space={"optimizer.lr": {"grid_search": [0.0002, 0.05]}})
    summary = tune_sweep(space, out=tmp_path / "pbt")
    assert check_clone(tmp_path / "pbt", summary.tracking_uri) >= 1
    for record, info in exploits(tmp_path / "pbt"):
        ckpt = load_checkpoint(info["source"])
        assert set(ckpt.state["modules"]) == {"flow"} and ckpt.walkers.x.shape == (64, 4)
        if info["rank"] == 0:
            later = sorted((record.parent.parent / "checkpoints").glob("step_*"))[-1]
            nxt = load_checkpoint(later)
            groups = {m: nxt.state["optimizers"][m]["param_groups"][0]["lr"]
                      for m in ("energy", "flow")}
            assert groups["flow"] == pytest.approx(0.3 * groups["energy"])
    kids = children(summary.tracking_uri, summary.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}


@pytest.mark.slow
def test_pbt_exploit_clones_every_shard_on_two_ray_workers(tmp_path, ray_session,
                                                           monkeypatch):
    """The same with each trial on its own 2-worker Ray Train group: every rank's shard, with
    its generator, comes from the donor's checkpoint (PCD walkers, so walkers move too)."""
    from raybm.tuning.sweep import tune_sweep

    monkeypatch.chdir(tmp_path)

    base = {**BASE, "algorithm": {"name": "pcd", "k": 2, "n_walkers": 101},
            "distributed": {"workers": 2}}
    space = write_space(tmp_path / "space.yaml", base=base, scheduler=PBT_CLONE,
                        param_space={"optimizer.lr": {"grid_search": [0.0002, 0.1]}},
                        resources={"workers": 2, "cpus_per_worker": 0.49})
    summary = tune_sweep(space, out=tmp_path / "pbt2")
    assert check_clone(tmp_path / "pbt2", summary.tracking_uri) >= 2  # both ranks
    ranks = {info["rank"] for _, info in exploits(tmp_path / "pbt2")}
    assert ranks == {0, 1}
    kids = children(summary.tracking_uri, summary.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}


@pytest.mark.slow
def test_pbt_sweep_of_four_trials_with_coupled_moves(tmp_path, monkeypatch, ray_session):
    monkeypatch.chdir(tmp_path)
    space = shipped("pbt_lr_k.yaml", tmp_path)
    budget = ["--set", "train.n_updates=1000", "--set", "train.log_every=100",
              "--set", "model.n_hidden=64"]
    assert main(["tune", str(space), *budget, "--out", "pbt"]) == 0
    record = sweep_record(tmp_path / "pbt")
    uri = record["tracking_uri"]
    kids = children(uri, record["parent_run_id"])
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
    # One population of four ranked every 200 updates: the worse half clones the better. (Async
    # PBT ranks on the scores it has seen, some stale, and a donor needs a checkpoint PBT kept
    # from its own turn in the upper half: with only two rounds, as first written here, a run
    # could see no exploit at all. Four rounds make one all but certain.)
    assert check_clone(tmp_path / "pbt", uri) >= 1
    moved = 0
    for kid in kids:
        history = steps(uri, kid.info.run_id, "hp/algorithm.k")
        # An exploit continues from the donor's last checkpoint, which may be behind or ahead
        # of the trial: its history can repeat or skip steps, and always ends at 600.
        assert {s for s, _ in history} <= set(range(100, 1001, 100))
        assert history[-1][0] == 1000
        moved += len({v for _, v in history}) > 1  # every exploit halves or doubles k
    assert moved >= 1


@pytest.mark.slow
def test_sweep_killed_mid_way_resumes_and_runs_every_trial_once(tmp_path):
    """SIGTERM to the sweep's driver after the first trial finished: it saves Tune's state
    and exits 130 with one line; ``--resume`` finishes the rest, the finished trial is not run
    again, and MLflow holds each trial once, all FINISHED."""
    space = write_space(tmp_path / "space.yaml", num_samples=4,
                        param_space={"optimizer.lr": {"loguniform": [0.01, 0.1]},
                                     "train.n_updates": 120, "train.log_every": 20},
                        search_alg={"name": "random", "seed": 3}, max_concurrent_trials=1)
    cmd = [sys.executable, "-m", "raybm.cli", "tune", str(space), "--out", "sweep"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sweep_dir = tmp_path / "sweep"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in (sweep_dir / "trials").glob("*/summary.json")]
        started = list((sweep_dir / "trials").glob("*/checkpoints/step_00000040"))
        if done and len(started) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()
    finished_before = {p.parent.name for p in (sweep_dir / "trials").glob("*/summary.json")}
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "raybm: interrupted" in err and "raybm tune --resume" in err
    record = sweep_record(sweep_dir)
    uri = record["tracking_uri"]
    assert client(uri).get_run(record["parent_run_id"]).info.status == "KILLED"

    again = subprocess.run([sys.executable, "-m", "raybm.cli", "tune", "--resume", "sweep"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    kids = children(uri, record["parent_run_id"])
    trial_ids = sorted(k.data.tags["raybm.trial_id"] for k in kids)
    assert len(trial_ids) == 4 and len(set(trial_ids)) == 4
    assert {k.info.status for k in kids} == {"FINISHED"}
    assert client(uri).get_run(record["parent_run_id"]).info.status == "FINISHED"
    for kid in kids:
        history = [s for s, _ in steps(uri, kid.info.run_id, "loss_generation")]
        assert set(history) == {20, 40, 60, 80, 100, 120}
        if kid.data.tags["raybm.trial_id"] in finished_before:  # not run again
            assert history == sorted(set(history))
            trial_dir = sweep_dir / "trials" / kid.data.tags["raybm.trial_id"]
            assert not list(trial_dir.glob("restores/*.json"))
    assert (sweep_dir / "best_config.yaml").is_file()

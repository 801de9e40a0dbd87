"""Ray Train workers end to end: a 2-worker run writes one Parquet file per shard, logs from
rank 0 into the driver's MLflow run, resumes every walker with its log-weight and the log Z
estimate; a killed worker is replaced and the run finishes from the last checkpoint."""

from __future__ import annotations

import pytest
import torch

from raybm.checkpoint import find_checkpoint, load_checkpoint
from raybm.config import load_config
from raybm.run import train_run

pytest.importorskip("ray")

JARZYNSKI = ["algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=301",
             "algorithm.ess_threshold=0.9", "model.n_hidden=16", "model.labels=false",
             "optimizer.name=adam", "optimizer.lr=0.02", "train.batch_size=64",
             "train.progress=false", "train.log_every=5", "data.max_samples=400",
             "distributed.workers=2"]


def mlflow_history(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_two_worker_run_checkpoints_shards_and_resumes(tmp_path, ray_session):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, JARZYNSKI + ["train.n_updates=10", "train.checkpoint_every=10",
                                         f"tracking.uri={uri}"])
    summary = train_run(cfg, out=tmp_path / "run", evaluate_at_end=False)
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.step == 10 and len(ckpt.shards) == 2
    assert [s.n_walkers for s in ckpt.shards] == [151, 150]
    assert sorted(p.name for p in find_checkpoint(summary.run_dir).glob("walkers-*")) == [
        "walkers-000-of-002.parquet", "walkers-001-of-002.parquet"]
    assert mlflow_history(uri, summary.run_id, "log_z") == [5, 10]
    assert mlflow_history(uri, summary.run_id, "test_loglik_jarzynski") == [5, 10]

    resumed = train_run(resume=summary.run_dir, overrides=["train.n_updates=15"],
                        evaluate_at_end=False)
    assert resumed.run_id == summary.run_id
    after = load_checkpoint(resumed.run_dir)
    assert after.step == 15 and after.walkers.n_walkers == 301
    assert after.state["estimator"]["n_resamplings"] >= ckpt.state["estimator"]["n_resamplings"]
    assert mlflow_history(uri, summary.run_id, "log_z") == [5, 10, 15]

    # The same run continued in-process (workers 0): the population is re-split, not lost.
    local = train_run(resume=summary.run_dir, overrides=["train.n_updates=17",
                                                         "distributed.workers=0"],
                      evaluate_at_end=False)
    assert load_checkpoint(local.run_dir).walkers.n_walkers == 301


def run_with_fault(tmp_path, monkeypatch, fault: str, n_updates: int):
    """A 2-worker Jarzynski run with ``RAYBM_FAULT_INJECT=1:<fault>``, checkpoints every 5
    updates: its summary, what the fault hook recorded, and the steps MLflow got log Z at."""
    marker = tmp_path / "fault"
    monkeypatch.setenv("RAYBM_FAULT_INJECT", fault.replace("MARKER", str(marker)))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, JARZYNSKI + [f"train.n_updates={n_updates}",
                                         "train.checkpoint_every=5", f"tracking.uri={uri}"])
    summary = train_run(cfg, out=tmp_path / "run", evaluate_at_end=False)
    return summary, marker.read_text(), mlflow_history(uri, summary.run_id, "log_z")


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_run_finishes(tmp_path, ray_session, monkeypatch):
    """Rank 1 dies at update 13; the new group continues from step 10, not from scratch (each
    logged step appears once in MLflow), and ends with every walker."""
    summary, fault, logged = run_with_fault(tmp_path, monkeypatch, "1:13:MARKER", 20)
    assert fault == "rank 1 killed at update 13\n"  # the kill did happen
    assert logged == [5, 10, 15, 20]
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.step == 20 and ckpt.walkers.n_walkers == 301
    assert [s.n_walkers for s in ckpt.shards] == [151, 150]
    assert torch.isfinite(ckpt.walkers.log_weight).all()


@pytest.mark.slow
def test_kill_while_a_checkpoint_is_written_keeps_the_previous_one(tmp_path, ray_session,
                                                                   monkeypatch):
    """Rank 1 dies after writing its shard of step 10's checkpoint, before reporting it: that
    checkpoint never becomes complete, so the replaced group restarts from step 5 and still
    finishes with every walker. (Rank 0 logs step 10 before checkpointing, but Ray may tear it
    down before that write lands: MLflow sees step 10 once or twice.)"""
    import json

    summary, fault, logged = run_with_fault(tmp_path, monkeypatch, "1:10:MARKER:checkpoint", 15)
    assert fault == "rank 1 killed mid-checkpoint at update 10\n"
    restores = [json.loads(p.read_text()) for p in (summary.run_dir / "restores").glob("*.json")]
    assert sorted(r["step"] for r in restores) == [5, 5]  # both ranks of the new group
    assert logged in ([5, 10, 15], [5, 10, 10, 15])
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.step == 15 and [s.n_walkers for s in ckpt.shards] == [151, 150]


@pytest.mark.slow
def test_diverging_distributed_run_stops_with_one_message(tmp_path, ray_session, monkeypatch):
    """NaN on one shard reaches every rank through the gradient sum, so all stop at the same
    update; the driver raises one DivergenceError and the run keeps its last good checkpoint
    (no retries: a deterministic failure is not a worker failure)."""
    from raybm.errors import DivergenceError

    monkeypatch.setenv("RAYBM_FAULT_INJECT", f"1:7:{tmp_path / 'poisoned'}:nan")
    cfg = load_config(None, JARZYNSKI + ["train.n_updates=20", "train.checkpoint_every=5",
                                         "tracking.enabled=false"])
    with pytest.raises(DivergenceError, match="training diverged at update 8"):
        train_run(cfg, out=tmp_path / "run", evaluate_at_end=False)
    good = load_checkpoint(tmp_path / "run")
    assert good.step == 5 and torch.isfinite(good.model.weight).all()


def test_conv_energy_on_image_files_on_two_workers(tmp_path, ray_session, monkeypatch):
    """Float image walkers (1 x 8 x 8) sharded over 2 Ray workers: a relative .npy path as
    users write it, Jarzynski walkers drawn exactly inside the box, per-shard checkpoints with
    the images' shape, and the run continued in-process with every walker."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    images = np.random.default_rng(0).uniform(-1, 1, (200, 1, 8, 8)).astype(np.float32)
    np.save("images.npy", images)
    cfg = load_config(None, [
        "data.path=images.npy", "data.test_fraction=0.1", "model.kind=conv",
        "sampler.name=ula", "sampler.step_size=0.001", "sampler.box=[-1, 1]",
        "algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=33",
        "train.batch_size=16", "train.n_updates=4", "train.checkpoint_every=2",
        "train.log_every=2", "train.progress=false", "distributed.workers=2",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    summary = train_run(cfg, out="run")
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.step == 4 and [s.n_walkers for s in ckpt.shards] == [17, 16]
    assert ckpt.walkers.x.shape == (33, 1, 8, 8) and ckpt.walkers.x.dtype == torch.float32
    assert ckpt.walkers.x.abs().max() <= 1
    assert ckpt.meta["model"]["kind"] == "ConvEnergy" and ckpt.meta["model"]["size"] == 8
    assert "test_loglik_jarzynski" in summary.metrics
    assert mlflow_history(f"sqlite:///{tmp_path / 'mlflow.db'}", summary.run_id,
                          "log_z") == [2, 4]
    local = train_run(resume="run", overrides=["train.n_updates=5", "distributed.workers=0"],
                      evaluate_at_end=False)
    assert load_checkpoint(local.run_dir).walkers.x.shape == (33, 1, 8, 8)

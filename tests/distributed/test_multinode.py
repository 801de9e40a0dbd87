"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and
worker nodes, each its own raylet and object store), joined the way users join one
(``RAY_ADDRESS``): shards placed by ``distributed.placement``, the same parameters bit for bit
whichever nodes hold the shards, a lost node replaced mid-run, a lost node never replaced."""

from __future__ import annotations

import os
import sys
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch

from raybm.checkpoint import load_checkpoint
from raybm.config import load_config
from raybm.errors import InputError, RaybmError
from raybm.run import train_run

pytest.importorskip("ray")

NODE_CPUS = 2
JARZYNSKI = ["algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=301",
             "algorithm.ess_threshold=0.9", "model.n_hidden=16", "model.labels=false",
             "optimizer.name=adam", "optimizer.lr=0.02", "train.batch_size=64",
             "train.progress=false", "train.log_every=5", "train.threads=1",
             "data.max_samples=400", "distributed.workers=2"]


class LocalCluster:
    """A head node without CPUs (the driver, Train's controller) and worker nodes of
    ``NODE_CPUS`` CPUs; ``RAY_ADDRESS`` names it, as ``--address`` would."""

    def __init__(self, n_workers: int, dashboard_port: int | None = None) -> None:
        import ray
        from ray.cluster_utils import Cluster

        if ray.is_initialized():  # another module's local Ray
            ray.shutdown()
        head = {"num_cpus": 0, "object_store_memory": 80 * 2**20}
        if dashboard_port is not None:  # the job-submission API lives in the dashboard
            head |= {"include_dashboard": True, "dashboard_port": dashboard_port}
        self.cluster = Cluster(initialize_head=True, head_node_args=head)
        self.workers = [self.add() for _ in range(n_workers)]
        self.joined: list[subprocess.Popen] = []
        self.previous = os.environ.get("RAY_ADDRESS")
        os.environ["RAY_ADDRESS"] = self.cluster.address

    def add(self):
        node = self.cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=80 * 2**20)
        self.cluster.wait_for_nodes()
        return node

    def join(self, timeout_s: float = 60.0) -> str:
        """A replacement node joining as on a real machine: ``ray start --address`` (kept in
        the foreground with ``--block``, so that stopping it takes its raylet down); its id.
        (``Cluster.add_node`` cannot run beside a training driver: it must be on the main
        thread.)"""
        import ray

        before = {n["NodeID"] for n in ray.nodes()}
        self.joined.append(subprocess.Popen(
            ["ray", "start", f"--address={self.cluster.address}", f"--num-cpus={NODE_CPUS}",
             "--object-store-memory=83886080", "--block"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            new = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] not in before]
            if new:
                return new[0]
            time.sleep(0.2)
        raise TimeoutError("the replacement node did not join")

    def remove(self, node_id: str) -> None:
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        self.cluster.remove_node(node)

    def close(self) -> None:
        import ray

        ray.shutdown()
        for proc in self.joined:
            proc.terminate()
            proc.wait(timeout=60)
        self.cluster.shutdown()
        if self.previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = self.previous


@pytest.fixture
def two_nodes():
    cluster = LocalCluster(2)
    yield cluster
    cluster.close()


def mlflow_run(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri).get_run(run_id)


def history(uri: str, run_id: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    return [m.value for m in sorted(MlflowClient(uri).get_metric_history(run_id, key),
                                    key=lambda m: m.step)]


def test_spread_puts_shards_on_two_nodes_and_matches_pack_bit_for_bit(two_nodes, tmp_path):
    """The same seeded run packed on one node and spread over two: the node ids logged as
    MLflow tags say where the shards ran, and the parameters are identical bit for bit."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = {}
    for placement in ("pack", "spread"):
        lines: list[str] = []
        cfg = load_config(None, JARZYNSKI + [
            "train.n_updates=10", "train.checkpoint_every=5", f"tracking.uri={uri}",
            f"distributed.placement={placement}", "distributed.cpus_per_worker=1"])
        runs[placement] = train_run(cfg, out=tmp_path / placement, evaluate_at_end=False,
                                    say=lines.append)
        assert lines[0] == (f"joined the Ray cluster at {two_nodes.cluster.address}: 3 nodes, "
                            f"{2 * NODE_CPUS} CPUs, 0 GPUs")
    tags = {p: mlflow_run(uri, s.run_id).data.tags for p, s in runs.items()}
    worker_nodes = {n.node_id for n in two_nodes.workers}
    for placement, expected in (("pack", 1), ("spread", 2)):
        ranks = {tags[placement]["raybm.node.rank0"], tags[placement]["raybm.node.rank1"]}
        assert tags[placement]["raybm.nodes"] == str(expected) and len(ranks) == expected
        assert ranks <= worker_nodes  # never the CPU-less head
    packed, spread = (load_checkpoint(runs[p].run_dir) for p in ("pack", "spread"))
    assert packed.step == spread.step == 10
    assert torch.equal(packed.model.weight, spread.model.weight)
    assert torch.equal(packed.walkers.x, spread.walkers.x)
    assert torch.equal(packed.walkers.log_weight, spread.walkers.log_weight)


def remove_held_node(cluster: LocalCluster, marker: Path, replace: bool,
                     done: list[str]) -> threading.Thread:
    """In the background: once a rank is held mid-run (the fault hook's marker names its
    node), remove that node (its raylet and workers die) and, with ``replace``, add another."""
    def watch() -> None:
        deadline = time.monotonic() + 240
        while not marker.is_file():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        node_id = marker.read_text().split()[-1]
        cluster.remove(node_id)
        done.append(node_id)
        if replace:
            done.append(cluster.join())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def held_run(tmp_path: Path, monkeypatch, start_timeout_s: float):
    """A 2-worker spread run (one worker per node) whose rank 1 is held at update 13, after
    the checkpoint at 10: its config, MLflow URI and the hold's marker file."""
    marker = tmp_path / "held"
    monkeypatch.setenv("RAYBM_FAULT_INJECT", f"1:13:{marker}:hold")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, JARZYNSKI + [
        "train.n_updates=20", "train.checkpoint_every=10", f"tracking.uri={uri}",
        "distributed.placement=spread", f"distributed.cpus_per_worker={NODE_CPUS}",
        f"distributed.start_timeout_s={start_timeout_s}"])
    return cfg, uri, marker


@pytest.mark.slow
def test_lost_node_is_replaced_and_the_run_finishes_from_its_checkpoint(
        two_nodes, tmp_path, monkeypatch):
    """Rank 1's node is removed at update 13 (checkpoint at 10); a new node joins, the new
    worker group restarts from step 10 (MLflow's resumed_from_step says so) and finishes with
    every walker, its shards on the surviving node and the replacement."""
    cfg, uri, marker = held_run(tmp_path, monkeypatch, start_timeout_s=120)
    changed: list[str] = []
    watcher = remove_held_node(two_nodes, marker, replace=True, done=changed)
    summary = train_run(cfg, out=tmp_path / "run", evaluate_at_end=False)
    watcher.join(timeout=5)
    removed, added = changed
    ckpt = load_checkpoint(summary.run_dir)
    assert ckpt.step == 20 and ckpt.walkers.n_walkers == 301
    assert [s.n_walkers for s in ckpt.shards] == [151, 150]
    assert history(uri, summary.run_id, "resumed_from_step") == [10.0]
    tags = mlflow_run(uri, summary.run_id).data.tags
    final_nodes = {tags["raybm.node.rank0"], tags["raybm.node.rank1"]}
    assert removed not in final_nodes and added in final_nodes


@pytest.mark.slow
def test_lost_node_without_replacement_fails_in_time_and_resumes_on_fewer_workers(
        two_nodes, tmp_path, monkeypatch):
    """No node replaces the lost one: the new worker group waits start_timeout_s for its
    resources, then the run ends with one line naming the checkpoint to resume from; that
    --resume on one worker re-splits all the walkers and finishes."""
    cfg, uri, marker = held_run(tmp_path, monkeypatch, start_timeout_s=15)
    changed: list[str] = []
    remove_held_node(two_nodes, marker, replace=False, done=changed)
    started = time.monotonic()
    with pytest.raises(RaybmError) as failed:
        train_run(cfg, out=tmp_path / "run", evaluate_at_end=False)
    waited = time.monotonic() - started
    message = str(failed.value)
    assert "\n" not in message and "WorkerGroupStartupTimeoutError" in message
    run_dir = (tmp_path / "run").resolve()
    named = message.split("the last complete checkpoint is ")[1].split(": continue")[0]
    assert load_checkpoint(named).step == 10  # Ray's copy or the run's, the same state
    assert f"raybm train --resume {run_dir}" in message
    assert waited < 15 + 120  # the stated wait, plus the run and Ray's own detection
    monkeypatch.delenv("RAYBM_FAULT_INJECT")
    resumed = train_run(resume=run_dir, overrides=["distributed.workers=1"],
                        evaluate_at_end=False)
    ckpt = load_checkpoint(resumed.run_dir)
    assert ckpt.step == 20 and ckpt.walkers.n_walkers == 301 and len(ckpt.shards) == 1
    assert history(uri, resumed.run_id, "resumed_from_step") == [10.0]


def test_a_path_no_node_can_read_is_one_line_naming_the_node(two_nodes, tmp_path):
    """Every node is asked (a task pinned to each); on one machine they share one file
    system, so the missing case is a path that no node has."""
    import ray

    from raybm.distributed.cluster import check_shared_paths

    ray.init(address=two_nodes.cluster.address)
    data = tmp_path / "data.npy"
    data.write_bytes(b"")
    assert check_shared_paths({"data.path": data}, tmp_path) == 3
    with pytest.raises(InputError, match=r"data\.path: not readable on node \S+ \(\w{8}\): "
                                         r"on a Ray cluster, data and run directories must be"):
        check_shared_paths({"data.path": tmp_path / "elsewhere.npy"}, tmp_path)
    assert not list(tmp_path.glob(".raybm-probe-*"))  # the probe does not stay behind
    ray.shutdown()


def test_joining_an_address_with_no_cluster_is_one_line(monkeypatch, tmp_path):
    """--address names a cluster that is not there: an error, not a silent local run."""
    import ray

    from raybm.distributed.launch import start_ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with pytest.raises(InputError, match=r"^127\.0\.0\.1:1: --address: cannot join this Ray "
                                         r"cluster \("):
        start_ray(2, use_gpu=False)


@pytest.mark.slow
def test_two_trial_sweep_runs_one_trial_on_each_node(two_nodes, tmp_path):
    """A 2-trial sweep joined to the cluster: each trial reserves a whole node's CPUs, so the
    two run at once on different nodes (their MLflow runs' node tags), and both finish."""
    import yaml

    from raybm.tuning.sweep import tune_sweep
    from tests.tuning.test_sweep import BASE, children

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "base": BASE, "metric": "test_accuracy", "mode": "max", "num_samples": 2,
        "max_concurrent_trials": 2, "search_alg": {"name": "random", "seed": 0},
        "param_space": {"optimizer.lr": {"loguniform": [0.01, 0.1]}},
        "resources": {"workers": 0, "cpus_per_worker": NODE_CPUS}}))
    lines: list[str] = []
    summary = tune_sweep(space, [f"tracking.uri={uri}"], out=tmp_path / "sweep",
                         say=lines.append)
    assert lines[0].startswith(f"joined the Ray cluster at {two_nodes.cluster.address}: ")
    kids = children(uri, summary.parent_run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    nodes = {k.data.tags["raybm.node.rank0"] for k in kids}
    assert nodes == {n.node_id for n in two_nodes.workers}


@pytest.mark.slow
def test_ray_job_submit_runs_raybm_train_on_the_cluster(tmp_path):
    """``ray job submit`` to the head's job API (Ray's dashboard, ``ray[default]``): the job
    runs ``raybm train`` on 2 workers of the cluster (RAY_ADDRESS is set for it by Ray), it
    succeeds, and its MLflow run is there, FINISHED, with its shards on the two nodes."""
    from mlflow.tracking import MlflowClient

    from tests.servers import free_port

    port = free_port()
    cluster = LocalCluster(2, dashboard_port=port)
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        job = subprocess.run(
            ["ray", "job", "submit", "--address", f"http://127.0.0.1:{port}", "--",
             sys.executable, "-m", "raybm.cli", "train", "--workers", "2", "--no-progress",
             "--out", str(tmp_path / "run"), "--tracking-uri", uri,
             "--set", "train.n_updates=20", "--set", "data.max_samples=400",
             "--set", "distributed.placement=spread"],
            capture_output=True, text=True, timeout=600, env=env)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout + job.stderr
        assert "raybm: joined the Ray cluster at" in job.stdout
        runs = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_experiment_by_name("raybm").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert runs[0].data.tags["raybm.nodes"] == "2"
        assert load_checkpoint(tmp_path / "run").step == 20
    finally:
        cluster.close()

"""A sweep against a real tracking server: PostgreSQL backend store, an S3-compatible artifact
store and ``mlflow server`` on loopback (tests/servers.py). Two trials, each on its own group of
2 Ray Train workers, log at the same time; every metric point of every trial must arrive, every
artifact must read back through the server, and the parent / child links must hold.

Marked ``server``: CI runs it with ``-m server`` after ``.ci/services.sh`` installs PostgreSQL
(without PostgreSQL it skips, with the reason, except under CI, where it fails)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.servers import s3_client, tracking_stack

pytest.importorskip("ray")
pytestmark = pytest.mark.server

LOG_EVERY, N_UPDATES = 5, 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with tracking_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


def test_two_trials_on_two_workers_each_log_everything_to_the_server(stack, ray_session,
                                                                     tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from raybm.tuning.sweep import tune_sweep

    for var in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)  # artifacts can only travel through the server
    base = {"data": {"format": "bimodal", "synthetic": {"n_visible": 12, "n_samples": 800}},
            "model": {"n_hidden": 6, "labels": False},
            "algorithm": {"name": "jarzynski", "k": 2, "n_walkers": 301,
                          "ess_threshold": 0.9},
            "train": {"n_updates": N_UPDATES, "batch_size": 100, "log_every": LOG_EVERY,
                      "checkpoint_every": 20, "eval_t": [1, 5], "eval_samples": 100,
                      "threads": 1},
            "distributed": {"workers": 2}}
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "server-sweep", "base": base, "metric": "test_loglik_jarzynski",
        "mode": "max", "param_space": {"optimizer.lr": {"grid_search": [0.01, 0.05]}},
        "max_concurrent_trials": 2, "resources": {"workers": 2, "cpus_per_worker": 0.49}}))
    summary = tune_sweep(space, [f"tracking.uri={stack.uri}"], out=tmp_path / "sweep")
    assert summary.tracking_uri == stack.uri and summary.best is not None

    client = MlflowClient(stack.uri)
    parent = client.get_run(summary.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["raybm.kind"] == "sweep"
    kids = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{summary.parent_run_id}'")
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    assert {k.data.tags["raybm.workers"] for k in kids} == {"2"}

    live = list(range(LOG_EVERY, N_UPDATES + 1, LOG_EVERY))
    spans = []
    for kid in kids:
        run_id = kid.info.run_id
        for key in ("loss_joint", "ess", "log_z", "test_loglik_jarzynski",
                    "hp/optimizer.lr", "test_loglik_exact"):
            history = sorted(m.step for m in client.get_metric_history(run_id, key))
            # Every live point once; the final evaluation adds test_loglik_exact at the end.
            extra = [N_UPDATES] if key == "test_loglik_exact" else []
            assert history == sorted(live + extra), (key, history)
        stamps = [m.timestamp for m in client.get_metric_history(run_id, "loss_joint")]
        spans.append((min(stamps), max(stamps)))
        # Artifacts read back through the server, byte for byte.
        trial_dir = tmp_path / "sweep" / "trials" / kid.data.tags["raybm.trial_id"]
        got = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / run_id)))
        assert got.read_bytes() == (trial_dir / "config.yaml").read_bytes()
        final = sorted((trial_dir / "checkpoints").glob("step_*"))[-1]
        ckpt = Path(client.download_artifacts(run_id, "checkpoint", str(tmp_path / run_id)))
        for name in ("meta.json", "walkers-000-of-002.parquet", "walkers-001-of-002.parquet"):
            assert (ckpt / name).read_bytes() == (final / name).read_bytes()
        plots = {a.path.split("/")[-1] for a in client.list_artifacts(run_id, "plots")}
        assert "jarzynski.png" in plots
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1, "the two trials logged at the same time"

    best = Path(client.download_artifacts(summary.parent_run_id, "best_config.yaml",
                                          str(tmp_path / "parent")))
    assert best.read_bytes() == (tmp_path / "sweep" / "best_config.yaml").read_bytes()
    keys = [o["Key"] for o in s3_client(stack.s3).list_objects_v2(
        Bucket=stack.s3["bucket"]).get("Contents", [])]
    assert any(k.endswith("best_config.yaml") for k in keys)
    assert sum(k.endswith(".parquet") for k in keys) >= 4  # both trials' shard files
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())[
        "tracking_uri"] == stack.uri

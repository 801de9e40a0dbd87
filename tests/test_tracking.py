"""Tracking: a write that finds the SQLite store locked by another writer is retried, not lost."""

from __future__ import annotations

import sqlite3
import threading
import time

from raybm.tracking import Tracker


def test_a_metric_point_waits_out_another_writers_lock(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "locks")
    tracker.log_metrics({"m": 0.0}, 0)
    holder = sqlite3.connect(tmp_path / "mlflow.db", timeout=0, isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the timeout
    release = threading.Timer(8.0, lambda: holder.execute("COMMIT"))
    release.start()
    t0 = time.perf_counter()
    tracker.log_metrics({"m": 1.0}, 1)  # SQLAlchemy's 5 s busy timeout passes: retried
    waited = time.perf_counter() - t0
    release.join()
    holder.close()
    history = tracker.client.get_metric_history(tracker.run_id, "m")
    assert [(m.step, m.value) for m in history] == [(0, 0.0), (1, 1.0)]
    assert waited >= 7.5


def test_runs_names_a_trial_the_scheduler_stopped_as_the_sweep_table_does(tmp_path, capsys):
    """``raybm runs --sweep``: a child run the sweep closed FINISHED with
    ``raybm.stopped_early=true`` reads ``stopped`` (as in the sweep's own table), one that ran
    to its end ``finished``, a failed one ``error``; MLflow's own statuses stay as they were."""
    from mlflow.tracking import MlflowClient

    from raybm.cli import main
    from raybm.tracking import close_run, experiment_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = experiment_id(client, uri, "raybm")
    parent = client.create_run(exp, run_name="sweep", tags={"raybm.kind": "sweep"}).info.run_id
    kids = {}
    for name, value, status, tags in [("early", 0.7, "FINISHED", {"raybm.stopped_early": "true"}),
                                      ("full", 0.9, "FINISHED", {"raybm.stopped_early": "false"}),
                                      ("broke", 0.1, "FAILED", {})]:
        run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent})
        client.log_metric(run.info.run_id, "acc", value, step=10)
        close_run(uri, run.info.run_id, status, tags)  # as SweepProgress closes a trial's run
        kids[name] = run.info.run_id
    client.create_run(exp, run_name="other")  # not a child: left out of the sweep's table

    assert main(["runs", "--sweep", parent, "--tracking-uri", uri, "--metric", "acc"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "name", "status", "acc"]
    rows = [line.split()[:4] for line in table[2:]]
    assert rows == [[kids["full"][:8], "full", "finished", "0.9"],
                    [kids["early"][:8], "early", "stopped", "0.7"],
                    [kids["broke"][:8], "broke", "error", "0.1"]]
    assert client.get_run(kids["early"]).info.status == "FINISHED"

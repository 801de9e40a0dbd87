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

"""MLflow tracking: the only module that imports mlflow.

Default store: an *absolute* ``sqlite:///<cwd>/mlflow.db`` (MLflow 3 refuses the old
``./mlruns`` file store, and a relative URI would break under Ray Tune's per-trial working
directories), with artifacts in ``<cwd>/mlartifacts``. ``MLFLOW_TRACKING_URI`` or the config's
``tracking.uri`` override it (an ``http://`` server on clusters).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any


def _quiet_mlflow_logs() -> None:
    """MLflow sets its loggers to INFO on import (database creation messages): keep the
    terminal for raybm's own progress and summary."""
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def default_uri() -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


class Tracker:
    """One MLflow run: params, per-update metrics, artifacts; resumable by run id."""

    def __init__(self, uri: str | None, experiment: str, run_name: str | None = None,
                 run_id: str | None = None, tags: dict[str, str] | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        _quiet_mlflow_logs()
        self.uri = uri or default_uri()
        self.client = MlflowClient(tracking_uri=self.uri)
        mlflow.set_tracking_uri(self.uri)
        if run_id is not None:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifact_location = None
            if self.uri.startswith("sqlite:///"):
                db = Path(self.uri[len("sqlite:///"):])
                artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
            exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
        else:
            exp_id = exp.experiment_id
        run = self.client.create_run(exp_id, run_name=run_name, tags=tags or {})
        self.run_id = run.info.run_id

    @property
    def ui_command(self) -> str:
        return ui_command(self.uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i : i + 500])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)

    def history(self, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
        """``{key: [(step, value), ...]}`` of the run's logged metrics (any process's)."""
        return {k: [(m.step, m.value) for m in self.client.get_metric_history(self.run_id, k)]
                for k in keys}

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class NullTracker:
    """Tracking switched off (``tracking.enabled: false``): every call is a no-op."""

    uri = ""
    run_id = None
    ui_command = ""

    def log_params(self, params): ...
    def log_metrics(self, metrics, step): ...
    def log_artifact(self, path, artifact_path=None): ...
    def set_tags(self, tags): ...
    def history(self, keys): return {k: [] for k in keys}
    def end(self, status="FINISHED"): ...


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."

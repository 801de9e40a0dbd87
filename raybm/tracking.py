"""MLflow tracking: the only module that imports mlflow.

Default store: an *absolute* ``sqlite:///<cwd>/mlflow.db`` (MLflow 3 refuses the old
``./mlruns`` file store, and a relative URI would break under Ray Tune's per-trial working
directories), with artifacts in ``<cwd>/mlartifacts``. ``MLFLOW_TRACKING_URI`` or the config's
``tracking.uri`` override it (an ``http://`` server on clusters).
"""

from __future__ import annotations

import contextlib
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


def default_uri(base: Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return resolve_uri(env, base)
    return f"sqlite:///{(base or Path.cwd()).resolve() / 'mlflow.db'}"


# Schemes MLflow 3.17 can track to; a bare path or ``file:`` (MLflow 3 refuses its old file
# store) is refused here, before a run starts, rather than in MLflow's traceback at the end.
URI_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def resolve_uri(uri: str | None, base: Path | None = None) -> str:
    """An absolute tracking URI: None is the default store in ``base`` (the working directory),
    a relative SQLite path is made absolute against ``base`` (Ray Tune trials run in their own
    directories, where a relative URI would open a different, empty database)."""
    from raybm.errors import InputError

    if uri is None:
        return default_uri(base)
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] not in URI_SCHEMES:
        raise InputError("tracking.uri", "", f"{uri!r} is not a tracking URI; use "
                         "sqlite:////abs/path/mlflow.db or http://host:port")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise InputError("tracking.uri", "", f"{uri!r}: write sqlite:///PATH/mlflow.db")
        path = Path(rest[1:])
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        path = path.resolve()
        if path.is_dir():
            raise InputError("tracking.uri", "", f"{path} is a directory, not a database file")
        return f"sqlite:///{path}"
    return uri


def check_store(uri: str, existing: bool = False) -> None:
    """Refuse, in one line, a tracking store MLflow could not open, before anything is written:
    an SQLite file whose folder is missing (or, for a run being continued, the database
    itself), a server that does not answer (MLflow would retry for minutes)."""
    from raybm.errors import InputError

    scheme = uri.partition("://")[0]
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):])
        if not db.parent.is_dir():
            raise InputError("tracking.uri", "", f"{db.parent} is not a directory")
        if existing and not db.is_file():
            raise InputError("tracking.uri", "", f"{db} does not exist: the run was tracked "
                             "there (restore that file to continue the run)")
    elif scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
        except urllib.error.HTTPError:
            pass  # it answers: MLflow will say what it thinks of the request
        except (OSError, ValueError) as err:
            why = getattr(err, "reason", err)
            raise InputError("tracking.uri", "", f"no tracking server answers at {uri} "
                             f"({why})") from None
    elif scheme == "postgresql":
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3.
            raise InputError("tracking.uri", "", f"{uri}: use postgresql+psycopg2:// (the "
                             "psycopg 3 driver that plain postgresql:// asks for is not "
                             "installed)")


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}"


def _locked(err: Exception) -> bool:
    return "database is locked" in str(err) or "database table is locked" in str(err)


# Seconds this process spent in MLflow calls (benchmarks/tune_overhead.py reads it).
SECONDS = {"mlflow": 0.0}


def with_retries(call, *args, attempts: int = 12, **kwargs):
    """``call(*args, **kwargs)``, retried while SQLite reports a lock.

    SQLite admits one writer at a time; concurrent Tune trials (and Ray workers) writing to one
    ``mlflow.db`` get "database is locked" once its busy timeout passes. A metric point must not
    be lost for that, so the write is retried with growing, jittered waits (about a minute in
    all). A tracking server has no such limit: real sweeps should use one (docs/tune.md).
    """
    import random
    import time

    t0 = time.perf_counter()
    try:
        for attempt in range(attempts):
            try:
                return call(*args, **kwargs)
            except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError
                if not _locked(err) or attempt == attempts - 1:
                    raise
                time.sleep(min(0.05 * 2 ** attempt, 8.0) * (0.5 + random.random()))
    finally:
        SECONDS["mlflow"] += time.perf_counter() - t0


@contextlib.contextmanager
def _creation_lock(uri: str):
    """Hold an exclusive lock beside a SQLite store while it may be created: two runs started
    at once in a new directory both ran MLflow's schema migrations on one new ``mlflow.db`` and
    one crashed (once leaving the database unusable for every later run)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    lock = Path(uri[len("sqlite:///"):] + ".lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Tracker:
    """One MLflow run: params, per-update metrics, artifacts; resumable by run id.

    ``parent_run_id`` makes it a nested (child) run, as MLflow's UI groups them: a Tune trial
    under its sweep's parent run. Reopening a run (``run_id``) remembers its status, so that an
    attempt that fails before it trains can put the status back (:meth:`end`).
    """

    def __init__(self, uri: str | None, experiment: str, run_name: str | None = None,
                 run_id: str | None = None, tags: dict[str, str] | None = None,
                 parent_run_id: str | None = None) -> None:
        # No mlflow.set_tracking_uri: it exports MLFLOW_TRACKING_URI, so a later run in this
        # process (or a Tune trial it starts) would track into this run's store by default.
        from mlflow.tracking import MlflowClient

        from raybm.errors import InputError, RaybmError

        _quiet_mlflow_logs()
        self.uri = resolve_uri(uri)
        check_store(self.uri, existing=run_id is not None)
        self.previous_status: str | None = None
        try:
            with _creation_lock(self.uri):  # MLflow creates a new store's schema here
                self.client = MlflowClient(tracking_uri=self.uri)
                exp_id = None if run_id else experiment_id(self.client, self.uri, experiment)
        except RaybmError:
            raise
        except Exception as err:  # sqlalchemy, MLflow, OS errors: the store cannot be used
            why = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise InputError("tracking.uri", "", f"cannot use the tracking store "
                             f"{self.uri} ({type(err).__name__}: {why})") from None
        if run_id is not None:
            self.run_id = run_id
            self.previous_status = self.status()
            with_retries(self.client.update_run, run_id, status="RUNNING")
            return
        tags = dict(tags or {})
        if parent_run_id is not None:
            tags["mlflow.parentRunId"] = parent_run_id
        run = with_retries(self.client.create_run, exp_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id

    def status(self) -> str:
        from mlflow.exceptions import MlflowException

        from raybm.errors import InputError

        try:
            return with_retries(self.client.get_run, self.run_id).info.status
        except MlflowException:
            raise InputError(self.uri, "", f"has no MLflow run {self.run_id} (the run was "
                             "tracked elsewhere, or its store was deleted)") from None

    @property
    def ui_command(self) -> str:
        return ui_command(self.uri)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            with_retries(self.client.log_batch, self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 500):
            with_retries(self.client.log_batch, self.run_id, metrics=items[i : i + 500])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            with_retries(self.client.log_artifacts, self.run_id, str(path), artifact_path)
        else:
            with_retries(self.client.log_artifact, self.run_id, str(path), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            with_retries(self.client.set_tag, self.run_id, k, str(v))

    def history(self, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
        """``{key: [(step, value), ...]}`` of the run's logged metrics (any process's)."""
        return {k: [(m.step, m.value)
                    for m in with_retries(self.client.get_metric_history, self.run_id, k)]
                for k in keys}

    def latest(self) -> dict[str, float]:
        """The last logged value of every metric of the run (any process's)."""
        return dict(with_retries(self.client.get_run, self.run_id).data.metrics)

    def end(self, status: str = "FINISHED") -> None:
        with_retries(self.client.set_terminated, self.run_id, status=status)


class NullTracker:
    """Tracking switched off (``tracking.enabled: false``): nothing is recorded, except the
    last finite value of each metric this process logs (``latest``), which the run's
    ``summary.json`` reads (its training rate) as it would from MLflow."""

    uri = ""
    run_id = None
    ui_command = ""
    previous_status = None

    def __init__(self) -> None:
        self._latest: dict[str, float] = {}

    def log_params(self, params): ...

    def log_metrics(self, metrics, step):
        self._latest |= {k: float(v) for k, v in metrics.items()
                         if v is not None and math.isfinite(float(v))}

    def log_artifact(self, path, artifact_path=None): ...
    def set_tags(self, tags): ...
    def history(self, keys): return {k: [] for k in keys}
    def latest(self): return dict(self._latest)
    def end(self, status="FINISHED"): ...


def close_run(uri: str, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
    """Set a run's final status (and tags) from another process: the sweep's driver closes
    the child run of a trial that Tune ended."""
    from mlflow.tracking import MlflowClient

    _quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    for key, value in (tags or {}).items():
        with_retries(client.set_tag, run_id, key, value)
    with_retries(client.set_terminated, run_id, status=status)


def search_runs(uri: str, experiment: str, parent_run_id: str | None = None,
                metric: str | None = None, mode: str = "max", top: int = 10
                ) -> list[dict[str, Any]]:
    """The best runs of an experiment (or of one sweep) by ``metric``, as plain dicts:
    ``{"run_id", "name", "status", "params", "metrics", "tags"}`` (MLflow's search API).

    ``status`` is MLflow's (a trial the scheduler stopped early is FINISHED, with the tag
    ``raybm.stopped_early``); ``raybm.tuning.progress.run_status`` words it as a sweep does."""
    from mlflow.tracking import MlflowClient

    from raybm.errors import InputError

    _quiet_mlflow_logs()
    client = MlflowClient(tracking_uri=uri)
    exp = with_retries(client.get_experiment_by_name, experiment)
    if exp is None:
        raise InputError(uri, "--experiment", f"has no experiment {experiment!r}")
    filters = [f"tags.mlflow.parentRunId = '{parent_run_id}'"] if parent_run_id else []
    order = [f"metrics.`{metric}` {'DESC' if mode == 'max' else 'ASC'}"] if metric else []
    runs = with_retries(client.search_runs, [exp.experiment_id], " and ".join(filters),
                        max_results=top if metric else 1000, order_by=order or None)
    out = [{"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
            "params": dict(r.data.params), "metrics": dict(r.data.metrics),
            "tags": dict(r.data.tags)} for r in runs]
    if metric:  # runs without the metric sort last in MLflow; leave them out of a ranking
        out = [r for r in out if metric in r["metrics"]]
    return out[:top]


def get_run_tags(uri: str, run_id: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from raybm.errors import InputError

    _quiet_mlflow_logs()
    try:
        return dict(with_retries(MlflowClient(tracking_uri=uri).get_run, run_id).data.tags)
    except MlflowException:
        raise InputError(uri, "--sweep", f"has no run {run_id}") from None


def experiment_id(client, uri: str, name: str) -> str:
    """The id of experiment ``name``, created when missing (artifacts beside a SQLite store)."""
    exp = with_retries(client.get_experiment_by_name, name)
    if exp is not None:
        return exp.experiment_id
    artifact_location = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        artifact_location = (db.parent / "mlartifacts").resolve().as_uri()
    try:
        return with_retries(client.create_experiment, name, artifact_location=artifact_location)
    except Exception:  # another trial created it a moment ago
        exp = with_retries(client.get_experiment_by_name, name)
        if exp is None:
            raise
        return exp.experiment_id


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."

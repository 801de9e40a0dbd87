"""Real services for integration tests: PostgreSQL, an S3-compatible store, an MLflow server.

Plain context managers with no pytest dependency, so a benchmark or a script can start the
same stack as the `server` tests. A missing service raises `unittest.SkipTest` (pytest turns
it into a skip), except under CI, where a test that silently skips proves nothing: there it
raises `ServiceUnavailable` and the test fails.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

log = logging.getLogger(__name__)

# Test-only credentials: the services listen on loopback only and die with the test session.
PG_USER, PG_PASSWORD, PG_DATABASE = "raybm", "raybm-test", "mlflow"
AWS_KEY_ID, AWS_SECRET, AWS_REGION = "testing", "testing", "us-east-1"


class ServiceUnavailable(RuntimeError):
    """A service the `server` tests need is missing while running under CI."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> Exception:
    """The exception to raise for a missing service: a skip locally, a failure under CI."""
    if in_ci():
        return ServiceUnavailable(f"{reason} (CI is set, so this fails instead of skipping)")
    return unittest.SkipTest(reason)


def free_port() -> int:
    # The kernel picks an unused port; a race with another process binding it before the
    # service does is possible but rare, and then the service's startup error says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path, n_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"
    return text[-n_chars:] or f"<{path} is empty>"


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, log_path: Path, what: str,
              timeout: float) -> None:
    """Poll `url` until it answers 2xx; fail early with the log's tail if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if 200 <= r.status < 300:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before {url} "
                               f"answered; log {log_path}:\n{log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer {url} within {timeout:.0f} s; "
                               f"log {log_path}:\n{log_tail(log_path)}")
        time.sleep(0.1)


@contextlib.contextmanager
def process_group(cmd: list[str], log_path: Path, env: Mapping[str, str]
                  ) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` in its own session; on exit stop the whole group (servers fork workers)."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env),
                                start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        # Whatever is left of the group (a worker slow to exit, or a hung leader) goes now.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _env_without(*prefixes: str) -> dict[str, str]:
    # The caller's own tracking/AWS settings must not leak into a self-contained service.
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


# --------------------------------------------------------------------------- PostgreSQL

def pg_bindir() -> Path | None:
    candidates: list[str] = []
    if shutil.which("pg_config"):
        r = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(r.stdout.strip())
    # Debian keeps the server binaries off PATH, one directory per major version.
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit()
                         else 0, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(str(Path(initdb).resolve().parent))
    for c in candidates:
        if c and all((Path(c) / b).is_file() for b in ("initdb", "pg_ctl", "createdb")):
            return Path(c)
    return None


def _service_user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as, or None to run as ourselves (it refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise unavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


@contextlib.contextmanager
def postgres(tmp_dir: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """A fresh PostgreSQL cluster on a free 127.0.0.1 port; yields its database URI.

    The cluster lives in a new directory under `tmp_dir` (default: the system temp dir),
    removed on exit together with the server.
    """
    bindir = pg_bindir()
    if bindir is None:
        raise unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                          "install the 'postgresql' package (see .ci/services.sh)")
    user = _service_user()
    started = time.monotonic()

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if user is not None:
            kw = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, cwd="/", **kw)

    def own(path: Path) -> None:
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    root = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp_dir))
    try:
        own(root)
        # The socket path must fit in sun_path (107 bytes), and as root the service user must
        # reach the directory (pytest's per-user base dir is mode 0700 root): if not, use the
        # system temp dir, which is short and world-traversable.
        if len(str(root)) > 80 or (user is not None and run("test", "-w", root).returncode):
            shutil.rmtree(root)
            root = Path(tempfile.mkdtemp(prefix="raybm-pg-"))
            own(root)
        data, logfile, pwfile = root / "data", root / "postgres.log", root / "pwfile"
        pwfile.write_text(PG_PASSWORD + "\n")
        own(pwfile)

        def check(r: subprocess.CompletedProcess[str], what: str) -> None:
            if r.returncode != 0:
                raise RuntimeError(f"{what} failed ({r.returncode}):\n{r.stdout}{r.stderr}\n"
                                   f"server log {logfile}:\n{log_tail(logfile)}")

        # --no-sync and the settings below trade durability for speed: the data is throwaway.
        check(run(bindir / "initdb", "-D", data, "-U", PG_USER, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                  "-E", "UTF8", "--locale=C"), "initdb")
        port = free_port()
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\n"
                       f"unix_socket_directories = '{root}'\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        try:
            check(run(bindir / "pg_ctl", "-D", data, "-l", logfile, "-w", "-t", "60",
                      "start"), "pg_ctl start")
            # Over the unix socket (trust): the TCP side only takes the password.
            check(run(bindir / "createdb", "-h", root, "-p", str(port), "-U", PG_USER,
                      PG_DATABASE), "createdb")
            log.info("postgres ready on port %d in %.1f s", port, time.monotonic() - started)
            # The driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3,
            # while the test extra installs psycopg2-binary.
            yield f"postgresql+psycopg2://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"
        finally:
            # Also after a failed or timed-out start, which can leave a postmaster behind.
            if (data / "postmaster.pid").exists() and run(
                    bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "30",
                    "stop").returncode != 0:
                run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- S3 (moto)

class S3Info(TypedDict):
    endpoint_url: str
    bucket: str
    aws_access_key_id: str
    aws_secret_access_key: str
    region_name: str


def s3_env(s3: S3Info) -> dict[str, str]:
    """Environment variables that point boto3 (and MLflow's S3 artifact store) at `s3`."""
    return {"MLFLOW_S3_ENDPOINT_URL": s3["endpoint_url"],
            "AWS_ACCESS_KEY_ID": s3["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": s3["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": s3["region_name"],
            # No instance-metadata probes (a 1 s network timeout each, off any cloud VM).
            "AWS_EC2_METADATA_DISABLED": "true"}


def s3_client(s3: S3Info):  # -> botocore S3 client (untyped)
    import boto3

    return boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name=s3["region_name"],
                        aws_access_key_id=s3["aws_access_key_id"],
                        aws_secret_access_key=s3["aws_secret_access_key"])


def _require_modules(*modules: str, hint: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise unavailable(f"Python modules {missing} not installed; {hint}")


@contextlib.contextmanager
def s3_server(log_dir: str | os.PathLike[str] | None = None, bucket: str = "raybm-test"
              ) -> Iterator[S3Info]:
    """moto's S3 server in its own process on a free 127.0.0.1 port, with `bucket` created."""
    _require_modules("moto", "flask", "flask_cors", "boto3",
                     hint='pip install boto3 "moto[server]"')
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="moto-"))
        logfile = Path(log_dir) / "moto.log"
        port, started = free_port(), time.monotonic()
        env = _env_without("AWS_", "MOTO_")
        proc = stack.enter_context(process_group(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            logfile, env))
        endpoint = f"http://127.0.0.1:{port}"
        wait_http(f"{endpoint}/moto-api/", proc, logfile, "moto S3 server", timeout=60)
        info = S3Info(endpoint_url=endpoint, bucket=bucket, aws_access_key_id=AWS_KEY_ID,
                      aws_secret_access_key=AWS_SECRET, region_name=AWS_REGION)
        s3_client(info).create_bucket(Bucket=bucket)
        log.info("moto S3 ready on port %d in %.1f s", port, time.monotonic() - started)
        yield info


# --------------------------------------------------------------------------- MLflow

MLFLOW_SERVER_SCRIPT = Path(__file__).resolve().parents[1] / "deploy/mlflow/mlflow-server.sh"


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifact_root: str, s3_env: Mapping[str, str],
                  log_dir: str | os.PathLike[str] | None = None, workers: int = 2,
                  timeout: float = 120) -> Iterator[str]:
    """`mlflow server` on a free 127.0.0.1 port, proxying artifacts to `artifact_root`.

    Clients need only the yielded http URI: the server alone holds the S3 credentials.
    """
    if backend_uri.startswith("postgresql+psycopg2:"):
        _require_modules("psycopg2", hint="pip install psycopg2-binary")
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-"))
        logfile = Path(log_dir) / "mlflow-server.log"
        port, started = free_port(), time.monotonic()
        env = _env_without("MLFLOW_", "AWS_") | dict(s3_env) | {
            # Nothing may reach the internet: no usage telemetry.
            "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
            # The default job runner (huey) adds a consumer process and a /dev/shm temp dir
            # that outlives the server; tracking needs neither.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "PYTHONUNBUFFERED": "1"}
        # The start-up command is the deployment's own (deploy/mlflow/mlflow-server.sh, also
        # run by its compose file), so these tests exercise what a cluster's server runs.
        env |= {"MLFLOW_PYTHON": sys.executable, "MLFLOW_BACKEND_STORE_URI": backend_uri,
                "MLFLOW_ARTIFACTS_DESTINATION": artifact_root, "MLFLOW_HOST": "127.0.0.1",
                "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": str(workers)}
        cmd = ["sh", str(MLFLOW_SERVER_SCRIPT)]
        proc = stack.enter_context(process_group(cmd, logfile, env))
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", proc, logfile, "mlflow server", timeout)
        log.info("mlflow server ready on port %d in %.1f s", port, time.monotonic() - started)
        yield uri


# --------------------------------------------------------------------------- all three

@dataclass
class TrackingStack:
    uri: str  # the MLflow server: all a client needs
    backend_uri: str
    s3: S3Info
    artifact_root: str
    startup_s: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def tracking_stack(tmp_dir: str | os.PathLike[str]) -> Iterator[TrackingStack]:
    """PostgreSQL + moto S3 + `mlflow server`; logs go to `tmp_dir`."""
    timings: dict[str, float] = {}

    def timed(name: str, cm: contextlib.AbstractContextManager):  # type: ignore[type-arg]
        t = time.monotonic()
        value = stack.enter_context(cm)
        timings[name] = time.monotonic() - t
        return value

    with contextlib.ExitStack() as stack:
        backend = timed("postgres", postgres(tmp_dir))
        s3 = timed("s3", s3_server(tmp_dir))
        artifact_root = f"s3://{s3['bucket']}/mlartifacts"
        uri = timed("mlflow", mlflow_server(backend, artifact_root, s3_env(s3), tmp_dir))
        yield TrackingStack(uri, backend, s3, artifact_root, timings)

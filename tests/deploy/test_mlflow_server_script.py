"""deploy/mlflow/mlflow-server.sh: the one start-up command of the MLflow tracking server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.servers import MLFLOW_SERVER_SCRIPT

SETTINGS = {"MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg2://u:p@db:5432/mlflow",
            "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlartifacts"}


def run_script(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the script with a stand-in Python that records the arguments it is given."""
    args_file = tmp_path / "args"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {args_file}\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(["sh", str(MLFLOW_SERVER_SCRIPT)], capture_output=True, text=True,
                            env=clean | {"MLFLOW_PYTHON": str(fake)} | env, timeout=30)
    args = args_file.read_text().splitlines() if args_file.exists() else []
    return result, args


def test_script_builds_the_server_command(tmp_path: Path):
    """Settings from the environment become `mlflow server` flags, artifacts proxied."""
    result, args = run_script(tmp_path, **SETTINGS, MLFLOW_HOST="0.0.0.0", MLFLOW_PORT="5001",
                              MLFLOW_WORKERS="2", MLFLOW_ALLOWED_HOSTS="mlflow,mlflow:5000")
    assert result.returncode == 0, result.stderr
    assert args == ["-m", "mlflow", "server",
                    "--backend-store-uri", SETTINGS["MLFLOW_BACKEND_STORE_URI"],
                    "--serve-artifacts",
                    "--artifacts-destination", SETTINGS["MLFLOW_ARTIFACTS_DESTINATION"],
                    "--host", "0.0.0.0", "--port", "5001", "--workers", "2",
                    "--allowed-hosts", "mlflow,mlflow:5000"]


def test_script_defaults_are_local_only(tmp_path: Path):
    """Without MLFLOW_HOST the server listens on loopback only, with MLflow's host defaults."""
    result, args = run_script(tmp_path, **SETTINGS)
    assert result.returncode == 0, result.stderr
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "5000"
    assert "--allowed-hosts" not in args


@pytest.mark.parametrize("missing", sorted(SETTINGS))
def test_script_refuses_to_start_without_stores(tmp_path: Path, missing: str):
    """A missing backend or artifact store stops the script before mlflow runs, naming it."""
    result, args = run_script(tmp_path, **{k: v for k, v in SETTINGS.items() if k != missing})
    assert result.returncode != 0
    assert missing in result.stderr
    assert args == []


def test_script_flags_exist_in_mlflow_server():
    """Every flag the script passes is an option of the installed `mlflow server` (3.17)."""
    mlflow_cli = pytest.importorskip("mlflow.cli")
    options = {opt for param in mlflow_cli.server.params for opt in param.opts}
    code = "\n".join(line for line in MLFLOW_SERVER_SCRIPT.read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", code))
    assert flags >= {"--backend-store-uri", "--serve-artifacts", "--artifacts-destination",
                     "--allowed-hosts"}
    assert flags <= options, flags - options

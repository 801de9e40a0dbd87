"""The MLflow server's compose file (deploy/mlflow/) against the Compose Specification."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.common import REPO, schema_dir
from tests.servers import MLFLOW_SERVER_SCRIPT

MLFLOW_DIR = REPO / "deploy" / "mlflow"
COMPOSE = yaml.safe_load((MLFLOW_DIR / "compose.yaml").read_text())


def validator() -> jsonschema.Draft7Validator:
    # The schema is draft-07, but its "$schema" lacks the trailing "#" that jsonschema's
    # validator_for recognises (it would fall back to the newest draft, with a warning).
    schema = json.loads((schema_dir("compose-spec") / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def validate(compose: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(validator().iter_errors(compose))
    if error is not None:
        raise error


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def interpolated(compose: dict[str, Any]) -> set[str]:
    """Names compose substitutes from the environment or .env: ${VAR}, ${VAR:-x}, $VAR.

    `$$` is a literal dollar (the container's shell expands what follows), and comments are
    not interpolated, so only the parsed YAML's strings count.
    """
    names: set[str] = set()
    for text in strings(compose):
        text = text.replace("$$", "")
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
        names |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (MLFLOW_DIR / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def missing_from_env_example(compose: dict[str, Any]) -> set[str]:
    return interpolated(compose) - set(env_example())


def test_compose_file_is_valid():
    """compose.yaml validates against the Compose Specification's JSON schema."""
    validate(COMPOSE)


def _misspell_healthcheck_key(compose: dict[str, Any]) -> None:
    check = compose["services"]["mlflow"]["healthcheck"]
    check["intervall"] = check.pop("interval")


def _interval_as_number(compose: dict[str, Any]) -> None:
    compose["services"]["postgres"]["healthcheck"]["interval"] = 5


def _misspell_service_key(compose: dict[str, Any]) -> None:
    service = compose["services"]["mlflow"]
    service["enviroment"] = service.pop("environment")


def _unknown_condition(compose: dict[str, Any]) -> None:
    compose["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "healthy"


@pytest.mark.parametrize("mutate, message", [
    (_misspell_healthcheck_key, r"'intervall' does not match any of the regexes"),
    (_interval_as_number, r"5 is not of type 'string'"),
    (_misspell_service_key, r"'enviroment' does not match any of the regexes"),
    (_unknown_condition, r"'healthy' is not one of \['service_started', 'service_healthy'"),
], ids=["healthcheck-intervall", "interval-number", "service-enviroment", "condition-healthy"])
def test_mistake_is_caught(mutate: Callable[[dict[str, Any]], None], message: str):
    """A misspelt key or a wrong type in compose.yaml is reported, naming it."""
    compose = copy.deepcopy(COMPOSE)
    mutate(compose)
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate(compose)


def test_mlflow_service_runs_the_shared_start_script():
    """The mlflow service runs the very script tests/servers.py runs, mounted read-only."""
    service = COMPOSE["services"]["mlflow"]
    (mount,) = [v for v in service["volumes"] if v.split(":")[0].endswith("mlflow-server.sh")]
    source, target, mode = mount.split(":")
    assert (MLFLOW_DIR / source).resolve() == MLFLOW_SERVER_SCRIPT.resolve()
    assert mode == "ro"
    assert service["entrypoint"] == ["sh", target]
    assert "command" not in service


def test_mlflow_service_uses_postgres_and_the_bucket():
    """PostgreSQL backend, artifacts proxied to the bucket, started only once both are ready."""
    services = COMPOSE["services"]
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/${POSTGRES_DB}")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://${MLFLOW_BUCKET}/mlartifacts"
    assert env["MLFLOW_HOST"] == "0.0.0.0" and env["MLFLOW_ALLOWED_HOSTS"]
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "createbucket": {"condition": "service_completed_successfully"}}
    assert services["createbucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb --ignore-existing" in " ".join(services["createbucket"]["command"])
    for name in ("postgres", "minio", "mlflow"):
        assert services[name]["healthcheck"]["test"], name


def test_credentials_come_from_an_uncommitted_env_file():
    """.env is git-ignored, the services read it, and .env.example lists every ${VAR} with
    placeholder passwords."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and the repository's .git to ask what it ignores")
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/mlflow/.env"], cwd=REPO)
    assert ignored.returncode == 0, "deploy/mlflow/.env is not git-ignored"
    example = subprocess.run(["git", "check-ignore", "-q", "deploy/mlflow/.env.example"],
                             cwd=REPO)
    assert example.returncode == 1, "deploy/mlflow/.env.example must stay committable"
    for name in ("postgres", "minio", "createbucket"):
        assert COMPOSE["services"][name]["env_file"] == ".env", name
    assert missing_from_env_example(COMPOSE) == set()
    assert interpolated(COMPOSE) >= {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"}
    for name, value in env_example().items():
        if "PASSWORD" in name:
            assert value.startswith("change-me"), f"{name}: commit placeholders only"


def test_unlisted_variable_is_reported():
    """A ${VAR} added to compose.yaml without a line in .env.example is reported by name."""
    compose = copy.deepcopy(COMPOSE)
    compose["services"]["mlflow"]["environment"]["MLFLOW_WORKERS"] = "${MLFLOW_WORKERS:-4}"
    assert missing_from_env_example(compose) == {"MLFLOW_WORKERS"}


def test_escaped_dollars_are_not_interpolated():
    """$$VAR is the container's own variable, not compose's: it needs no .env line."""
    assert interpolated({"a": "pg_isready -U $${POSTGRES_USER} $$HOME"}) == set()
    assert interpolated({"a": "x ${A:-1} $B"}) == {"A", "B"}


def test_mlflow_image_is_built_here():
    """The mlflow service builds deploy/mlflow/Dockerfile (its pins: test_dockerfile.py)."""
    service = COMPOSE["services"]["mlflow"]
    assert (MLFLOW_DIR / service["build"] / "Dockerfile").is_file()
    assert Path(service["image"]).name.endswith(":3.17.2")

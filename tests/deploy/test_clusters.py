"""The Ray cluster launcher files (clusters/*.yaml), checked offline the way `ray up` checks them.

`ray up` (ray/autoscaler/_private/commands.py: create_or_update_cluster, then
_bootstrap_config) reads the file with yaml.safe_load and runs `prepare_config` (the
provider's defaults.yaml merged in, the on-premise preparation for provider `local`, setup
commands merged, the Docker settings checked, per-type worker bounds filled in), then the
provider's `fillout_available_node_types_resources`, then `validate_config` (Ray's bundled
ray-schema.json and its cross-field checks), then the provider's `bootstrap_config`. The
two provider steps are cloud calls (AWS's resource autofill asks EC2 DescribeInstanceTypes;
bootstrap creates IAM roles, key pairs, security groups, firewall rules), so these tests run
`prepare_config` and `validate_config` only. The node types declare their resources
themselves, which is what AWS's autofill would add and what validation demands of GCP.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement

from tests.deploy.common import REPO, documented_image, pyproject

pytest.importorskip("ray.autoscaler._private.util")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

CLUSTER_FILES = sorted((REPO / "clusters").glob("*.yaml"))
CONFIGS = {path.name: yaml.safe_load(path.read_text()) for path in CLUSTER_FILES}
ALL = sorted(CONFIGS)
# Provider `local` has no node types (Ray refuses them there); the clouds have.
CLOUD = sorted(name for name, c in CONFIGS.items() if c["provider"]["type"] != "local")
ONPREM = sorted(name for name, c in CONFIGS.items() if c["provider"]["type"] == "local")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network connection fails the test: the checks must need no cloud and no network."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def ray_up_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before its first cloud call; returns the prepared one."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def config(name: str) -> dict[str, Any]:
    return copy.deepcopy(CONFIGS[name])


def worker_types(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfg["available_node_types"].items() if k != cfg["head_node_type"]}


def pinned_version(name: str) -> str:
    for dep in pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == name:
            (spec,) = req.specifier
            assert spec.operator == "==", f"{dep} is not an exact pin"
            return spec.version
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def test_the_three_deployments_exist():
    """clusters/ holds the AWS, GCP and on-premise files the docs name."""
    assert {"aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"} <= set(CONFIGS)
    assert CLOUD and ONPREM


@pytest.mark.parametrize("name", ALL)
def test_cluster_file_passes_ray_up_validation(name: str):
    """Ray's own prepare_config + validate_config accept the file, with sane worker bounds."""
    prepared = ray_up_checks(config(name))
    for node_type in worker_types(prepared).values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"]


@pytest.mark.parametrize("name", ALL)
def test_misspelt_key_is_caught(name: str):
    """`max_worker` for `max_workers` stops `ray up`, naming the key."""
    cfg = config(name)
    cfg["max_worker"] = cfg.pop("max_workers")
    with pytest.raises(jsonschema.ValidationError, match=r"'max_worker' was unexpected"):
        ray_up_checks(cfg)


@pytest.mark.parametrize("name", ALL)
def test_wrong_type_is_caught(name: str):
    """A string where the schema wants a boolean (docker.pull_before_run) stops `ray up`."""
    cfg = config(name)
    cfg["docker"]["pull_before_run"] = "always"
    with pytest.raises(jsonschema.ValidationError, match=r"'always' is not of type 'boolean'"):
        ray_up_checks(cfg)


def _rename_node_types(cfg: dict[str, Any]) -> None:
    cfg["avaliable_node_types"] = cfg.pop("available_node_types")


def _max_workers_as_word(cfg: dict[str, Any]) -> None:
    cfg["max_workers"] = "two"


def _misspell_worker_bound(cfg: dict[str, Any]) -> None:
    node_type = next(iter(worker_types(cfg).values()))
    node_type["max_worker"] = node_type.pop("max_workers")


def _gpu_count_as_string(cfg: dict[str, Any]) -> None:
    node_type = next(iter(worker_types(cfg).values()))
    node_type["resources"]["GPU"] = "1"


@pytest.mark.parametrize("mutate, message", [
    (_rename_node_types, r"'avaliable_node_types' was unexpected"),
    (_max_workers_as_word, r"'two' is not of type 'integer'"),
    (_misspell_worker_bound, r"'max_worker' was unexpected"),
    (_gpu_count_as_string, r"'1' is not of type 'integer'"),
], ids=["avaliable_node_types", "max_workers-two", "node-max_worker", "GPU-string"])
@pytest.mark.parametrize("name", CLOUD)
def test_node_type_mistakes_are_caught(name: str, mutate: Callable[[dict[str, Any]], None],
                                       message: str):
    """Typos and wrong types in node types and worker bounds stop `ray up` with the key."""
    cfg = config(name)
    mutate(cfg)
    with pytest.raises(jsonschema.ValidationError, match=message):
        ray_up_checks(cfg)


@pytest.mark.parametrize("name", ONPREM)
def test_onprem_worker_bound_of_wrong_type_stops_ray_up(name: str):
    """On-premise, Ray compares max_workers with the IP count before the schema: still stopped."""
    cfg = config(name)
    cfg["max_workers"] = "two"
    with pytest.raises(TypeError, match=r"not supported between instances of 'str' and 'int'"):
        ray_up_checks(cfg)


@pytest.mark.parametrize("name", ALL)
def test_cluster_runs_the_documented_image(name: str):
    """Head and workers run the image docs/cluster.md builds, tagged with the project version."""
    docker = CONFIGS[name]["docker"]
    image = documented_image()
    assert docker["image"] == image
    for key in ("head_image", "worker_image"):
        assert docker.get(key, image) == image, f"docker.{key}"
    assert image.rsplit(":", 1)[1] == pyproject()["project"]["version"]


@pytest.mark.parametrize("name", ALL)
def test_nodes_check_the_image_ray_version(name: str):
    """Each node's start-up check asserts the Ray version pyproject.toml pins."""
    checks = " ".join(CONFIGS[name]["setup_commands"])
    assert f"ray.__version__ == '{pinned_version('ray')}'" in checks


@pytest.mark.parametrize("name", CLOUD)
def test_worker_node_types_have_gpus(name: str):
    """Every worker type offers GPUs (one shard each) and starts at zero; the head has none."""
    cfg = CONFIGS[name]
    workers = worker_types(cfg)
    assert workers
    for type_name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, type_name
        assert node_type["resources"].get("CPU", 0) >= node_type["resources"]["GPU"], type_name
        assert node_type.get("min_workers", 0) == 0, f"{type_name}: idle GPU nodes cost money"
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0


@pytest.mark.parametrize("name", ALL)
def test_shared_storage_is_mounted_on_every_node(name: str):
    """The host mounts /mnt/raybm before Docker starts and every container sees it there."""
    cfg = CONFIGS[name]
    assert "--volume /mnt/raybm:/mnt/raybm" in cfg["docker"]["run_options"]
    mounts = [c for c in cfg["initialization_commands"] if " mount " in c and "/mnt/raybm" in c]
    assert len(mounts) == 1, mounts
    # Idempotent: a second `ray up` must not fail on an existing mount.
    assert mounts[0].startswith("mountpoint -q /mnt/raybm ||")

"""The KubeRay manifests (deploy/kuberay/) against KubeRay v1.7.0's own CRD schemas."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.common import REPO, documented_image, schema_dir

KUBERAY = REPO / "deploy" / "kuberay"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def ray_documents() -> list[tuple[str, int, dict[str, Any]]]:
    return [(path.name, i, doc) for path in MANIFESTS for i, doc in enumerate(documents(path))
            if doc.get("kind") in CRD_FILES]


RAY_DOCS = ray_documents()
RAY_DOC_IDS = [f"{name}#{i}-{doc['kind']}" for name, i, doc in RAY_DOCS]
RAYJOBS = [doc for _, _, doc in RAY_DOCS if doc["kind"] == "RayJob"]


def strict(schema: Any) -> Any:
    """The schema with unknown fields forbidden wherever Kubernetes would prune them.

    A CRD's structural schema does not forbid unknown fields: the API server silently
    drops ("prunes") them, so `rayStartParms:` would be accepted and do nothing. To catch
    such a misspelt field offline, every object schema that lists `properties` and says
    nothing about extra ones gets additionalProperties: false; objects that keep unknown
    fields (x-kubernetes-preserve-unknown-fields) or declare a map (additionalProperties)
    stay as they are. jsonschema ignores the other OpenAPI extras (x-kubernetes-*,
    `format: int32`, `nullable`), and the CEL rules (x-kubernetes-validations), which only
    the API server evaluates, are not checked here.
    """
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k in ("items", "additionalProperties", "not", "allOf", "anyOf",
                                 "oneOf") else v
           for k, v in schema.items()}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if ("additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    """spec.versions[name == v1].schema.openAPIV3Schema of the kind's CRD, as published."""
    text = (schema_dir("kuberay-v1.7.0") / CRD_FILES[kind]).read_text()
    # The same safe loader in C where PyYAML has it: the pure-Python one takes ~20 s here
    # on these 240 kB files.
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@functools.cache
def validator(kind: str) -> jsonschema.Draft7Validator:
    schema = strict(crd_schema(kind))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate(doc: dict[str, Any]) -> None:
    error = jsonschema.exceptions.best_match(validator(doc["kind"]).iter_errors(doc))
    if error is not None:
        raise error


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The RayCluster spec of a RayCluster, or the one a RayJob starts."""
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group, pod spec) of the head and every worker group."""
    spec = cluster_spec(doc)
    yield "head", spec["headGroupSpec"]["template"]["spec"]
    for group in spec.get("workerGroupSpecs", []):
        yield group["groupName"], group["template"]["spec"]


def test_manifests_exist():
    """deploy/kuberay has a RayCluster and the two RayJobs (training, sweep)."""
    kinds = sorted(doc["kind"] for _, _, doc in RAY_DOCS)
    assert kinds == ["RayCluster", "RayJob", "RayJob"]
    entrypoints = " ".join(doc["spec"]["entrypoint"] for doc in RAYJOBS)
    assert "raybm train " in entrypoints and "raybm tune " in entrypoints


@pytest.mark.parametrize("name, index, doc", RAY_DOCS, ids=RAY_DOC_IDS)
def test_manifest_is_valid_for_kuberay_v1_7(name: str, index: int, doc: dict[str, Any]):
    """Each RayCluster / RayJob validates against its CRD, unknown fields refused."""
    assert doc["apiVersion"] == "ray.io/v1"
    validate(doc)


def _misspell_start_params(doc: dict[str, Any]) -> None:
    head = cluster_spec(doc)["headGroupSpec"]
    head["rayStartParms"] = head.pop("rayStartParams")


def _replicas_as_word(doc: dict[str, Any]) -> None:
    cluster_spec(doc)["workerGroupSpecs"][0]["replicas"] = "two"


def _misspell_container_field(doc: dict[str, Any]) -> None:
    _, pod = next(pod_specs(doc))
    container = pod["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")


def _misspell_auth_mode(doc: dict[str, Any]) -> None:
    cluster_spec(doc)["authOptions"]["mode"] = "tokens"


@pytest.mark.parametrize("mutate, message", [
    (_misspell_start_params, r"'rayStartParms' was unexpected"),
    (_replicas_as_word, r"'two' is not of type 'integer'"),
    (_misspell_container_field, r"'volumeMount' was unexpected"),
    (_misspell_auth_mode, r"'tokens' is not one of \['disabled', 'token'\]"),
], ids=["rayStartParms", "replicas-two", "volumeMount", "auth-mode"])
@pytest.mark.parametrize("name, index, doc", RAY_DOCS, ids=RAY_DOC_IDS)
def test_mistake_is_caught(name: str, index: int, doc: dict[str, Any],
                           mutate: Callable[[dict[str, Any]], None], message: str):
    """A misspelt field or a wrong type anywhere in a manifest is reported with its name."""
    doc = copy.deepcopy(doc)
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate(doc)


def test_pruned_field_needs_the_strict_schema():
    """The CRD as published accepts a misspelt field (Kubernetes prunes it): hence strict()."""
    _, _, doc = RAY_DOCS[0]
    doc = copy.deepcopy(doc)
    _misspell_start_params(doc)
    jsonschema.Draft7Validator(crd_schema(doc["kind"])).validate(doc)


@pytest.mark.parametrize("doc", RAYJOBS, ids=[d["metadata"]["name"] for d in RAYJOBS])
def test_rayjob_frees_its_cluster_and_logs_to_mlflow(doc: dict[str, Any]):
    """A RayJob deletes its cluster when done; every pod reads MLFLOW_TRACKING_URI by reference."""
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    for group, pod in pod_specs(doc):
        for container in pod["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            ref = env["MLFLOW_TRACKING_URI"]
            assert "value" not in ref, f"{group}: the URI belongs in a Secret or ConfigMap"
            assert {"secretKeyRef", "configMapKeyRef"} & set(ref["valueFrom"]), group


@pytest.mark.parametrize("name, index, doc", RAY_DOCS, ids=RAY_DOC_IDS)
def test_pods_share_the_image_storage_and_secret(name: str, index: int, doc: dict[str, Any]):
    """Every Ray pod runs the documented image, mounts the PVC at /mnt/raybm, reads the Secret."""
    others = [d for path in MANIFESTS for d in documents(path) if d.get("kind") not in CRD_FILES]
    (pvc,) = [d for d in others if d["kind"] == "PersistentVolumeClaim"]
    (secret,) = [d for d in others if d["kind"] == "Secret"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    spec = cluster_spec(doc)
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    for group, pod in pod_specs(doc):
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            assert container["image"] == documented_image(), group
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/mnt/raybm"]
            claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim == pvc["metadata"]["name"], group
            ref = {e["name"]: e for e in container["env"]}["MLFLOW_TRACKING_URI"]["valueFrom"]
            key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
            assert key_ref["name"] == secret["metadata"]["name"], group
            assert key_ref["key"] in secret["stringData"], group


@pytest.mark.parametrize("name, index, doc", RAY_DOCS, ids=RAY_DOC_IDS)
def test_gpu_groups_autoscale_from_zero(name: str, index: int, doc: dict[str, Any]):
    """There is a GPU worker group, one GPU per pod, with no pod kept while idle."""
    gpu_groups = [g for g in cluster_spec(doc)["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c["resources"]["limits"]
                         for c in g["template"]["spec"]["containers"])]
    assert gpu_groups
    for group in gpu_groups:
        assert group["minReplicas"] == 0 < group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            assert container["resources"]["limits"]["nvidia.com/gpu"] == 1

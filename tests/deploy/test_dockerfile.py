"""The Dockerfiles agree with pyproject.toml: Ray version, Python version and every pin."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.deploy.common import REPO, pyproject

RAYBM_IMAGE = REPO / "deploy" / "Dockerfile"
MLFLOW_IMAGE = REPO / "deploy" / "mlflow" / "Dockerfile"
# The dependencies each image must install itself, with the project's pin: the raybm image
# installs torch (CUDA build) and the exact / capped pins before the project, the MLflow
# server image only what the server runs.
REQUIRED = {RAYBM_IMAGE: {"torch", "ray", "mlflow", "pyarrow"},
            MLFLOW_IMAGE: {"mlflow", "pyarrow"}}
SHELL_OPERATORS = {"&&", "||", ";", "|"}
PIP_OPTIONS_WITH_VALUE = {"-r", "--requirement", "-c", "--constraint", "-e", "--editable",
                          "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
                          "-t", "--target", "--prefix", "--root", "--platform",
                          "--python-version"}


@dataclass
class Dockerfile:
    base: str = ""
    requirements: list[Requirement] = field(default_factory=list)
    local_installs: list[str] = field(default_factory=list)  # paths given to pip install
    copies: list[list[str]] = field(default_factory=list)  # COPY arguments, options dropped


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: continuations joined, comments dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def parse(text: str) -> Dockerfile:
    parsed = Dockerfile()
    for keyword, args in instructions(text):
        if keyword == "FROM":
            # The last stage is the image: FROM [--platform=...] IMAGE [AS name]
            parsed.base = next(w for w in args.split() if not w.startswith("--"))
        elif keyword == "COPY":
            parsed.copies.append([w for w in args.split() if not w.startswith("--")])
        elif keyword == "RUN":
            words = shlex.split(args)
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    _pip_arguments(words[i + 2:], parsed)
    return parsed


def _pip_arguments(words: list[str], parsed: Dockerfile) -> None:
    skip = False
    for word in words:
        if word in SHELL_OPERATORS:
            return
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in PIP_OPTIONS_WITH_VALUE
        elif word.startswith((".", "/")):
            parsed.local_installs.append(word)
        else:
            try:
                parsed.requirements.append(Requirement(word))
            except InvalidRequirement as e:
                raise AssertionError(f"pip install argument {word!r}: {e}") from None


def base_versions(image: str) -> tuple[str | None, str | None]:
    """(Ray version, Python major.minor) that an image tag names, None where it names none."""
    if m := re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(?:-.+)?", image):
        return m[1], f"{m[2]}.{m[3]}"
    if m := re.fullmatch(r"python:(\d+)\.(\d+)(?:[.-].*)?", image):
        return None, f"{m[1]}.{m[2]}"
    return None, None


def problems(text: str, project: dict[str, Any], required: set[str]) -> list[str]:
    """Every way a Dockerfile disagrees with pyproject.toml's [project] table."""
    dockerfile = parse(text)
    deps = {canonicalize_name(r.name): r
            for r in map(Requirement, project["project"]["dependencies"])}
    found: list[str] = []
    ray_version, python = base_versions(dockerfile.base)
    requires_python = SpecifierSet(project["project"]["requires-python"])
    if python is None:
        found.append(f"cannot tell the Python version of base image {dockerfile.base!r}")
    elif python not in requires_python:
        found.append(f"base image {dockerfile.base} has Python {python}, pyproject.toml "
                     f"requires-python is {requires_python}")
    if ray_version is not None and ray_version not in deps["ray"].specifier:
        found.append(f"base image {dockerfile.base} has Ray {ray_version}, pyproject.toml "
                     f"has {deps['ray']}")
    installed = set()
    for req in dockerfile.requirements:
        name = canonicalize_name(req.name)
        installed.add(name)
        if name not in deps:
            continue  # not a project dependency (psycopg2-binary, boto3): nothing to agree with
        want = deps[name].specifier
        exact = [s.version for s in req.specifier if s.operator == "=="]
        agrees = req.specifier == want or (len(req.specifier) == 1 and len(exact) == 1
                                            and exact[0] in want)
        if not agrees:
            found.append(f"installs {req}, pyproject.toml has {deps[name]}")
    for name in sorted(required - installed):
        found.append(f"does not install {name} with its pin ({deps[canonicalize_name(name)]})")
    return found


@pytest.mark.parametrize("path", [RAYBM_IMAGE, MLFLOW_IMAGE],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_agrees_with_pyproject(path):
    """Base image's Ray and Python versions and every pinned install match pyproject.toml."""
    assert problems(path.read_text(), pyproject(), REQUIRED[path]) == []


@pytest.mark.parametrize("old, new, message", [
    ('"mlflow==3.17.2"', '"mlflow==3.17.1"', "installs mlflow==3.17.1, pyproject.toml has "
     "mlflow==3.17.2"),
    ('"pyarrow>=25,<26"', '"pyarrow>=24"', "installs pyarrow>=24, pyproject.toml has "
     "pyarrow<26,>=25"),
    ('"torch==2.13.0"', '"torch==2.3.0"', "installs torch==2.3.0, pyproject.toml has "
     "torch>=2.4"),
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.59.0-py311-gpu",
     "has Ray 2.59.0, pyproject.toml has ray[default,train,tune]==2.60.0"),
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.60.0-py39-gpu",
     "has Python 3.9, pyproject.toml requires-python is >=3.10"),
    ('        "pyarrow>=25,<26" \\\n', "", "does not install pyarrow with its pin"),
], ids=["mlflow-pin", "pyarrow-range", "torch-too-old", "ray-base-tag", "python-base-tag",
        "pyarrow-missing"])
def test_mismatch_is_reported(old: str, new: str, message: str):
    """A Dockerfile whose pin or base tag disagrees with pyproject.toml is reported."""
    text = RAYBM_IMAGE.read_text()
    assert old in text
    found = problems(text.replace(old, new), pyproject(), REQUIRED[RAYBM_IMAGE])
    assert any(message in problem for problem in found), found


def test_raybm_image_installs_cuda_torch_first_then_the_checkout():
    """torch is pinned alone in the first install; the copied checkout is what pip installs."""
    dockerfile = parse(RAYBM_IMAGE.read_text())
    runs = [shlex.split(args) for kw, args in instructions(RAYBM_IMAGE.read_text())
            if kw == "RUN"]
    assert [w for w in runs[0] if not w.startswith("-")] == ["pip", "install", "torch==2.13.0"]
    assert [".", "/home/ray/raybm"] in dockerfile.copies
    assert dockerfile.local_installs == ["/home/ray/raybm"]


def test_build_contexts_keep_secrets_out():
    """The ignore files Docker actually reads exclude .env files and local run outputs."""
    # With `-f deploy/Dockerfile .` BuildKit reads deploy/Dockerfile.dockerignore; a
    # deploy/.dockerignore would be silently ignored, so it must not exist to mislead.
    assert not (REPO / "deploy" / ".dockerignore").exists()
    patterns = set((REPO / "deploy" / "Dockerfile.dockerignore").read_text().split("\n"))
    assert {"**/.env", ".git", "runs", "sweeps", "mlflow.db", "mlartifacts"} <= patterns
    # The MLflow image's context is deploy/mlflow itself, where .env lives: all of it stays out.
    assert "*" in (REPO / "deploy" / "mlflow" / ".dockerignore").read_text().split("\n")

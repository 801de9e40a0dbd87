"""Paths and project facts shared by the deploy-file tests."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO.parent / "shared" / "schemas"


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def documented_image() -> str:
    """The image name docs/cluster.md tells users to build; every deploy file must use it."""
    found = re.findall(r"^IMAGE=(\S+)$", (REPO / "docs" / "cluster.md").read_text(), re.M)
    assert len(found) == 1, f"docs/cluster.md must set IMAGE=... exactly once, found {found}"
    return found[0]


def schema_dir(name: str) -> Path:
    """A folder of ../shared/schemas, or a skip naming it (reference data, not the project's)."""
    path = SCHEMAS / name
    if not path.is_dir():
        pytest.skip(f"schema folder {path} not found (see ../shared/schemas/README.md)")
    return path

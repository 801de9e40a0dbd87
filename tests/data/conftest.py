"""Shared fixtures for the data-layer tests: the real data sets and the InputError check."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from raybm.errors import InputError

# The shared data sets live beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_file():
    """``shared_file("mnist/...")``: the path of a real data file, or skip the test."""

    def get(relative: str) -> Path:
        path = SHARED_DATA / relative
        if not path.is_file():
            pytest.skip(f"real data file not found: {path} (the shared data sets live beside the repo)")
        return path

    return get


@pytest.fixture
def input_error():
    """``with input_error(path, field): ...``: the block must raise InputError whose one-line
    message names the file (or config key) ``path`` and the ``field``."""

    @contextmanager
    def check(path, field: str):
        with pytest.raises(InputError) as caught:
            yield caught
        message = str(caught.value)
        assert str(path) in message, message
        assert field in message, message
        assert "\n" not in message, message

    return check

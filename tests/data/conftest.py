"""Shared fixtures for the data-layer tests: the InputError check (the real data sets:
``shared_file`` in tests/conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from raybm.errors import InputError


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

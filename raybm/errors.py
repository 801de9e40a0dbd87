"""One error type for every bad input a user can give raybm.

The CLI turns a :class:`InputError` into a single line on stderr and a non-zero exit code,
without a traceback; so the message must name *where* the problem is (a file, a config key)
and *what* is wrong, and nothing else.
"""

from __future__ import annotations

from pathlib import Path


class RaybmError(Exception):
    """Base class of the errors raybm reports to users as one line."""

    exit_code: int = 2


class InputError(RaybmError):
    """Bad user input: ``where`` is a file path or a config key, ``field`` what in it is wrong.

    ``str(err)`` is ``"<where>: <field>: <message>"`` (``field`` omitted when empty).
    """

    def __init__(self, where: str | Path, field: str, message: str) -> None:
        self.where = str(where)
        self.field = field
        self.message = message
        parts = [self.where] + ([field] if field else []) + [message]
        super().__init__(": ".join(parts))


class DivergenceError(RaybmError):
    """Training produced NaN / inf; the last good checkpoint is kept."""

    exit_code = 3

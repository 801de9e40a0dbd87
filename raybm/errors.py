"""One error family for everything raybm reports to users as a single line.

The CLI turns a :class:`RaybmError` into one line on stderr and a non-zero exit code, without a
traceback; so the message must name *where* the problem is (a file, a config key) and *what* is
wrong, and nothing else.

These errors cross process boundaries: a Ray Train worker or a Tune trial raises them in another
process, and Ray pickles them back to the driver. ``Exception`` pickles as ``cls(*self.args)``,
which would call ``InputError(message)`` and fail, so each class says how it is rebuilt
(``__reduce__``), and :func:`error_record` / :func:`error_from_record` carry them as JSON where
raybm itself hands an error from a worker to the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RaybmError(Exception):
    """Base class of the errors raybm reports to users as one line."""

    exit_code: int = 2

    def _rebuild_args(self) -> tuple[Any, ...]:
        return tuple(self.args)

    def __reduce__(self):
        return (type(self), self._rebuild_args())


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

    def _rebuild_args(self) -> tuple[Any, ...]:
        return (self.where, self.field, self.message)


class DivergenceError(RaybmError):
    """Training produced NaN / inf; the last good checkpoint is kept."""

    exit_code = 3


class Interrupted(RaybmError):
    """The user stopped the run (Ctrl-C / SIGINT / SIGTERM); checkpoints already written stay."""

    exit_code = 130

    def __init__(self, message: str = "interrupted") -> None:
        super().__init__(message)


_CLASSES = {cls.__name__: cls for cls in (RaybmError, InputError, DivergenceError, Interrupted)}


def error_record(err: RaybmError) -> dict[str, Any]:
    """A JSON-safe record of ``err`` that :func:`error_from_record` turns back into it."""
    return {"type": type(err).__name__, "args": [str(a) for a in err._rebuild_args()]}


def error_from_record(record: dict[str, Any]) -> RaybmError:
    cls = _CLASSES.get(str(record.get("type")), RaybmError)
    try:
        return cls(*record.get("args", []))
    except TypeError:  # a record from another raybm version: keep its words
        return RaybmError(": ".join(str(a) for a in record.get("args", [])))


def find_raybm_error(err: BaseException | None, depth: int = 0) -> RaybmError | None:
    """The raybm error inside an exception Ray wrapped (``WorkerGroupError.worker_failures``,
    ``RayTaskError.cause``, ``__cause__`` chains), or None."""
    if err is None or depth > 8:
        return None
    if isinstance(err, RaybmError):
        return err
    inner: list[BaseException | None] = [getattr(err, "cause", None), err.__cause__,
                                         getattr(err, "controller_failure", None)]
    inner += list(getattr(err, "worker_failures", {}).values())
    for candidate in inner:
        found = find_raybm_error(candidate, depth + 1)
        if found is not None:
            return found
    return None

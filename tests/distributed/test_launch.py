"""The driver side of a distributed fit: how Ray's failures are told in one line."""

from __future__ import annotations

from raybm.distributed.launch import _cause


class ControllerError(Exception):
    """Shaped as Ray Train's: the failure that ended the controller is an attribute."""

    def __init__(self, failure: BaseException):
        super().__init__("Training failed due to controller error")
        self.controller_failure = failure


class StartupTimeout(Exception):
    pass


class WorkerFailed(Exception):
    pass


def test_a_plain_message_is_told_by_its_first_sentence():
    err = ControllerError(StartupTimeout(
        "The worker group startup timed out after 15.0 seconds waiting for 2 workers. "
        "Potential causes include:\n(1) insufficient resources\n(2) a slow image pull"))
    assert _cause(err) == ("StartupTimeout: The worker group startup timed out after 15.0 "
                           "seconds waiting for 2 workers")


def test_a_remote_traceback_is_told_by_its_exception_line():
    err = WorkerFailed("Worker rank 1 failed:\nTraceback (most recent call last):\n"
                       '  File "worker.py", line 3, in step\n    raise RuntimeError\n'
                       "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB")
    assert _cause(err) == "WorkerFailed: RuntimeError: CUDA out of memory"


def test_an_empty_message_names_the_type():
    assert _cause(ControllerError(StartupTimeout())) == "StartupTimeout: "

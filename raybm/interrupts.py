"""SIGTERM ends a run as Ctrl-C does.

A scheduler (``kill``, Slurm, Kubernetes) stops a job with SIGTERM: without a handler Python dies
at once and the MLflow run stays RUNNING for ever. raybm turns SIGTERM into the same
``KeyboardInterrupt`` as Ctrl-C, so the run is marked KILLED, the checkpoints written so far
stay, and the exit code is 130. ``ray.init`` installs its own SIGTERM handler in the driver
(it aborts the process, exit -6), so the handler is set again once Ray has started.
"""

from __future__ import annotations

import signal
import threading


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def sigterm_as_interrupt() -> None:
    """Install the handler (only the main thread may set signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _as_sigint(signum, frame):
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def sigterm_as_sigint() -> None:
    """SIGTERM calls whatever handles SIGINT when it arrives: Ray Tune installs its own while a
    sweep runs (it saves the experiment's state and stops the trials, so ``--resume`` can
    finish them); otherwise it is Python's, a ``KeyboardInterrupt``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _as_sigint)

"""How many torch threads a run's process uses (``train.threads``).

Small per-update work on several OpenMP threads only spin-waits (a 2-core machine shared with
other work made small updates 2-4x slower than one thread: benchmarks/threads.py); large
matmuls split well. ``auto`` decides from sizes alone, never from timings, so the same config
always runs with the same count (and the same rounding).
"""

from __future__ import annotations

import os

import torch

from raybm.config import Config
from raybm.data.dataset import Dataset
from raybm.models.build import energy_work


def available_cores() -> int:
    """The CPUs this process may use: ``OMP_NUM_THREADS`` when set (Ray sets it to what a
    task or actor reserved; a user sets it to share a machine), else the CPUs it may run on."""
    try:
        return max(int(os.environ["OMP_NUM_THREADS"]), 1)
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)


# Multiply-adds per energy evaluation from which a second thread pays for itself
# (benchmarks/threads.py): below, each torch op is too short for its OpenMP threads, which
# spin-wait for one another (with one core busy elsewhere, small updates ran 2-4x slower than
# on one thread); above, matmuls split well over 2 cores (1.6-2x faster on a quiet machine).
AUTO_THREADS_WORK = 1e8


def auto_threads(config: Config, train: Dataset, cores: int) -> int:
    """``train.threads: auto``: one thread for small per-update work, all ``cores`` for large
    (:data:`AUTO_THREADS_WORK`). Decided from sizes alone, never from timings, so the same
    config always runs with the same count (and the same rounding)."""
    return cores if energy_work(config, train) >= AUTO_THREADS_WORK else 1


def apply_threads(config: Config, train: Dataset, cores: int | None = None) -> int:
    """Set torch's intra-op threads as ``train.threads`` says (``cores``: the CPUs this
    process holds, default :func:`available_cores`); the count in force."""
    threads = config.train.threads
    if threads == "auto":
        threads = auto_threads(config, train, cores or available_cores())
    elif threads is None:  # configs written before "auto": torch's default in-process, the
        threads = cores    # reserved CPUs on a Ray worker (as before)
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()

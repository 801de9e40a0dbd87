"""The files of a distributed fit's folder (``<run>/ray/<fit>/``) and its run directory
that the driver (``launch``) and the workers (``worker``) exchange: the one contract between
the two sides, so that neither imports the other's module for it.

    worker-error.json   the first raybm error a rank met (bad input, divergence), raised by
                        the driver as one line
    placement_group     rank 0's placement group id, removed when its trial is stopped
    rank0-times.json    where rank 0's time went (entered, ready, first update, done)
    <run>/nodes.json    rank -> node of the last fit's worker group
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from raybm.checkpoint import atomic_write_text
from raybm.errors import error_from_record

WORKER_ERROR = "worker-error.json"
PLACEMENT_GROUP = "placement_group"
TIMES = "rank0-times.json"
NODES_FILE = "nodes.json"


def write_worker_error(fit_dir: Path, record: dict[str, Any]) -> None:
    """Rank ``r``'s raybm error, for the driver to raise (the first one written wins)."""

    fit_dir.mkdir(parents=True, exist_ok=True)
    path = fit_dir / WORKER_ERROR
    if not path.exists():
        atomic_write_text(path, json.dumps(record))


def raise_worker_error(fit_dir: Path) -> None:
    """Raise the raybm error a worker recorded (a bad input, a divergence), if any: it ended
    every rank at once, so Ray did not retry what would fail again."""

    path = fit_dir / WORKER_ERROR
    if path.exists():
        raise error_from_record(json.loads(path.read_text()))

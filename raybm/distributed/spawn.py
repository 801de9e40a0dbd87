"""Local gloo ranks without Ray: ``run_ranks(W, fn, ...)`` runs ``fn(rank, W, ...)`` in W
processes joined in one ``torch.distributed`` group and returns what each returned.

It is the same process group Ray Train sets up on its workers, minus Ray's 15-20 s start, which
is what tests of the collectives and ``benchmarks/distributed_overhead.py`` need. ``fn`` must be
importable (a module-level function) and return something ``torch.save`` can write.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, threads: int, fn: Callable, args: tuple,
           out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result = fn(rank, world, *args)
    torch.save(result, Path(out_dir) / f"{rank}.pt")
    # No rank may start tearing the group down while a peer is still inside a collective:
    # closing a gloo pair under a peer's last receive is one way to abort that peer.
    dist.barrier()
    (Path(out_dir) / f"{rank}.done").touch()
    dist.destroy_process_group()
    (Path(out_dir) / f"{rank}.destroyed").touch()
    # CI has seen a finished rank abort (std::terminate) after writing its result, either in
    # destroy_process_group or in the interpreter's finalisation, where native thread pools
    # (gloo's, Arrow's) are torn down: leave without the latter, everything is on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(world: int, fn: Callable, *args: Any, threads: int = 1) -> list[Any]:
    """``[fn(rank, world, *args) for rank in range(world)]``, each on its own gloo rank.

    A rank that raises fails the call with its traceback. A rank killed by a signal fails it
    too, unless every rank had already returned its result and passed the closing barrier: then
    the only thing left was the group's teardown (seen in CI as a C++ ``std::terminate`` after
    the results were written), which is not the code under test, so it is a warning that says
    whether ``destroy_process_group`` had returned.
    """
    with tempfile.TemporaryDirectory() as out:
        try:
            mp.spawn(_entry, args=(world, free_port(), threads, fn, args, out), nprocs=world,
                     join=True)
        except mp.ProcessExitedException as died:
            finished = all((Path(out) / f"{r}.done").exists() for r in range(world))
            if not finished or died.signal_name is None:
                raise
            where = ("after destroy_process_group" if (Path(out) / f"{died.error_index}.destroyed")
                     .exists() else "in destroy_process_group")
            warnings.warn(f"rank {died.error_index} died of {died.signal_name} {where} (gloo "
                          "teardown), after every rank had finished; results kept",
                          RuntimeWarning, stacklevel=2)
        # Our own files from our own ranks: plain containers of tensors and numbers.
        return [torch.load(Path(out) / f"{r}.pt", weights_only=False) for r in range(world)]

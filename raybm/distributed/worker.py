"""One Ray Train worker: a shard of the walkers, the same ``Trainer`` as in-process.

``train_worker`` is the ``train_loop_per_worker`` of the ``TorchTrainer``. Each worker loads
the data (every rank takes its slice of each global minibatch), builds its ``Trainer`` with a
:class:`~raybm.distributed.comm.TorchComm` population, and after a failure restores from the
newest complete checkpoint persisted under ``<run>/ray`` (not Ray's registered one, which can
lag; see :func:`restore_candidates`), or from the run's checkpoint on ``--resume``. Every
``checkpoint_every`` updates each rank writes its shard file, rank 0 also the parameters,
optimizer and estimator state, into its own directory, and all ranks report at the same step so
that Ray Train merges the directories into one checkpoint. Rank 0 logs to MLflow (into the run
the driver opened) and, on divergence, writes ``diverged.txt`` for the driver: every rank sees
the same non-finite values (the parameters are identical), so all stop together and Ray does
not retry a deterministic failure.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from raybm.checkpoint import (checkpoint_step, find_checkpoint, ray_checkpoints, write_common,
                              write_shard)
from raybm.config import Config
from raybm.errors import DivergenceError, InputError
from raybm.train import Trainer, load_data, make_trainer, run_updates

DIVERGED = "diverged.txt"


def report_checkpoint(trainer: Trainer, meta: dict[str, Any],
                      mid_checkpoint: Callable[[int], None] | None = None) -> None:
    """Write this rank's part of the checkpoint at ``trainer.step`` and report it to Ray.

    Ray registers a checkpoint only once every rank has reported it, so a rank that dies
    before ``report`` (``mid_checkpoint`` is the test hook for that) leaves the previous one.
    """
    import ray.train

    pop = trainer.population
    with tempfile.TemporaryDirectory(prefix="raybm-ckpt-") as tmp:
        write_shard(Path(tmp), pop.rank, pop.world_size, trainer.walkers, trainer.gen.get_state())
        if mid_checkpoint is not None:
            mid_checkpoint(trainer.step)
        if pop.rank == 0:
            write_common(Path(tmp), step=trainer.step, model=trainer.model,
                         state=trainer.state(), meta={"config": trainer.config.model_dump(), **meta},
                         world_size=pop.world_size)
        ray.train.report({"step": trainer.step},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))


FAULT_MODES = ("kill", "nan", "checkpoint")
_FAULT_WORDS = {"kill": "killed", "nan": "poisoned with NaN", "checkpoint": "killed mid-checkpoint"}


def parse_fault(spec: str | None) -> tuple[int, int, str, str] | None:
    """``RAYBM_FAULT_INJECT=rank:step:marker[:mode]`` as (rank, step, marker, mode), or a
    one-line error naming the variable (it is read by the driver before any worker starts)."""
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[2]:
        raise InputError("RAYBM_FAULT_INJECT", "",
                         f"expected rank:step:marker[:mode], got {spec!r}")
    try:
        rank, step = int(parts[0]), int(parts[1])
    except ValueError:
        raise InputError("RAYBM_FAULT_INJECT", "rank:step",
                         f"expected two integers, got {parts[0]!r}:{parts[1]!r}") from None
    mode = parts[3] if len(parts) == 4 else "kill"
    if mode not in FAULT_MODES:
        raise InputError("RAYBM_FAULT_INJECT", "mode", f"{mode!r} is not one of {FAULT_MODES}")
    return rank, step, parts[2], mode


def fault_hook(spec: str | None, rank: int, trainer: Trainer) -> dict[str, Any]:
    """Test hook, ``RAYBM_FAULT_INJECT=rank:step:marker[:mode]``: at that update, once (the
    marker file records that it happened), that rank's process dies as a killed worker would
    (``kill``), its parameters turn NaN as a numerical blow-up on one shard would (``nan``), or
    it dies halfway through writing its part of that update's checkpoint (``checkpoint``).

    Returns the keyword arguments for ``run_updates`` and ``report_checkpoint``.
    """
    fault = parse_fault(spec)
    if fault is None or fault[0] != rank:
        return {}
    _, at_step, marker, mode = fault

    def fire(step: int, when: str) -> bool:
        if step != at_step or when != mode or os.path.exists(marker):
            return False
        Path(marker).write_text(f"rank {rank} {_FAULT_WORDS[mode]} at update {step}\n")
        return True

    def on_update(step: int) -> None:
        if fire(step, "nan"):
            with torch.no_grad():
                trainer.model.weight.fill_(float("nan"))
        elif fire(step, "kill"):
            os._exit(1)

    def mid_checkpoint(step: int) -> None:
        if fire(step, "checkpoint"):
            os._exit(1)

    return {"on_update": on_update, "mid_checkpoint": mid_checkpoint}


def say(line: str) -> None:
    """One line on the worker's stderr, which Ray forwards to the driver's terminal once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def restore_candidates(run_dir: Path, floor: Path | None) -> list[Path]:
    """Checkpoints a (re)started worker group may continue from, newest first.

    Ray Train V2's controller registers a checkpoint only when it next polls the workers'
    reports, so a worker that dies within one poll of a report takes that report with it:
    ``ray.train.get_checkpoint()`` then hands the new group an older checkpoint, or None, and
    the run would silently start over (seen here with a kill 5 updates after a checkpoint).
    Each rank's files are in ``<run>/ray`` once its ``report`` returns, so the newest
    *complete* one there (every shard present, see ``is_complete``) is the restart point;
    ``floor`` (the ``--resume`` checkpoint), if any, is always a candidate.
    """
    found = ray_checkpoints(run_dir) + ([floor] if floor is not None else [])
    return sorted(set(found), key=lambda p: (checkpoint_step(p), str(p)), reverse=True)


def restore_trainer(config: Config, train_set: Any, population: Any, run_dir: Path,
                    resume: str | None) -> Trainer:
    """The trainer from the newest checkpoint that loads; fresh when there is none.

    Every rank reads every shard file of a candidate (``load_checkpoint``), so all ranks agree
    on which one they skip (say, a file truncated by a kill during Ray's upload).
    """
    floor = find_checkpoint(resume) if resume else None
    for where in restore_candidates(run_dir, floor):
        try:
            return make_trainer(config, train_set, where, population)
        except Exception as err:  # pyarrow, torch and our own InputError all name the file
            if where == floor:  # the checkpoint the user asked for: its error, not a fallback
                raise
            if population.rank == 0:
                say(f"raybm: skipping checkpoint {where}: {type(err).__name__}: {err}")
    return make_trainer(config, train_set, None, population)


def train_worker(cfg: dict[str, Any]) -> None:
    """Ray Train's loop per worker (``cfg``: the config, the run, the resume point)."""
    import ray.train

    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.evaluate import live_metrics

    # Ray Train logs every report at INFO from each worker, some through loggers named after
    # their source file (so only the root level reaches them): keep the terminal for raybm.
    for name in ("ray.train", "ray", None):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = Config.model_validate(cfg["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config.train.threads or cfg.get("cpus_per_worker", 1))
    device = "cpu"
    if config.distributed.use_gpu and torch.cuda.is_available():
        device = f"cuda:{ctx.get_local_rank()}"
    population = TorchComm(device) if world > 1 else LOCAL
    train_set, test_set = load_data(config)

    trainer = restore_trainer(config, train_set, population, Path(cfg["run_dir"]),
                              cfg.get("resume"))
    tracker = None
    if rank == 0 and cfg.get("run_id"):
        from raybm.tracking import Tracker

        tracker = Tracker(cfg["tracking_uri"], config.tracking.experiment, run_id=cfg["run_id"])
    meta = {"mlflow_run_id": cfg.get("run_id"), "tracking_uri": cfg.get("tracking_uri", "")}

    def on_log(step: int, info: dict[str, float]) -> None:
        if rank != 0:
            return
        info = live_metrics(trainer.model, test_set, info)
        if tracker is not None:
            tracker.log_metrics(info, step)
        if config.train.progress:  # one line per log: Ray forwards worker stdout
            shown = {k: v for k, v in info.items()
                     if k.startswith(("loss", "test_acc", "ess", "test_loglik", "updates"))}
            # Not print(): Ray Train patches it to log *and* echo, so every line came twice.
            say(f"update {step}/{config.train.n_updates} "
                + " ".join(f"{k}={v:.4g}" for k, v in shown.items()))

    hooks = fault_hook(cfg.get("fault"), rank, trainer)
    mid_checkpoint = hooks.get("mid_checkpoint")
    try:
        run_updates(trainer, config.train.n_updates, on_log=on_log,
                    on_checkpoint=lambda step: report_checkpoint(trainer, meta, mid_checkpoint),
                    on_update=hooks.get("on_update"))
    except DivergenceError as err:
        if rank == 0:
            Path(cfg["run_dir"], DIVERGED).write_text(str(err) + "\n")
        return
    if trainer.step % config.train.checkpoint_every != 0 or trainer.step == 0:
        report_checkpoint(trainer, meta, mid_checkpoint)  # the final state, always a checkpoint

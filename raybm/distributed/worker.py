"""One Ray Train worker: a shard of the walkers, the same ``Trainer`` as in-process.

``train_worker`` is the ``train_loop_per_worker`` of the ``TorchTrainer``. Each worker loads
the data (every rank takes its slice of each global minibatch) and builds its ``Trainer`` with
a :class:`~raybm.distributed.comm.TorchComm` population: from the checkpoint it was handed
(``--resume``, or the one Tune gave a trial), or, after a worker failure, from the newest
complete checkpoint this fit persisted (see :func:`restore_candidates`). Every
``checkpoint_every`` updates each rank writes its shard file, rank 0 also the parameters,
optimizer and estimator state, into its own directory, and all ranks report at the same step
so that Ray Train merges the directories into one checkpoint. Rank 0 logs to MLflow (into the
run the driver opened).

A raybm error (bad input, divergence) is not a worker failure: Ray would retry what fails
again. The ranks agree after set-up whether any failed, and every rank sees the same
non-finite values while training (their parameters are identical), so all stop together; the
first error is written to ``<fit>/worker-error.json`` and the driver raises it as one line.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from raybm.checkpoint import (atomic_write_text, checkpoint_step, complete_checkpoints,
                              find_checkpoint, write_common, write_shard)
from raybm.config import Config, parse_config
from raybm.distributed.cluster import SHARED_STORAGE_HINT, record_node, this_node
from raybm.distributed.fitdir import PLACEMENT_GROUP, TIMES, write_worker_error
from raybm.errors import InputError, RaybmError, error_record
from raybm.data.load import load_data
from raybm.train import Trainer, make_trainer, record_restore, run_updates

def write_checkpoint(trainer: Trainer, meta: dict[str, Any],
                     mid_checkpoint: Callable[[int], None] | None = None) -> Path:
    """This rank's part of the checkpoint at ``trainer.step``, in a fresh temporary directory
    (rank 0 adds the parameters and state); :func:`report` hands it to Ray and removes it."""
    pop = trainer.population
    tmp = Path(tempfile.mkdtemp(prefix="raybm-ckpt-"))
    write_shard(tmp, pop.rank, pop.world_size, trainer.walkers, trainer.gen.get_state())
    if mid_checkpoint is not None:
        mid_checkpoint(trainer.step)
    if pop.rank == 0:
        write_common(tmp, step=trainer.step, model=trainer.model, state=trainer.state(),
                     meta={"config": trainer.config.model_dump(), **meta},
                     world_size=pop.world_size)
    return tmp


def report(step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
    """``ray.train.report`` from every rank at the same step (Ray registers a checkpoint only
    once every rank has reported it, so a rank that dies before this leaves the previous one)."""
    import ray.train

    try:
        ray.train.report({"step": step, **metrics}, checkpoint=(
            None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint)))
    finally:
        if checkpoint is not None:
            shutil.rmtree(checkpoint, ignore_errors=True)


FAULT_MODES = ("kill", "nan", "checkpoint", "hold")
_FAULT_WORDS = {"kill": "killed", "nan": "poisoned with NaN", "checkpoint": "killed mid-checkpoint",
                "hold": "held"}
HOLD_S = 300.0  # a held rank waits this long for its node to be taken away, then goes on


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
    (``kill``), its parameters turn NaN as a numerical blow-up on one shard would (``nan``), it
    dies halfway through writing its part of that update's checkpoint (``checkpoint``), or it
    stops there (``hold``; the marker names its node) so that a test can remove that node
    while the run is known to be mid-way.

    Returns the keyword arguments for ``run_updates`` and ``write_checkpoint``.
    """
    fault = parse_fault(spec)
    if fault is None or fault[0] != rank:
        return {}
    _, at_step, marker, mode = fault

    def fire(step: int, when: str) -> bool:
        if step != at_step or when != mode or os.path.exists(marker):
            return False
        where = f" on node {this_node()['node_id']}" if mode == "hold" else ""
        atomic_write_text(Path(marker), f"rank {rank} {_FAULT_WORDS[mode]} at update {step}"
                                        f"{where}\n")
        return True

    def on_update(step: int) -> None:
        if fire(step, "nan"):
            with torch.no_grad():
                trainer.model.weight.fill_(float("nan"))
        elif fire(step, "kill"):
            os._exit(1)
        elif fire(step, "hold"):
            time.sleep(HOLD_S)

    def mid_checkpoint(step: int) -> None:
        if fire(step, "checkpoint"):
            os._exit(1)

    return {"on_update": on_update, "mid_checkpoint": mid_checkpoint}


def say(line: str) -> None:
    """One line on the worker's stderr, which Ray forwards to the driver's terminal once."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def restore_candidates(fit_dir: Path, floor: Path | None,
                       registered: Path | None = None) -> list[Path]:
    """Checkpoints a (re)started worker group may continue from, newest first.

    Only this fit's own checkpoints count: a fresh fit starts from ``floor`` (the checkpoint it
    was handed: ``--resume``, or the one Tune gave an exploited trial, which must win over the
    trial's own older checkpoints). After a worker failure, Ray Train V2 hands the new group
    ``ray.train.get_checkpoint()`` (``registered``), but its controller registers a checkpoint
    only when it next polls the workers, so a worker that dies within one poll of a report
    takes that report with it (seen here: a kill 5 updates after a checkpoint restarted the run
    from update 0). Each rank's files are in the fit's folder once its ``report`` returns, so
    the newest *complete* one there (every shard present, see ``is_complete``) is the restart
    point, with the registered one and ``floor`` behind it.
    """
    found = complete_checkpoints(fit_dir) + [p for p in (registered, floor)
                                             if p is not None]
    return sorted(set(found), key=lambda p: (checkpoint_step(p), str(p)), reverse=True)


def restore_trainer(config: Config, train_set: Any, population: Any, fit_dir: Path,
                    resume: str | None, registered: Path | None = None, cores: int = 1
                    ) -> tuple[Trainer, Path | None]:
    """The trainer from the newest checkpoint that loads (and that checkpoint); fresh when
    there is none.

    Every rank reads every shard file of a candidate (``load_checkpoint``), so all ranks agree
    on which one they skip (say, a file truncated by a kill during Ray's upload).
    """
    floor = find_checkpoint(resume) if resume else None
    for where in restore_candidates(fit_dir, floor, registered):
        try:
            return make_trainer(config, train_set, where, population, cores), where
        except Exception as err:  # pyarrow, torch and our own InputError all name the file
            if where == floor:  # the checkpoint the user asked for: its error, not a fallback
                raise
            if population.rank == 0:
                say(f"raybm: skipping checkpoint {where}: {type(err).__name__}: {err}")
    return make_trainer(config, train_set, None, population, cores), None


def registered_checkpoint() -> Path | None:
    """The checkpoint Ray Train registered for this fit (after a worker-group restart)."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    return None if ckpt is None else Path(ckpt.path)


def record_placement_group(fit_dir: Path) -> None:
    """Write this worker group's placement group id into the fit's folder, so that it can be
    removed when the trial that started it is stopped (``launch.release_placement_groups``)."""
    from ray.util import get_current_placement_group

    pg = get_current_placement_group()
    if pg is not None:
        fit_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(fit_dir / PLACEMENT_GROUP, pg.id.hex())


def see_run_directory(run_dir: Path) -> None:
    """Every worker writes its shard into the run directory: on a node that does not mount
    the driver's storage it is missing (one line, not a traceback at the first checkpoint)."""
    if not run_dir.is_dir():
        import ray

        raise InputError(run_dir, "", f"run directory not visible on node "
                         f"{ray.util.get_node_ip_address()}: {SHARED_STORAGE_HINT}")


def agree_on_failure(population: Any, failed: bool) -> bool:
    """True when any rank failed (one tiny all-reduce: the others must not wait for it in
    their first collective)."""
    if population.world_size == 1:
        return failed
    flag = torch.tensor([1.0 if failed else 0.0], dtype=torch.float64)
    return bool(population.all_reduce_(flag)[0] > 0)


def train_worker(cfg: dict[str, Any]) -> None:
    """Ray Train's loop per worker (``cfg``: the config, the run, the resume point)."""
    import ray.train

    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.evaluate import live_metrics

    entered = time.time()
    # Ray Train logs every report at INFO from each worker, some through loggers named after
    # their source file (so only the root level reaches them): keep the terminal for raybm.
    for name in ("ray.train", "ray", None):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = parse_config(cfg["config"], "config")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cores = max(int(cfg.get("cpus_per_worker", 1)), 1)  # what this worker reserved
    device = "cpu"
    if config.distributed.use_gpu and torch.cuda.is_available():
        device = f"cuda:{ctx.get_local_rank()}"
    population = TorchComm(device) if world > 1 else LOCAL
    fit_dir = Path(cfg["fit_dir"])
    error: RaybmError | None = None
    try:
        see_run_directory(Path(cfg["run_dir"]))
        record_node(fit_dir, rank)
        train_set, test_set = load_data(config)
        trainer, source = restore_trainer(config, train_set, population, fit_dir,
                                          cfg.get("resume"), registered_checkpoint(), cores)
        if source is not None:
            record_restore(Path(cfg["run_dir"]), trainer, source)
    except RaybmError as err:
        error = err
    if agree_on_failure(population, error is not None):
        if error is not None:
            write_worker_error(fit_dir, error_record(error))
        return
    ready = time.time()
    if rank == 0:
        record_placement_group(fit_dir)
        used, said = trainer.estimator.kernel.precision, cfg["meta"].get("precision_used")
        if said is not None and used != said:  # a worker lacks bf16 or exact int8 sums
            print(f"sampler.precision: the workers run {used} (the driver's machine would "
                  f"run {said}): not every worker multiplies bf16 natively or sums int8 "
                  "products exactly", file=sys.stderr, flush=True)
    tracker = None
    meta = cfg["meta"]
    # With reports to a Tune trial, the trial process logs them to MLflow as it hands them to
    # Tune: these workers run on while Tune decides, and a trial that Tune pauses there (a
    # PBT exploit) must not leave the updates of its abandoned continuation in its history.
    if rank == 0 and meta.get("mlflow_run_id") and not cfg.get("report_every_log"):
        from raybm.tracking import Tracker

        tracker = Tracker(meta["tracking_uri"], config.tracking.experiment,
                          run_id=meta["mlflow_run_id"])
        if source is not None:  # MLflow's history shows where each (re)start continued from
            tracker.log_metrics({"resumed_from_step": float(trainer.step)}, trainer.step)
    extra = dict(cfg.get("extra_metrics") or {})
    logged: dict[str, float] = {}

    def on_log(step: int, info: dict[str, float]) -> dict[str, float] | None:
        if rank != 0:
            return None
        info = live_metrics(trainer.model, test_set, info) | extra
        logged.update(info)
        if tracker is not None:
            tracker.log_metrics(info, step)
        return info

    def on_report(step: int, checkpoint: Path | None) -> None:
        if checkpoint is not None or cfg.get("report_every_log"):
            report(step, dict(logged), checkpoint)
        logged.clear()

    hooks = fault_hook(cfg.get("fault"), rank, trainer)
    mid_checkpoint = hooks.get("mid_checkpoint")
    first_update: list[float] = []
    fault_on_update = hooks.get("on_update")

    def on_update(step: int) -> None:
        if not first_update:  # start-up ends here (benchmarks/cluster_startup.py)
            first_update.append(time.time())
        if fault_on_update is not None:
            fault_on_update(step)

    try:
        run_updates(trainer, config.train.n_updates, on_log=on_log,
                    on_checkpoint=lambda step: write_checkpoint(trainer, meta, mid_checkpoint),
                    on_report=on_report, on_update=on_update,
                    # Rank 0's lines (Ray forwards a worker's stderr, never a terminal: one
                    # line per log, raybm.console).
                    progress=config.train.progress and rank == 0)
    except RaybmError as err:  # every rank diverges at the same update
        if rank == 0:
            write_worker_error(fit_dir, error_record(err))
        return
    if trainer.step % config.train.checkpoint_every != 0 or trainer.step == 0:
        # The final state, always a checkpoint.
        report(trainer.step, dict(logged), write_checkpoint(trainer, meta, mid_checkpoint))
    if rank == 0:  # where this fit's time went (launch.fit adds it to <run>/timings.json)
        atomic_write_text(fit_dir / TIMES, json.dumps({
            "entered": entered, "ready": ready, "done": time.time(),
            "first_update": first_update[0] if first_update else None}))

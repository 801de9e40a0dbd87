"""One Ray Train worker: a shard of the walkers, the same ``Trainer`` as in-process.

``train_worker`` is the ``train_loop_per_worker`` of the ``TorchTrainer``. Each worker loads
the data (every rank takes its slice of each global minibatch), builds its ``Trainer`` with a
:class:`~raybm.distributed.comm.TorchComm` population, and restores from Ray's latest
checkpoint after a failure (or from the run's checkpoint on ``--resume``). Every
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
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from raybm.checkpoint import write_common, write_shard
from raybm.config import Config
from raybm.errors import DivergenceError
from raybm.train import Trainer, load_data, make_trainer, run_updates

DIVERGED = "diverged.txt"


def report_checkpoint(trainer: Trainer, meta: dict[str, Any]) -> None:
    """Write this rank's part of the checkpoint at ``trainer.step`` and report it to Ray."""
    import ray.train

    pop = trainer.population
    with tempfile.TemporaryDirectory(prefix="raybm-ckpt-") as tmp:
        write_shard(Path(tmp), pop.rank, pop.world_size, trainer.walkers, trainer.gen.get_state())
        if pop.rank == 0:
            write_common(Path(tmp), step=trainer.step, model=trainer.model,
                         state=trainer.state(), meta={"config": trainer.config.model_dump(), **meta},
                         world_size=pop.world_size)
        ray.train.report({"step": trainer.step},
                         checkpoint=ray.train.Checkpoint.from_directory(tmp))


def fault_hook(spec: str | None, rank: int, trainer: Trainer):
    """Test hook, ``RAYBM_FAULT_INJECT=rank:step:marker[:nan]``: at that update that rank's
    process dies (as a killed worker would), or with ``nan`` its parameters turn NaN (as a
    numerical blow-up on one shard would); once, the marker file recording that it happened."""
    if not spec:
        return None
    kill_rank, kill_step, rest = spec.split(":", 2)
    marker, _, mode = rest.partition(":")

    def hook(step: int) -> None:
        if rank == int(kill_rank) and step == int(kill_step) and not os.path.exists(marker):
            Path(marker).write_text(f"rank {rank} {mode or 'killed'} at update {step}\n")
            if mode == "nan":
                with torch.no_grad():
                    trainer.model.weight.fill_(float("nan"))
                return
            os._exit(1)

    return hook


def train_worker(cfg: dict[str, Any]) -> None:
    """Ray Train's loop per worker (``cfg``: the config, the run, the resume point)."""
    import ray.train

    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.evaluate import live_metrics

    # Ray Train logs every report at INFO from each worker: keep the terminal for raybm's lines.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray").setLevel(logging.WARNING)
    config = Config.model_validate(cfg["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config.train.threads or cfg.get("cpus_per_worker", 1))
    device = "cpu"
    if config.distributed.use_gpu and torch.cuda.is_available():
        device = f"cuda:{ctx.get_local_rank()}"
    population = TorchComm(device) if world > 1 else LOCAL
    train_set, test_set = load_data(config)

    restored = ray.train.get_checkpoint()  # after a failure: Ray's latest complete checkpoint
    source = restored.as_directory() if restored is not None else nullcontext(cfg.get("resume"))
    with source as where:
        trainer = make_trainer(config, train_set, Path(where) if where else None, population)
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
            print(f"update {step}/{config.train.n_updates} "
                  + " ".join(f"{k}={v:.4g}" for k, v in shown.items()), file=sys.stderr, flush=True)

    try:
        run_updates(trainer, config.train.n_updates, on_log=on_log,
                    on_checkpoint=lambda step: report_checkpoint(trainer, meta),
                    on_update=fault_hook(cfg.get("fault"), rank, trainer))
    except DivergenceError as err:
        if rank == 0:
            Path(cfg["run_dir"], DIVERGED).write_text(str(err) + "\n")
        return
    if trainer.step % config.train.checkpoint_every != 0 or trainer.step == 0:
        report_checkpoint(trainer, meta)  # the final state, always a checkpoint

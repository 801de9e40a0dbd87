"""A tracked training run: run directory, MLflow run, updates, checkpoints, final evaluation.

Layout of a run directory::

    config.yaml                 the validated config (what --resume reads back)
    checkpoints/step_XXXXXXXX/  atomic checkpoints; checkpoints/latest names the newest
    artifacts/                  plots and sample grids, also logged to MLflow
    summary.json                the final evaluation
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from raybm.checkpoint import (
    Checkpoint,
    atomic_write_text,
    checkpoint_step,
    find_checkpoint,
    load_checkpoint,
    ray_checkpoints,
)
from raybm.config import Config, dump_config, load_config
from raybm.errors import DivergenceError, InputError
from raybm.train import load_data, make_trainer, run_updates


@dataclass
class RunSummary:
    run_dir: Path
    run_id: str | None
    tracking_uri: str
    ui_command: str
    metrics: dict[str, float]
    seconds: float


def default_run_name(config: Config) -> str:
    data = Path(config.data.path).name.split(".")[0] if config.data.path else "digits"
    return f"{config.algorithm.name}{config.algorithm.k}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def make_tracker(config: Config, run_name: str, run_id: str | None = None):
    if not config.tracking.enabled:
        from raybm.tracking import NullTracker

        return NullTracker()
    from raybm.tracking import Tracker

    return Tracker(config.tracking.uri, config.tracking.experiment, run_name=run_name,
                   run_id=run_id, tags={"raybm.algorithm": config.algorithm.name})


def train_run(
    config: Config | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: list[str] = (),
    evaluate_at_end: bool = True,
    say: Callable[[str], None] = lambda message: None,
) -> RunSummary:
    """Train as the config says; with ``resume``, continue that run from its latest checkpoint.

    ``distributed.workers: N > 0`` trains on N Ray Train workers (``raybm.distributed``); when
    Ray cannot start or lacks the resources, the run goes on in-process and ``say`` is told
    why. The same ``Trainer`` code runs in both cases.
    """
    t_start = time.perf_counter()
    run_id = None
    if resume is not None:
        run_dir = Path(resume)
        ckpt = find_checkpoint(run_dir)
        if ckpt.parent.name == "checkpoints":
            run_dir = ckpt.parent.parent
        config = load_config(run_dir / "config.yaml", list(overrides))
        if overrides:  # e.g. --set train.n_updates=...: the run's config records what it ran
            atomic_write_text(run_dir / "config.yaml", dump_config(config))
        run_id = json.loads((ckpt / "meta.json").read_text()).get("mlflow_run_id")
        run_name = run_dir.name
    else:
        config = config or Config()
        run_name = config.tracking.run_name or default_run_name(config)
        run_dir = Path(out) if out is not None else Path("runs") / run_name
    # Data errors surface before anything is created on disk or in MLflow.
    train_set, test_set = load_data(config)
    if resume is None:
        # A distributed run that stopped early has its checkpoints only in Ray's storage.
        if (run_dir / "checkpoints").exists() or ray_checkpoints(run_dir):
            raise InputError(run_dir, "--out", "already holds a run; use --resume to continue it")
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    resume_from = find_checkpoint(run_dir) if resume else None
    workers = config.distributed.workers
    if workers > 0:
        from raybm.distributed.launch import start_ray

        why = start_ray(workers, config.distributed.use_gpu)
        if why is not None:
            say(f"{why}: training in-process instead (distributed.workers: 0)")
            workers = 0
        else:
            n_walkers = config.algorithm.n_walkers or config.train.batch_size
            say(f"training on {workers} Ray workers ({n_walkers} walkers in {workers} shards)")
    tracker = make_tracker(config, run_name, run_id)
    if run_id is None:
        tracker.log_params(config.flat())
        tracker.log_params({"data.n_train": train_set.n_samples, "data.n_test": test_set.n_samples,
                            "data.n_visible": train_set.n_visible,
                            "data.n_states": train_set.n_states})
        tracker.log_artifact(run_dir / "config.yaml")
    meta = {"mlflow_run_id": tracker.run_id, "tracking_uri": getattr(tracker, "uri", "")}
    tracker.set_tags({"raybm.workers": str(workers)})

    status = "FAILED"
    try:
        if workers == 0:
            final, model = _train_in_process(config, train_set, test_set, run_dir, resume_from,
                                              tracker, meta)
        else:
            from raybm.distributed.launch import fit

            final = fit(config, run_dir, tracker.run_id, getattr(tracker, "uri", ""),
                        resume_from)
            model = load_checkpoint(final).model
        step = checkpoint_step(final)
        metrics: dict[str, float] = {}
        if evaluate_at_end:
            from raybm.evaluate import evaluate, write_artifacts

            metrics = evaluate(model, train_set, test_set, config)
            tracker.log_metrics(metrics, step)
            art = write_artifacts(model, train_set, test_set, config, metrics,
                                  run_dir / "artifacts")
            _jarzynski_plot(tracker, art)
            tracker.log_artifact(art, "plots")
            atomic_write_text(run_dir / "summary.json", json.dumps(metrics, indent=2))
        tracker.log_artifact(final, "checkpoint")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except DivergenceError:
        status = "FAILED"
        raise
    finally:
        tracker.end(status)
    return RunSummary(run_dir, tracker.run_id, getattr(tracker, "uri", ""),
                      tracker.ui_command, metrics, time.perf_counter() - t_start)


JARZYNSKI_CURVES = ["ess", "log_z", "weight_entropy", "test_loglik_jarzynski"]


def _jarzynski_plot(tracker, directory: Path) -> None:
    """ESS, running log Z, weight entropy and live test log-likelihood over the run, with the
    resampling events, from what every process logged to the MLflow run."""
    history = tracker.history(JARZYNSKI_CURVES + ["n_resamplings"])
    counts = sorted(history.pop("n_resamplings"))  # cumulative: marks where it went up
    events = [s for (_, before), (s, now) in zip([(0, 0.0)] + counts, counts) if now > before]
    if any(history.values()):
        from raybm.metrics.plots import training_curves_plot

        training_curves_plot(history, directory / "jarzynski.png", events)


def _train_in_process(config, train_set, test_set, run_dir, resume_from, tracker, meta):
    """``distributed.workers: 0``: the whole population in this process, no Ray."""
    from raybm.evaluate import live_metrics

    trainer = make_trainer(config, train_set, resume=resume_from)

    def on_log(step: int, info: dict[str, float]) -> None:
        tracker.log_metrics(live_metrics(trainer.model, test_set, info), step)

    run_updates(trainer, config.train.n_updates, on_log=on_log,
                on_checkpoint=lambda step: trainer.save(run_dir, meta),
                progress=config.train.progress)
    return trainer.save(run_dir, meta), trainer.model


def load_run(run: str | Path) -> tuple[Config, Checkpoint]:
    """The config and latest checkpoint of a run (for ``raybm eval`` / ``raybm sample``)."""
    ckpt = load_checkpoint(run)
    return Config.model_validate(ckpt.meta["config"]), ckpt

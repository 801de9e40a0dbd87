"""One Tune trial: exactly the training ``raybm train`` runs, through the same pieces.

``run_trial`` is the function trainable (Ray 2.60's ``Tuner`` takes a function, not a trainer
object). It builds the trial's config from the sweep's base and the trial's values, then
calls ``plan_run`` / ``open_run`` / ``fit_run`` / ``evaluate_run`` as ``raybm train`` does: in
the trial's own process for ``distributed.workers: 0``, or on its own Ray Train worker group.
Every ``train.log_every`` updates and at every checkpoint the run's report goes to Tune
(``step``, the live metrics, the ``hp/*`` values, and the checkpoint), so ASHA and PBT compare
trials while they run.

When Tune hands a checkpoint over (``tune.get_checkpoint()``: the trial's own after a sweep
resumes, a better trial's after a PBT exploit) the trial continues from *that* checkpoint,
with its own, possibly mutated, config: parameters, optimizer state, every walker with its
log-weight, the log Z estimate and the generators come from it, and
``<trial>/restores/*.json`` records its digest. Each trial keeps one MLflow child run under the
sweep's parent for all its restarts (its id is kept in ``<trial>/mlflow_run_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raybm.checkpoint import atomic_write_text, checkpoint_step, update_timings
from raybm.config import get_dotted, with_values
from raybm.run import evaluate_run, fit_run, open_run, plan_run
from raybm.tuning.space import Sweep

RUN_ID_FILE = "mlflow_run_id"
# 1.0 in a trial's last report (the end-of-run evaluation): the sweep stops a trial on it
# (``RunConfig(stop=...)``) without asking the scheduler, so neither ASHA nor a PBT exploit acts
# on a trial that has already finished.
EVALUATED = "evaluated"


@dataclass
class TrialContext:
    """What every trial of a sweep shares (sent once through Ray's object store)."""

    sweep: Sweep
    sweep_dir: Path
    parent_run_id: str | None
    threads: int  # torch threads of a trial process (its CPUs)

    def trial_dir(self, trial_id: str) -> Path:
        return self.sweep_dir / "trials" / trial_id


def hp_metrics(sweep: Sweep, params: dict[str, Any]) -> dict[str, float]:
    """``hp/<key>`` for every searched number: MLflow params cannot change, so the values a
    PBT schedule moves are logged as metrics at every step."""
    out = {}
    for key in sweep.searched:
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"hp/{key}"] = float(value)
    return out


def record_times(trial_dir: Path, times: dict[str, float]) -> None:
    """Add this start of the trial to ``<trial>/timings.json`` (beside the fits' own)."""
    from raybm.tracking import SECONDS

    # The process may have run other trials before (Tune reuses it): count this one's calls.
    times["mlflow_s"] = SECONDS["mlflow"] - times.pop("mlflow_before")
    update_timings(trial_dir, lambda record: record.setdefault("starts", []).append(times))


def announce_exploit(trial_id: str, config, checkpoint: Path, run_id: str | None) -> None:
    """One line on the terminal when a trial continues from another trial's checkpoint (a
    PBT exploit): whose, at which update, and the hyperparameters it changed. (A trial that
    continues from its own checkpoint, after a pause or a failure, says nothing.) Written to
    stderr, which Ray forwards from the trial's process to the sweep's terminal."""
    import json
    import sys

    from raybm.config import changed_keys, parse_config

    meta = json.loads((checkpoint / "meta.json").read_text())
    if meta.get("mlflow_run_id") == run_id:
        return
    donor = parse_config(meta["config"], str(checkpoint))
    name = donor.tracking.run_name or "another trial"
    moves = [f"{key} {_short(get_dotted(donor, key))} -> {_short(get_dotted(config, key))}"
             for key in changed_keys(donor, config) if not key.startswith("tracking.")]
    sys.stderr.write(f"raybm: PBT exploit: trial {trial_id} continues from {name} at update "
                     f"{meta['step']}" + (f": {', '.join(moves)}" if moves else "") + "\n")
    sys.stderr.flush()


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_trial(params: dict[str, Any], ctx: TrialContext) -> None:
    import time

    from ray import tune

    from raybm.tracking import SECONDS

    times = {"entered": time.time(), "mlflow_before": SECONDS["mlflow"]}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[f"{name}_s"] = times.get(f"{name}_s", 0.0) + now - clock
        clock = now

    trial_id = tune.get_context().get_trial_id()
    trial_dir = ctx.trial_dir(trial_id)
    config = ctx.sweep.trial_config(params)
    quiet = {"train.progress": False, "tracking.run_name": f"{ctx.sweep.name}-{trial_id}"}
    if config.train.threads is None:
        quiet["train.threads"] = ctx.threads
    config = with_values(config, quiet, str(ctx.sweep.path))
    handed = tune.get_checkpoint()
    restart_from = None if handed is None else Path(handed.path)
    if restart_from is not None:
        # A previous start of this trial was stopped with its worker group's placement group
        # still reserved (the sweep's driver removes it too, unless it never saw it stop).
        from raybm.distributed.launch import release_placement_groups

        release_placement_groups(trial_dir / "ray")
    plan = plan_run(config, out=trial_dir, restart_from=restart_from)
    lap("plan")
    id_file = trial_dir / RUN_ID_FILE
    plan.run_id = id_file.read_text().strip() if id_file.is_file() else None
    tags = {"raybm.trial_id": trial_id, "raybm.sweep": ctx.sweep.name}
    active = open_run(plan, parent_run_id=ctx.parent_run_id, tags=tags)
    if plan.run_id is None:
        atomic_write_text(id_file, active.tracker.run_id or "")
    if restart_from is not None:
        active.tracker.set_tags({"raybm.restored_from": str(restart_from),
                                 "raybm.restored_step": str(checkpoint_step(restart_from))})
        announce_exploit(trial_id, config, restart_from, active.tracker.run_id)
    hp = hp_metrics(ctx.sweep, params)
    held: dict[str, float] = {}
    lap("open")

    def on_report(step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        if step >= config.train.n_updates:
            # The last step's report waits for the end-of-run evaluation: a scheduler that
            # stops the trial on it (ASHA at max_t) would otherwise end it before evaluating.
            held.update(metrics)
            return
        t0 = time.perf_counter()
        tune.report({**metrics, **hp, "step": step, EVALUATED: 0.0}, checkpoint=(
            None if checkpoint is None else tune.Checkpoint.from_directory(str(checkpoint))))
        times["report_s"] = times.get("report_s", 0.0) + time.perf_counter() - t0

    status: str | None = "FAILED"
    try:
        resources = ctx.sweep.spec.resources
        final, model = fit_run(active, on_report, extra_metrics=lambda: hp,
                               cpus_per_worker=resources.cpus_per_worker,
                               gpus_per_worker=resources.gpus_per_worker or None,
                               cores=ctx.threads)  # train.threads: auto counts these
        lap("fit")
        metrics = evaluate_run(active, final, model)
        active.tracker.log_artifact(final, "checkpoint")
        status = None
        active.end("FINISHED")
        lap("evaluate")
        record_times(trial_dir, times)
        tune.report({**held, **metrics, **hp, "step": checkpoint_step(final), EVALUATED: 1.0},
                    checkpoint=tune.Checkpoint.from_directory(str(final)))
    except SystemExit:
        # Tune ends a trial it stops (ASHA) or pauses (PBT) this way: the sweep's driver
        # closes the MLflow run of a stopped trial; a paused one goes on later.
        status = None
        raise
    finally:
        if status is not None:
            active.end(status)

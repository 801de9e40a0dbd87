"""What a sweep says while it runs (one line per trial result), and its trials' MLflow status.

A Tune callback on the sweep's driver: every result a trial reports becomes one terminal line
(trial, update, metric, the best so far); when a trial ends (finished, stopped early by ASHA,
failed) its MLflow child run is closed with the matching status, which a trial that Tune stops
by ending its process cannot do itself.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback

from raybm.tuning.space import Sweep

ENDED = "ended.json"  # in a trial's directory once Tune ended it (finished or stopped early)

# On a trial's MLflow run: "true" when the scheduler (ASHA) stopped it before train.n_updates.
# MLflow has no status for that (the run is FINISHED), so `raybm runs` reads this tag.
STOPPED_EARLY_TAG = "raybm.stopped_early"

# The words the sweep's final table gives a trial (``sweep._rows``), which ``raybm runs`` also
# prints, so that one trial reads the same in both.
FINISHED, STOPPED, ERROR, UNFINISHED = "finished", "stopped", "error", "unfinished"

# MLflow's run statuses in that vocabulary (FINISHED depends on the tag: run_status).
_MLFLOW_WORDS = {"FAILED": ERROR, "KILLED": UNFINISHED, "RUNNING": "running",
                 "SCHEDULED": "scheduled"}


def run_status(mlflow_status: str, tags: dict[str, str]) -> str:
    """The sweep table's word for a run from its MLflow status and tags: a FINISHED run that
    the scheduler stopped early (:data:`STOPPED_EARLY_TAG`) is ``stopped``, a failed one
    ``error``, one an interruption ended (KILLED) ``unfinished``."""
    if mlflow_status == "FINISHED":
        return STOPPED if tags.get(STOPPED_EARLY_TAG) == "true" else FINISHED
    return _MLFLOW_WORDS.get(mlflow_status, mlflow_status.lower())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def text_table(head: list[str], body: list[list[Any]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)) for line in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(rows: list, metric: str) -> str:
    """The trials as a text table: id, status, update, metric, searched values."""
    if not rows:
        return "(no trial reported a value)"
    keys = list(rows[0].params)
    return text_table(["trial", "status", "update", metric] + keys,
                      [[r.trial_id, r.status, str(r.step), _short(r.value)]
                       + [_short(r.params.get(k)) for k in keys] for r in rows])


class SweepProgress(Callback):
    """Driver-side: one line per trial result, and each child run's status at its end."""

    def __init__(self, sweep: Sweep, sweep_dir: Path, tracking_uri: str,
                 say: Callable[[str], None]) -> None:
        self.metric = sweep.spec.metric
        self.mode = sweep.spec.mode
        self.n_updates = sweep.base.train.n_updates
        self.sweep_dir = Path(sweep_dir)
        self.tracking_uri = tracking_uri
        self.tracking = sweep.base.tracking.enabled
        self.say = say
        self.best: tuple[float, str] | None = None
        self.started: dict[str, list[float]] = {}  # trial id -> times Tune (re)started it
        self.ended: dict[str, float] = {}
        self.running: set[str] = set()
        self.fit_started: float | None = None  # when Tune's run began and ended (sweep.py)
        self.fit_ended: float | None = None

    def on_step_end(self, iteration, trials, **info) -> None:
        """A trial that stopped running (finished, stopped, paused by PBT, failed) leaves its
        Ray Train worker group's placement group behind: remove it before another trial waits
        for those CPUs (``raybm.distributed.launch.release_placement_groups``)."""
        for trial in trials:
            if trial.status == "RUNNING":
                self.running.add(trial.trial_id)
            elif trial.trial_id in self.running:
                self.running.discard(trial.trial_id)
                self._release(trial.trial_id)

    def _release(self, trial_id: str) -> None:
        from raybm.distributed.launch import release_placement_groups

        release_placement_groups(self.sweep_dir / "trials" / trial_id / "ray")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, []).append(time.time())

    def on_trial_restore(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, []).append(time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(self.metric)
        step = result.get("step", "?")
        if value is not None and math.isfinite(value):
            better = self.best is None or (value > self.best[0] if self.mode == "max"
                                           else value < self.best[0])
            if better:
                self.best = (float(value), trial.trial_id)
        # The best value any trial has reported so far; the final table ranks trials by their
        # last value (a trial's figure at its end), which can be lower.
        best = "" if self.best is None else f"  best seen {self.best[0]:.4g} ({self.best[1]})"
        shown = "-" if value is None else f"{value:.4g}"
        self.say(f"trial {trial.trial_id}  update {step}/{self.n_updates}  "
                 f"{self.metric} {shown}{best}")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        step = (trial.last_result or {}).get("step", 0)
        early = step < trial.config.get("train.n_updates", self.n_updates)
        if early:
            self.say(f"trial {trial.trial_id}  stopped by the scheduler at update {step}")
        self.ended[trial.trial_id] = time.time()
        # Recorded with the trial: a sweep resumed later must tell a trial the scheduler
        # stopped from one the interruption cut short.
        from raybm.checkpoint import atomic_write_text

        trial_dir = self.sweep_dir / "trials" / trial.trial_id
        if trial_dir.is_dir():
            atomic_write_text(trial_dir / ENDED, json.dumps({"step": step}))
        self._release(trial.trial_id)
        self._close(trial.trial_id, "FINISHED", {STOPPED_EARLY_TAG: str(early).lower()})

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        from raybm.errors import find_raybm_error

        err = trial.get_pickled_error() or trial.get_error()
        found = find_raybm_error(err)
        why = str(found) if found is not None else (
            str(err).strip().splitlines()[-1][:200] if err else "unknown error")
        self.say(f"trial {trial.trial_id}  failed: {why}")
        self._release(trial.trial_id)
        self._close(trial.trial_id, "FAILED", {})

    def _close(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        from raybm.tuning.trial import RUN_ID_FILE

        run_file = self.sweep_dir / "trials" / trial_id / RUN_ID_FILE
        if not self.tracking or not run_file.is_file():
            return
        from raybm.tracking import close_run

        close_run(self.tracking_uri, run_file.read_text().strip(), status, tags)

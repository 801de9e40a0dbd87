"""``raybm tune``: a sweep on Ray Tune, tracked as one MLflow parent run with a child per trial.

Layout of a sweep directory::

    sweep.json          name, the space file, overrides, the parent MLflow run, tracking URI
    space.yaml          the space file as given (the sweep's record of what was asked)
    base_config.yaml    the resolved base config every trial starts from
    tune/               Ray Tune's experiment (what ``--resume`` restores)
    trials/<trial id>/  each trial's run directory (the layout of ``raybm train``)
    best_config.yaml    the best trial's config, runnable with ``raybm train``

Validation happens before Ray starts (``space.load_sweep``); the sweep directory and the parent
run are created only after it. An interrupted sweep (Ctrl-C, SIGTERM) saves Tune's state and
ends with exit code 130; ``raybm tune --resume DIR`` (``Tuner.restore``) finishes the
unfinished trials, each from its last checkpoint, and runs no finished trial again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raybm.checkpoint import TIMINGS, atomic_write_text
from raybm.config import data_paths, dump_config, load_config, with_values
from raybm.run import check_parents
from raybm.errors import InputError, Interrupted, RaybmError, find_raybm_error
from raybm.tuning.space import (Asha, Domain, Pbt, Sweep, check_resources, concurrency,
                                load_sweep, local_machine, trial_bundle)
from raybm.tuning.trial import EVALUATED, RUN_ID_FILE, TrialContext, run_trial

SWEEP_FILE = "sweep.json"


@dataclass
class TrialRow:
    trial_id: str
    status: str
    step: int
    value: float
    params: dict[str, Any]
    run_id: str | None


@dataclass
class SweepSummary:
    sweep_dir: Path
    name: str
    metric: str
    mode: str
    parent_run_id: str | None
    tracking_uri: str
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_config: Path | None = None
    seconds: float = 0.0


def git_revision(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _sweep_dir(sweep: Sweep, out: str | Path | None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sweep_dir = (Path(out) if out else Path("sweeps") / f"{sweep.name}-{stamp}").resolve()
    check_parents(sweep_dir, "--out")
    if (sweep_dir / SWEEP_FILE).exists() or (sweep_dir / "tune").exists():
        raise InputError(sweep_dir, "--out", "already holds a sweep; use --resume to finish it")
    return sweep_dir


RAY_START_S: dict[str, float] = {}


def _cluster(say: Callable[[str], None]) -> dict[str, float]:
    """Start (or join) Ray; what it offers."""
    from raybm.distributed.launch import start_ray

    t0 = time.perf_counter()
    why, cluster = start_ray(0, use_gpu=False)
    RAY_START_S["ray_start_s"] = time.perf_counter() - t0
    if cluster is None:
        raise RaybmError(f"raybm tune needs Ray: {why}")
    say(cluster.line())
    return {"CPU": cluster.cpus, "GPU": cluster.gpus}


def _tracker(sweep: Sweep, run_id: str | None = None, tags: dict[str, str] | None = None):
    from raybm.run import make_tracker

    return make_tracker(sweep.base, sweep.name, run_id=run_id, tags=tags)


def tune_sweep(space: str | Path | None = None, overrides: list[str] = (),
               out: str | Path | None = None, resume: str | Path | None = None,
               say: Callable[[str], None] = lambda line: None) -> SweepSummary:
    """Run (or with ``resume``, finish) a sweep; its summary with the best trial."""
    t0 = time.perf_counter()
    started = time.time()
    if resume is not None:
        sweep_dir = Path(resume).resolve()
        record = _read_record(sweep_dir)
        if space is not None:
            raise InputError(space, "", "cannot be given with --resume (the sweep's own "
                             "space.yaml continues)")
        if overrides:
            raise InputError("--set", overrides[0].partition("=")[0], "cannot change a sweep "
                             "being resumed")
        # The sweep's own record: its copy of the space file and its resolved base config
        # (the files it was started from may have changed since).
        base = load_config(sweep_dir / "base_config.yaml")
        machine = _cluster(say)
        # The recorded overrides still name the constants that --set replaced.
        sweep = load_sweep(sweep_dir / "space.yaml", record["overrides"], machine, base=base)
    else:
        if space is None:
            raise InputError("raybm tune", "", "give a search-space file (see tune_spaces/)")
        # Every check before Ray starts; the resources against this machine unless the sweep
        # joins a cluster (RAY_ADDRESS), whose size is known once connected.
        local = None if os.environ.get("RAY_ADDRESS") else local_machine()
        sweep = load_sweep(space, list(overrides), local)
        sweep_dir = _sweep_dir(sweep, out)
        machine = _cluster(say)
        check_resources(sweep.spec, sweep.base, machine, str(sweep.path))
        record = None
    sweep_dir.mkdir(parents=True, exist_ok=True)
    from raybm.distributed.cluster import alive_nodes, check_shared_paths

    if len(alive_nodes()) > 1:  # trials run on any node: they must all see data and sweep
        check_shared_paths(data_paths(sweep.base), sweep_dir)
    if record is None:
        shutil.copyfile(sweep.path, sweep_dir / "space.yaml")
        atomic_write_text(sweep_dir / "base_config.yaml", dump_config(sweep.base))
        tracker = _tracker(sweep, tags=_parent_tags(sweep))
        if sweep.base.tracking.enabled:
            tracker.log_params({f"space.{k}": _describe(v) for k, v in sweep.params.items()})
            tracker.log_artifact(sweep_dir / "space.yaml")
            tracker.log_artifact(sweep_dir / "base_config.yaml")
        record = {"name": sweep.name, "space": str(sweep.path), "overrides": list(overrides),
                  "parent_run_id": tracker.run_id, "tracking_uri": tracker.uri,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(sweep_dir / SWEEP_FILE, json.dumps(record, indent=2))
    else:
        tracker = _tracker(sweep, run_id=record["parent_run_id"])
    summary = SweepSummary(sweep_dir, sweep.name, sweep.spec.metric, sweep.spec.mode,
                           record["parent_run_id"], record["tracking_uri"])
    status = "FAILED"
    progress = None
    try:
        results, progress = _run_tuner(sweep, sweep_dir, record, machine, resume is not None,
                                       say)
        summary.rows = _rows(results, sweep, sweep_dir)
        unfinished = [r for r in summary.rows if r.status == "unfinished"]
        missing = sweep.n_trials - len(summary.rows)  # never started before the interruption
        if unfinished or missing > 0:
            status = "KILLED"
            _close_children(summary, unfinished, "KILLED")
            raise Interrupted(f"interrupted; {len(unfinished) + missing} trial(s) unfinished: "
                              f"finish the sweep with raybm tune --resume {sweep_dir}")
        _raise_if_all_failed(results, summary.rows)
        summary.best = _best(summary.rows, sweep.spec.mode)
        if summary.best is not None:
            summary.best_config = _write_best(sweep, sweep_dir, summary.best, tracker)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise Interrupted(f"interrupted: finish the sweep with raybm tune --resume "
                          f"{sweep_dir}") from None
    finally:
        tracker.end(status)
    summary.seconds = time.perf_counter() - t0
    _write_times(sweep_dir, summary.seconds, started, progress)
    return summary


def _write_times(sweep_dir: Path, seconds: float, started: float, progress) -> None:
    """``<sweep>/timings.json``: Ray's start, Tune's run, and when Tune started / ended each
    trial (benchmarks/tune_overhead.py sets them against the trials' own ``timings.json``)."""
    record = {"wall_s": seconds, "started": started, "ended": started + seconds,
              **RAY_START_S,
              "fit_started": progress.fit_started if progress else None,
              "fit_ended": progress.fit_ended if progress else None,
              "trial_started": progress.started if progress else {},
              "trial_ended": progress.ended if progress else {}}
    atomic_write_text(sweep_dir / TIMINGS, json.dumps(record, indent=2))


def _close_children(summary: SweepSummary, rows: list[TrialRow], status: str) -> None:
    """Mark the MLflow runs of trials an interrupted sweep left behind (reopened on resume)."""
    from raybm.tracking import close_run

    for row in rows:
        if row.run_id:
            close_run(summary.tracking_uri, row.run_id, status)


def _read_record(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_FILE
    if not path.is_file() or not (sweep_dir / "tune").is_dir():
        raise InputError(sweep_dir, "--resume", "is not a sweep directory (no sweep.json and "
                         "tune/ from raybm tune)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise InputError(path, "", "not valid JSON") from None


def _parent_tags(sweep: Sweep) -> dict[str, str]:
    s = sweep.spec
    tags = {"raybm.sweep": sweep.name, "raybm.metric": s.metric, "raybm.mode": s.mode,
            "raybm.scheduler": s.scheduler.name, "raybm.search_alg": s.search_alg.name,
            "raybm.searched": ",".join(sweep.searched), "raybm.kind": "sweep"}
    rev = git_revision(sweep.path.parent)
    if rev:
        tags["mlflow.source.git.commit"] = rev
    return tags


def _describe(value: Any) -> str:
    if isinstance(value, Domain):
        return f"{value.kind}{list(value.args)}"
    return repr(value)


def _search_alg(sweep: Sweep, concurrent: int | None):
    """The space's search algorithm, running at most ``concurrent`` trials at a time (None:
    as many as Tune's resources allow)."""
    s = sweep.spec
    if s.search_alg.name == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study otherwise
        return OptunaSearch(seed=s.search_alg.seed)
    if s.search_alg.name == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(random_state_seed=s.search_alg.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Its own limit: Tune ignores max_concurrent_trials for a generator passed in (with a
    # log line only), and raybm's trials that drive workers reserve almost nothing in Tune's
    # eyes, so all of them started at once and their worker groups waited on each other.
    return BasicVariantGenerator(random_state=s.search_alg.seed, max_concurrent=concurrent or 0)


def _scheduler(sweep: Sweep):
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, PopulationBasedTraining

    sch = sweep.spec.scheduler
    if isinstance(sch, Asha):
        return AsyncHyperBandScheduler(time_attr="step", max_t=sch.max_t,
                                       grace_period=sch.grace_period,
                                       reduction_factor=sch.reduction_factor,
                                       brackets=sch.brackets)
    if isinstance(sch, Pbt):
        from raybm.tuning.explore import CoupledExplore

        explore = None
        if sch.coupled:
            limits = {k: (min(d.extremes()), max(d.extremes()))
                      for k, d in sch.hyperparam_mutations.items() if d.is_numeric()}
            explore = CoupledExplore([m.model_dump() for m in sch.coupled],
                                     sweep.base.model_dump(), seed=sch.seed, limits=limits)
        return PopulationBasedTraining(
            time_attr="step", perturbation_interval=sch.perturbation_interval,
            burn_in_period=sch.burn_in_period,
            hyperparam_mutations={k: v.to_tune() for k, v in sch.hyperparam_mutations.items()},
            quantile_fraction=sch.quantile_fraction,
            resample_probability=sch.resample_probability,
            perturbation_factors=tuple(sch.perturbation_factors),
            custom_explore_fn=explore, log_config=False, synch=sch.synch)
    return FIFOScheduler()


def _quiet_tune() -> None:
    """raybm prints one line per trial result and a final table: Tune's own progress box and
    its advice for class trainables (raybm's trials are functions) stay out of the terminal."""
    import os
    import warnings

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", message=".*reuse_actors.*")


def _run_tuner(sweep: Sweep, sweep_dir: Path, record: dict[str, Any],
               machine: dict[str, float], resume: bool, say: Callable[[str], None]):
    from ray import tune

    _quiet_tune()
    from raybm.tuning.progress import SweepProgress

    workers = sweep.base.distributed.workers
    ctx = TrialContext(sweep, sweep_dir, record["parent_run_id"],
                       threads=max(int(sweep.spec.resources.cpus_per_worker), 1))
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    tune.PlacementGroupFactory([trial_bundle(sweep.spec,
                                                                             workers)]))
    progress = SweepProgress(sweep, sweep_dir, record["tracking_uri"], say)
    run_config = tune.RunConfig(
        name="tune", storage_path=str(sweep_dir), callbacks=[progress], verbose=0,
        stop={EVALUATED: 1.0},
        # PBT clones a donor's latest checkpoint, which must not be pruned meanwhile.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4))
    if resume:
        if not tune.Tuner.can_restore(str(sweep_dir / "tune")):
            raise InputError(sweep_dir, "--resume", "holds no Tune experiment state to restore")
        tuner = tune.Tuner.restore(str(sweep_dir / "tune"), trainable=trainable,
                                   resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, param_space=_param_space(sweep))
        # A restored Tuner brings back the callbacks pickled with it, bound to the first
        # driver's terminal: this driver's take their place.
        tuner._local_tuner.get_run_config().callbacks = [progress]
    else:
        n = concurrency(sweep.spec, sweep.base, machine)
        # PBT pauses trials to rank its population, and a paused trial still counts against a
        # search algorithm's limit: capped there, the population would split into batches.
        # Trials in their own process reserve their CPUs in Tune, which then limits them.
        cap = None if isinstance(sweep.spec.scheduler, Pbt) and workers == 0 else n
        say(f"sweep {sweep.name}: {sweep.spec.num_samples} sample(s) of "
            f"{', '.join(sweep.searched) or 'the base config'}, {n} trial(s) at a time, "
            f"{'in the trial process' if workers == 0 else f'{workers} Ray workers each'}; "
            f"{sweep.spec.scheduler.name}, {sweep.spec.search_alg.name} search; "
            f"in {sweep_dir}")
        tuner = tune.Tuner(
            trainable, param_space=_param_space(sweep),
            tune_config=tune.TuneConfig(
                metric=sweep.spec.metric, mode=sweep.spec.mode,
                search_alg=_search_alg(sweep, cap), scheduler=_scheduler(sweep),
                num_samples=sweep.spec.num_samples,
                max_concurrent_trials=None if sweep.spec.search_alg.name == "random" else cap,
                # A trial process that trains itself can take the next trial: it has torch,
                # Ray, MLflow and raybm imported already. One that drives a worker group is
                # not reused: a stopped trial's Ray Train run lives as long as its process.
                reuse_actors=workers == 0,
                trial_dirname_creator=lambda t: t.trial_id),
            run_config=run_config)
    from raybm.interrupts import sigterm_as_sigint

    sigterm_as_sigint()  # a scheduler's SIGTERM stops the sweep as Ctrl-C does, state saved
    progress.fit_started = time.time()
    results = tuner.fit()
    progress.fit_ended = time.time()
    return results, progress


def _param_space(sweep: Sweep) -> dict[str, Any]:
    return {k: (v.to_tune() if isinstance(v, Domain) else v) for k, v in sweep.params.items()}


def _rows(results, sweep: Sweep, sweep_dir: Path) -> list[TrialRow]:
    """One row per trial: ``error``, ``finished`` (evaluated at its end), ``stopped`` (early,
    by the scheduler: ``progress.ENDED`` in its directory) or ``unfinished`` (the sweep was
    interrupted)."""
    from raybm.tuning.progress import ENDED

    rows = []
    for result in results:
        last = result.metrics or {}
        trial_dir = sweep_dir / "trials" / Path(result.path).name
        if result.error is not None:
            status = "error"
        elif last.get(EVALUATED) == 1.0:
            status = "finished"
        elif (trial_dir / ENDED).is_file():
            status = "stopped"
        else:
            status = "unfinished"
        value = last.get(sweep.spec.metric)
        run_file = trial_dir / RUN_ID_FILE
        rows.append(TrialRow(trial_dir.name, status, int(last.get("step", 0)),
                             float(value) if value is not None else math.nan,
                             {k: (result.config or {}).get(k) for k in sweep.searched},
                             run_file.read_text().strip() if run_file.is_file() else None))
    return rows


def _raise_if_all_failed(results, rows: list[TrialRow]) -> None:
    if rows and all(r.status == "error" for r in rows):
        for err in results.errors:
            found = find_raybm_error(err)
            if found is not None:
                raise found
        first = results.errors[0] if results.errors else None
        raise RaybmError(f"every trial failed: {type(first).__name__}: "
                         f"{str(first).strip().splitlines()[-1][:300] if first else ''}")


def _best(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The best finished trial (one stopped early did not run the config to its end)."""
    ok = [r for r in rows if r.status == "finished" and math.isfinite(r.value)]
    if not ok:
        ok = [r for r in rows if r.status == "stopped" and math.isfinite(r.value)]
    if not ok:
        return None
    return (max if mode == "max" else min)(ok, key=lambda r: r.value)


def _write_best(sweep: Sweep, sweep_dir: Path, best: TrialRow, tracker) -> Path:
    """``best_config.yaml``: the best trial's config as it ran (its final values, for PBT),
    runnable with ``raybm train``; logged on the parent run with the trial's figure."""
    trial_config = load_config(sweep_dir / "trials" / best.trial_id / "config.yaml")
    config = with_values(trial_config, {"tracking.run_name": None, "train.progress": True})
    header = (f"# The best trial of sweep {sweep.name} ({best.trial_id}): "
              f"{sweep.spec.metric} = {best.value:.6g} at update {best.step}.\n"
              f"# Reproduce it with: raybm train {sweep_dir / 'best_config.yaml'}\n")
    if isinstance(sweep.spec.scheduler, Pbt):
        header += ("# PBT: these are the trial's final hyperparameters; the schedule that led "
                   "there is in MLflow (hp/* metrics of the trial's run).\n")
    path = sweep_dir / "best_config.yaml"
    atomic_write_text(path, header + dump_config(config))
    tracker.log_metrics({f"best/{sweep.spec.metric}": best.value}, best.step)
    tracker.set_tags({"raybm.best_trial": best.trial_id,
                      "raybm.best_run_id": best.run_id or ""})
    tracker.log_params({f"best.{k}": v for k, v in best.params.items()})
    tracker.log_artifact(path)
    return path


def print_summary(summary: SweepSummary, top: int = 10, out=None) -> None:
    from raybm.tuning.progress import format_table

    out = out or sys.stdout  # looked up now: a default argument would keep an old stream

    ranked = sorted((r for r in summary.rows if math.isfinite(r.value)),
                    key=lambda r: r.value, reverse=summary.mode == "max")
    print(f"\nsweep directory : {summary.sweep_dir}", file=out)
    print(f"time            : {summary.seconds:.1f} s", file=out)
    print(format_table(ranked[:top], summary.metric), file=out)
    if summary.best is not None:
        print(f"best trial      : {summary.best.trial_id} ({summary.metric} = "
              f"{summary.best.value:.4f})", file=out)
        print(f"best config     : {summary.best_config}", file=out)
        print(f"reproduce with  : raybm train {summary.best_config}", file=out)
    if summary.parent_run_id:
        print(f"MLflow parent   : {summary.parent_run_id}", file=out)
        print(f"browse with     : mlflow ui --backend-store-uri {summary.tracking_uri}",
              file=out)

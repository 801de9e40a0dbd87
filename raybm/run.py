"""A tracked training run in three steps: plan (validate) / fit / evaluate.

``raybm train`` and every Ray Tune trial run the same pieces::

    plan = plan_run(config, out=...)            # every check; nothing written yet
    active = open_run(plan)                     # run directory, config.yaml, MLflow run
    final, model = fit_run(active, on_report)   # in-process or on Ray workers
    metrics = evaluate_run(active, final, model)
    active.end("FINISHED")

Layout of a run directory::

    config.yaml                 the validated config, paths resolved (what --resume reads back)
    checkpoints/step_XXXXXXXX/  atomic checkpoints; checkpoints/latest names the newest
    ray/<fit>/checkpoint_*/     a distributed fit's checkpoints (one folder per fit)
    artifacts/                  plots and sample grids, also logged to MLflow
    summary.json                the final evaluation
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from raybm.checkpoint import (
    Checkpoint,
    atomic_write_text,
    checkpoint_step,
    find_checkpoint,
    load_checkpoint,
    ray_checkpoints,
)
from raybm.algorithms.registry import estimator_class
from raybm.config import (PATH_KEYS, Config, OptimizerConfig, check_resumable, config_from,
                          data_paths, dump_config, get_dotted, parse_config, read_config_file,
                          with_values)
from raybm.data.dataset import Dataset
from raybm.distributed.cluster import check_shared_paths, node_tags, requested_address, this_node
from raybm.errors import InputError, Interrupted
from raybm.data.load import load_data
from raybm.models.build import check_fits
from raybm.train import make_trainer, record_restore, run_updates

# ``on_report(step, metrics, checkpoint)``: what a run hands to its caller every
# ``train.log_every`` updates and at every checkpoint (a Tune trial reports it to Tune).
Reporter = Callable[[int, dict[str, float], "Path | None"], None]


@dataclass
class RunSummary:
    run_dir: Path
    run_id: str | None
    tracking_uri: str
    ui_command: str
    metrics: dict[str, float]
    seconds: float
    # The last logged value of each live metric (losses, ESS, step size, ...), from MLflow
    last_logged: dict[str, float] = field(default_factory=dict)


@dataclass
class RunPlan:
    """A run that passed every check: nothing of it is on disk or in MLflow yet."""

    config: Config  # paths resolved, as config.yaml will record it
    run_dir: Path  # absolute
    run_name: str
    train_set: Dataset
    test_set: Dataset
    resume_from: Path | None = None  # the checkpoint this run continues from
    run_id: str | None = None  # the MLflow run it continues
    config_changed: bool = True  # config.yaml must be (re)written
    data_digest: str = ""  # data_digest(train_set, test_set), recorded in every checkpoint

    def __post_init__(self) -> None:
        if not self.data_digest:
            self.data_digest = data_digest(self.train_set, self.test_set)


def data_digest(train: Dataset, test: Dataset) -> str:
    """SHA-256 of the samples, labels and weights a run trains and tests on: the same file
    moved gives the same digest, other contents (or another split) another."""
    from raybm.checkpoint import tensor_digest

    return tensor_digest(train.x, train.labels, train.weights, test.x, test.labels,
                         test.weights)


def resolve_paths(config: Config, base: str | Path | None = None) -> Config:
    """``config`` with every file path made absolute against ``base`` (the working directory).

    Resolved on the driver, before anything else runs: Ray workers and Tune trials run in
    other working directories (and on other nodes), where a relative path means something
    else or nothing. The run's ``config.yaml`` records the resolved paths.
    """
    base = Path.cwd() if base is None else Path(base)
    values: dict[str, Any] = {}
    for key in PATH_KEYS:
        value = get_dotted(config, key)
        if value is not None:
            values[key] = str((base / Path(value).expanduser()).resolve())
    from raybm.tracking import resolve_uri

    values["tracking.uri"] = resolve_uri(config.tracking.uri, base)
    a = config.algorithm
    estimator = estimator_class(a.name)
    if a.n_walkers is None and estimator.persistent:
        # Recorded explicitly: a later change of train.batch_size must not seem to resize the
        # population that the checkpoints hold.
        values["algorithm.n_walkers"] = config.train.batch_size
    # Every trained module's optimizer section written out (a resume may then set any of its
    # keys), and each decaying schedule's horizon recorded: a resume that raises
    # train.n_updates continues the schedule instead of stretching it.
    sections = {"optimizer": config.optimizer}
    for name in estimator.modules:
        section = config.optimizers.get(name)
        if section is None:
            section = OptimizerConfig()
            values[f"optimizers.{name}"] = section.model_dump()
        sections[f"optimizers.{name}"] = section
    for key, section in sections.items():
        if section.schedule.name != "constant" and section.schedule.updates is None:
            values[f"{key}.schedule.updates"] = config.train.n_updates
    return with_values(config, values, "<resolved>")


def default_run_name(config: Config) -> str:
    d = config.data
    if d.path:
        data = Path(d.path).name.split(".")[0]
    else:  # a built-in set: its format names it (digits when left to auto)
        data = "digits" if d.format == "auto" else d.format
    return f"{config.algorithm.name}{config.algorithm.k}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory holding ``checkpoint`` (the nearest parent with a config.yaml)."""
    for parent in checkpoint.parents:
        if (parent / "config.yaml").is_file():
            return parent
    raise InputError(checkpoint, "", "is not inside a run directory (no config.yaml above it)")


def check_parents(path: Path, flag: str) -> None:
    """Refuse an output directory (or a file's) whose nearest existing ancestor is a file or
    cannot be written, before any work is done."""
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(flag, str(path), f"{parent} is a file, not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(flag, str(path), f"{parent} is not writable")
            break


def check_out_dir(run_dir: Path, flag: str = "--out") -> None:
    """Refuse an output directory that cannot hold a new run, before any work is done."""
    check_parents(run_dir, flag)
    # A distributed run that stopped early has its checkpoints only in Ray's storage. A run
    # that stopped before its first checkpoint (only config.yaml) has nothing to continue:
    # a new run may take its place.
    if (run_dir / "checkpoints").exists() or ray_checkpoints(run_dir):
        raise InputError(run_dir, flag, "already holds a run; use --resume to continue it")


def check_data_fits(checkpoint: Path, train: Dataset, source: str,
                    digest: str | None = None) -> None:
    """The data of a continued run must fit the model its checkpoint holds, and be the
    data it was trained on: ``digest`` (:func:`data_digest`) against the one the checkpoint
    recorded (checkpoints written before digests were recorded are checked by shape only)."""
    from raybm.models.registry import model_from_spec

    meta = json.loads((checkpoint / "meta.json").read_text())
    recorded = meta.get("data_digest")
    if digest is not None and recorded is not None and digest != recorded:
        raise InputError(source, "data.path", f"holds other data than the run was trained "
                         f"on (digest {digest[:12]}, the run's {recorded[:12]}): a continued "
                         "run needs the same data; start a new run with --out")
    spec = meta["model"]
    shape = tuple(model_from_spec(spec, checkpoint / "meta.json").event_shape)
    if shape != train.event_shape:
        raise InputError(source, "data.path", f"gives samples of shape {train.event_shape}, "
                         f"but the run's model takes {shape} (a continued run needs the same "
                         "data)")
    if "n_states" not in spec:  # a continuous model: the shape is all it needs
        return
    have = {"n_visible": train.n_visible, "n_states": train.n_states}
    if spec.get("n_labels"):
        have["n_labels"] = train.n_labels if train.labels is not None else 0
    for key, value in have.items():
        if spec.get(key) != value:
            raise InputError(source, "data.path", f"gives {key} {value}, but the run's model "
                             f"has {spec.get(key)} (a continued run needs the same data)")


def plan_run(config: Config | None = None, out: str | Path | None = None,
             resume: str | Path | None = None, overrides: list[str] = (),
             restart_from: Path | None = None) -> RunPlan:
    """Check everything a run needs, resolve its paths, load its data; write nothing.

    A fresh run takes ``config`` and ``out``. ``resume`` continues a run directory (or one of
    its checkpoints) with ``overrides`` applied to its recorded config: a change that training
    could not apply (the model, the data, the seed, ...) is refused, naming the key. A Tune
    trial that Tune restarts passes ``restart_from`` (the checkpoint Tune handed over) with its
    own, possibly mutated, config and its own ``out``.
    """
    if resume is not None:
        resume = Path(resume).resolve()
        if resume.is_dir() and not (resume / "checkpoints").exists() and not ray_checkpoints(
                resume) and (resume / "config.yaml").is_file():
            raise InputError(resume, "--resume", "this run stopped before its first "
                             "checkpoint, so there is nothing to continue: start it again "
                             "with --out")
        ckpt = find_checkpoint(resume)
        run_dir = run_dir_of(ckpt)
        meta = json.loads((ckpt / "meta.json").read_text())
        source = str(run_dir / "config.yaml")
        raw = read_config_file(source)
        if not (raw.get("tracking") or {}).get("uri") and meta.get("tracking_uri"):
            # Runs written before paths were recorded: the store the run was tracked in.
            raw.setdefault("tracking", {})["uri"] = meta["tracking_uri"]
        old = resolve_paths(config_from(raw, source))
        new = resolve_paths(config_from(old.model_dump(), source, overrides))
        check_resumable(old, new)
        if new.tracking.enabled and meta.get("mlflow_run_id"):
            from raybm.tracking import check_store

            check_store(new.tracking.uri, existing=True)
        train_set, test_set = load_data(new)
        plan = RunPlan(new, run_dir, run_dir.name, train_set, test_set, resume_from=ckpt,
                       run_id=meta.get("mlflow_run_id"), config_changed=new != old)
        check_data_fits(ckpt, train_set, "--set" if overrides else source, plan.data_digest)
        step = int(meta["step"])
        if new.train.n_updates <= step:  # checked last: any other refusal says more
            set_here = any(o.partition("=")[0] == "train.n_updates" for o in overrides)
            raise InputError("--set" if set_here else source, "train.n_updates",
                             f"{new.train.n_updates}: the run is at update {step} already, so "
                             "there is nothing to train; raise it, e.g. --set "
                             f"train.n_updates={step + new.train.n_updates} (raybm eval "
                             "evaluates the run as it is)")
        return plan
    config = resolve_paths(config or Config())
    run_dir = (Path(out) if out is not None
               else Path("runs") / (config.tracking.run_name or default_run_name(config)))
    run_dir = run_dir.resolve()
    # Named after its directory unless the config names it (MLflow's list then matches runs/).
    run_name = config.tracking.run_name or run_dir.name
    if restart_from is None:
        check_out_dir(run_dir)
    # Data and model errors surface before anything is created on disk or in MLflow.
    train_set, test_set = load_data(config)
    check_fits(config, train_set)
    plan = RunPlan(config, run_dir, run_name, train_set, test_set, resume_from=restart_from)
    if restart_from is not None:
        check_data_fits(restart_from, train_set, "data.path", plan.data_digest)
    return plan


@dataclass
class ActiveRun:
    """An opened run: its directory exists, its MLflow run is RUNNING."""

    plan: RunPlan
    tracker: object
    workers: int  # 0 when the run trains in this process
    meta: dict[str, str] = field(default_factory=dict)
    trained: bool = False  # an update has run in this attempt

    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir

    def end(self, status: str) -> None:
        """Close the MLflow run; a resumed run that failed before training keeps its status."""
        previous = self.tracker.previous_status
        if status != "FINISHED" and not self.trained and previous is not None:
            status = previous
        self.tracker.end(status)


def make_tracker(config: Config, run_name: str, run_id: str | None = None,
                 parent_run_id: str | None = None, tags: dict[str, str] | None = None):
    if not config.tracking.enabled:
        from raybm.tracking import NullTracker

        return NullTracker()
    from raybm.tracking import Tracker

    return Tracker(config.tracking.uri, config.tracking.experiment, run_name=run_name,
                   run_id=run_id, parent_run_id=parent_run_id,
                   tags={"raybm.algorithm": config.algorithm.name, **(tags or {})})


def _kernel_here(kernel, config: Config, train: Dataset):
    """``kernel`` as it runs on this machine's CPU (or GPU with ``distributed.use_gpu``) for
    the run's model (Gibbs' precision auto: bf16 only where native and the model is large
    enough); the trainer decides the same on every rank."""
    import torch

    from raybm.models.build import build as build_model
    from raybm.samplers.gibbs import matmul_support
    from raybm.streams import generator

    gpu = config.distributed.use_gpu and torch.cuda.is_available()
    # The model as the trainer builds it (its stream; only its shape matters here).
    model = build_model(config, train, generator(config.train.seed, "init"))
    device = "cuda" if gpu else "cpu"
    return kernel.for_run(model, matmul_support(device))


def open_run(plan: RunPlan, say: Callable[[str], None] = lambda message: None,
             parent_run_id: str | None = None, tags: dict[str, str] | None = None) -> ActiveRun:
    """Create the run directory and config.yaml, open (or reopen) the MLflow run, and decide
    where it trains: on ``distributed.workers`` Ray workers, or in this process when Ray
    cannot start or lacks the resources (``say`` is told why)."""
    config = plan.config
    from raybm.samplers.registry import build_kernel

    kernel = build_kernel(config.sampler)
    # The cluster and the tracking store first: a cluster that cannot be joined, a node that
    # cannot see the data, a store that cannot be opened all leave nothing on disk.
    workers = config.distributed.workers
    if workers == 0 and requested_address() and this_node() is None:
        say("distributed.workers is 0: training in this process, not on the cluster at "
            f"{requested_address()} (set --workers N to train there)")
    ray_times = None
    if workers > 0:
        from raybm.distributed.launch import start_ray

        started = time.time()
        why, cluster = start_ray(workers, config.distributed.use_gpu)
        ray_times = (started, time.time())
        if cluster is None:
            say(f"{why}: training in-process instead (distributed.workers: 0)")
            workers = 0
        else:
            say(cluster.line())
            if cluster.nodes > 1:  # one file system on one node; a cluster must share one
                check_shared_paths(data_paths(config), plan.run_dir)
            n = config.algorithm.n_walkers or config.train.batch_size
            say(f"training on {workers} Ray workers ({n} walkers in {workers} shards, "
                f"placement {config.distributed.placement})")
    tracker = make_tracker(config, plan.run_name, plan.run_id, parent_run_id, tags)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if plan.config_changed:
        atomic_write_text(plan.run_dir / "config.yaml", dump_config(config))
    if ray_times is not None:
        from raybm.distributed.launch import record_ray_start

        record_ray_start(plan.run_dir, *ray_times)
    # What the kernel's machine-dependent settings come to here (precision auto); Ray
    # workers agree on their own and say so where they differ (worker.py).
    kernel = _kernel_here(kernel, config, plan.train_set)
    precision = kernel.precision
    if plan.run_id is None:
        tracker.log_params(config.flat())
        tracker.log_params({"sampler.precision_used": precision})
        train = plan.train_set
        tracker.log_params({"data.n_train": train.n_samples,
                            "data.n_test": plan.test_set.n_samples,
                            "data.n_visible": train.n_visible, "data.n_states": train.n_states,
                            "data.digest": plan.data_digest})
    if plan.config_changed:
        tracker.log_artifact(plan.run_dir / "config.yaml")
    tracker.set_tags({"raybm.workers": str(workers)})
    # Once the run is open (a run that cannot open says only why): e.g. bf16 emulated on
    # this CPU, or what precision auto chose.
    for note in kernel.notes(config.distributed.use_gpu):
        say(note)
    meta = {"mlflow_run_id": tracker.run_id, "tracking_uri": tracker.uri,
            "data_digest": plan.data_digest, "precision_used": precision}
    return ActiveRun(plan, tracker, workers, meta)


def fit_run(active: ActiveRun, on_report: Reporter | None = None,
            extra_metrics: Callable[[], dict[str, float]] | None = None,
            cpus_per_worker: float | None = None,
            gpus_per_worker: float | None = None,
            cores: int | None = None) -> tuple[Path, object]:
    """Train to ``train.n_updates``; the final checkpoint and model.

    ``on_report`` gets the live metrics every ``log_every`` updates and the path of every
    checkpoint; ``extra_metrics`` adds values to every log (a Tune trial's ``hp/*``);
    ``cpus_per_worker`` / ``gpus_per_worker`` is what each Ray worker reserves (default: the
    cluster's CPUs shared, one GPU with ``distributed.use_gpu``); ``cores``: the CPUs an
    in-process fit holds (``train.threads: auto``; default: what this process may use).
    """
    if active.workers == 0:
        return _fit_in_process(active, on_report, extra_metrics, cores)
    from raybm.distributed.launch import fit

    # Rank 0 leaves MLflow to this process when it reports every log here (worker.py says
    # why); with tracking off it has no run to log to, and its checkpoint reports still reach
    # this process's tracker, which keeps the latest values for summary.json (the training
    # rate).
    keeps_reports = on_report is not None or active.tracker.run_id is None

    def relay(step: int, metrics: dict[str, float], checkpoint: Path | None) -> None:
        active.trained = True
        logged = {k: v for k, v in metrics.items() if k != "step"}
        if logged and keeps_reports:
            active.tracker.log_metrics(logged, step)
        if on_report is not None:
            on_report(step, metrics, checkpoint)

    try:
        final = fit(active.config, active.run_dir, active.meta, active.plan.resume_from,
                    on_report=relay, extra_metrics=extra_metrics() if extra_metrics else None,
                    cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                    report_every_log=on_report is not None)
    finally:  # also after a failure: which nodes held the shards is what one looks at first
        _tag_nodes(active)
    active.trained = True
    return final, load_checkpoint(final).model


def _tag_nodes(active: ActiveRun) -> None:
    """MLflow tags naming the node of each rank's shard (``<run>/nodes.json``; a Tune trial
    that trains in its own process: the node it runs on)."""
    import json

    from raybm.distributed.fitdir import NODES_FILE

    path = active.run_dir / NODES_FILE
    if path.is_file():
        nodes = {int(rank): node for rank, node in json.loads(path.read_text()).items()}
        active.tracker.set_tags(node_tags(nodes))


def _fit_in_process(active: ActiveRun, on_report: Reporter | None,
                    extra_metrics: Callable[[], dict[str, float]] | None,
                    cores: int | None = None):
    """``distributed.workers: 0``: the whole population in this process, no Ray."""
    from raybm.evaluate import live_metrics

    config, tracker = active.config, active.tracker
    node = this_node()
    if node is not None:  # a Tune trial training in its own process, on some node
        tracker.set_tags(node_tags({0: node}))
    trainer = make_trainer(config, active.plan.train_set, resume=active.plan.resume_from,
                           cores=cores)
    if active.plan.resume_from is not None:
        record_restore(active.run_dir, trainer, active.plan.resume_from)
    logged: dict[int, dict[str, float]] = {}

    def on_log(step: int, info: dict[str, float]) -> dict[str, float]:
        active.trained = True
        metrics = live_metrics(trainer.model, active.plan.test_set, info)
        if extra_metrics is not None:
            metrics.update(extra_metrics())
        tracker.log_metrics(metrics, step)
        logged[step] = metrics
        return metrics

    saved: dict[int, Path] = {}

    def on_checkpoint(step: int) -> Path:
        saved[step] = trainer.save(active.run_dir, active.meta)
        return saved[step]

    def report(step: int, checkpoint: Path | None) -> None:
        if on_report is not None:
            on_report(step, logged.pop(step, {}), checkpoint)
        logged.clear()

    run_updates(trainer, config.train.n_updates, on_log=on_log, on_checkpoint=on_checkpoint,
                on_report=report, progress=config.train.progress)
    final = saved.get(trainer.step) or trainer.save(active.run_dir, active.meta)
    return final, trainer.model


def evaluate_run(active: ActiveRun, final: Path, model) -> dict[str, float]:
    """The end-of-run evaluation, its plots and summary.json, logged to the MLflow run."""
    from raybm.evaluate import evaluate, write_artifacts

    plan, tracker = active.plan, active.tracker
    metrics = evaluate(model, plan.train_set, plan.test_set, active.config)
    tracker.log_metrics(metrics, checkpoint_step(final))
    ckpt = load_checkpoint(final)
    estimator = _final_estimator(active.config, ckpt)
    metrics |= _final_update_info(estimator, ckpt, model, plan.test_set, metrics)
    from raybm.evaluate import chain_metrics

    chains = chain_metrics(active.config, ckpt, plan.train_set, metrics)
    if chains:
        tracker.log_metrics(chains, checkpoint_step(final))
        metrics |= chains
    art = write_artifacts(model, plan.train_set, plan.test_set, active.config, metrics,
                          active.run_dir / "artifacts", ckpt)
    for filename, names in estimator.plots.items():
        _curves_plot(tracker, art, list(names), filename, estimator.plot_events)
    from raybm.metrics.continuous import MAX_MODE_METRICS

    _curves_plot(tracker, art, [f"mode_weight_{k}" for k in range(MAX_MODE_METRICS)],
                 "mode_weights.png")
    _curves_plot(tracker, art, ["acceptance", "step_size", "log_z", "log_z_exact"],
                 "sampler.png")
    tracker.log_artifact(art, "plots")
    # The kernel's diagnostics at the last update (IMH and MALA acceptance, step size) and the
    # last log window's training rate beside the evaluation's, in the summary only (MLflow
    # has their curves).
    last = tracker.latest()
    summary = metrics | {k: last[k] for k in (*estimator.kernel.info_names, "updates_per_s")
                         if k in last and k not in metrics}
    atomic_write_text(active.run_dir / "summary.json", json.dumps(summary, indent=2))
    return metrics


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
    plan = plan_run(config, out=out, resume=resume, overrides=overrides)
    active = open_run(plan, say)
    metrics: dict[str, float] = {}
    last_logged: dict[str, float] = {}
    status = "FAILED"
    try:
        final, model = fit_run(active)
        if evaluate_at_end:
            metrics = evaluate_run(active, final, model)
        active.tracker.log_artifact(final, "checkpoint")
        last_logged = active.tracker.latest()
        status = "FINISHED"
    except (KeyboardInterrupt, Interrupted):
        status = "KILLED"
        raise Interrupted() from None
    finally:
        active.end(status)
    return RunSummary(plan.run_dir, active.tracker.run_id, active.tracker.uri,
                      active.tracker.ui_command, metrics, time.perf_counter() - t_start,
                      last_logged)


def _final_estimator(config: Config, ckpt: Checkpoint):
    """The run's estimator in the state its final checkpoint holds (one process: the whole
    population)."""
    from raybm.algorithms.registry import build_estimator
    from raybm.sampling import run_kernel

    estimator = build_estimator(config.algorithm, run_kernel(config, ckpt), config.train.seed)
    estimator.load_state_dict(ckpt.state.get("estimator") or {})
    return estimator


def _final_update_info(estimator, ckpt: Checkpoint, model, test,
                       evaluated: dict[str, float]) -> dict[str, float]:
    """What the estimator reports of the final state (Jarzynski's running log Z of the last
    checkpoint's weighted walkers), with the live metrics it gives (the test log-likelihood
    it implies), computed once more at the end; the end-of-run evaluation's own keep their
    values."""
    from raybm.evaluate import live_metrics

    info = estimator.update_info(model, ckpt.walkers)
    if not info:
        return {}
    # The reported values and what they give (a log Z gives a test log-likelihood): the keys
    # the live metrics have with them and not without.
    live, without = live_metrics(model, test, info), live_metrics(model, test, {})
    return {k: v for k, v in live.items()
            if (k in info or k not in without) and k not in evaluated}


def _curves_plot(tracker, directory: Path, names: list[str], filename: str,
                 events: str | None = None) -> None:
    """The logged curves among ``names`` (an estimator's declared plots; mode weights of a
    mixture; a MALA kernel's acceptance; running against exact log Z) over the run, when any
    was logged; the increases of the cumulative count ``events`` marked (resamplings)."""
    history = {k: v for k, v in tracker.history(names).items() if v}
    if not history:
        return
    marks = None
    if events is not None:
        counts = sorted(tracker.history([events])[events])
        marks = [s for (_, before), (s, now) in zip([(0, 0.0)] + counts, counts)
                 if now > before]
    from raybm.metrics.plots import training_curves_plot

    training_curves_plot(history, directory / filename, marks or ())


def load_run(run: str | Path) -> tuple[Config, Checkpoint]:
    """The config and latest checkpoint of a run (for ``raybm eval`` / ``raybm sample``)."""
    ckpt = load_checkpoint(run)
    return parse_config(ckpt.meta["config"], str(find_checkpoint(run))), ckpt

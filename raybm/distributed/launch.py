"""Starting Ray and the ``TorchTrainer`` that runs the walker shards (driver side).

Ray Train V2 (Ray 2.60): one ``TorchTrainer`` with ``distributed.workers`` workers, gloo on CPU
and NCCL with ``distributed.use_gpu``; ``FailureConfig(max_failures)`` restarts a failed worker
group from the last complete checkpoint. Each fit persists its checkpoints under its own folder
``<run>/ray/<fit>/`` (a stopped driver leaves them where ``--resume`` looks, and a restarted
worker group scans only its own fit's folder, never an older fit's); every checkpoint that is
reported is copied atomically to ``<run>/checkpoints/step_N``.

``trainer.fit()`` runs in a thread of its own while this thread waits: Ray's own Ctrl-C
handler (installed only on the main thread) would abort the controller and exit 1 with no
word; here Ctrl-C stops Ray's actors and ends as raybm's ``Interrupted`` (exit 130, MLflow
KILLED), and the reports of the workers come back on this thread (``on_report``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from raybm.checkpoint import (atomic_write_text, checkpoint_step, replace_directory,
                              set_latest, update_timings)
from raybm.config import Config
from raybm.distributed.cluster import (ClusterInfo, alive_nodes, check_reachable,
                                       cluster_info, requested_address, worker_nodes)
from raybm.distributed.fitdir import (NODES_FILE, PLACEMENT_GROUP, TIMES, raise_worker_error,
                                     write_worker_error)
from raybm.errors import InputError, RaybmError, find_raybm_error
from raybm.interrupts import sigterm_as_interrupt


# Ray 2.60's core worker logs this at ERROR from Train's controller at every worker-group start:
# Train's own PreemptionCallback hands the workers' actor handles to a restartable watcher
# actor, and Ray warns about any restartable actor whose constructor arguments sit in the
# object store (https://github.com/ray-project/ray/issues/53727). raybm cannot change those
# arguments, and turning the watcher off (RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0) would lose
# Train's handling of drained (preempted) nodes; the line itself is harmless.
HARMLESS_RAY_LINES = (r"Actor with class name: 'PreemptionWatcher' .* has constructor "
                      r"arguments in the object store and max_restarts > 0")


def skip_harmless_ray_lines() -> None:
    """Keep :data:`HARMLESS_RAY_LINES` off this driver's terminal, with Ray's own filter for
    the worker lines it forwards (``RAY_DEDUP_LOGS_SKIP_REGEX``, joined to any the user set).

    Ray reads that variable once, when it is imported (often before a run starts Ray: a sweep
    imports Ray Tune first), so the filter is set on its two forwarders directly; the variable
    is set too for Ray imported later. Only those exact lines are dropped, and only here: they
    stay in Ray's own logs (``/tmp/ray/session_latest/logs``)."""
    import re

    pattern = os.environ.get("RAY_DEDUP_LOGS_SKIP_REGEX") or ""
    if HARMLESS_RAY_LINES not in pattern:  # not yet joined (by an earlier call, or a parent)
        pattern = f"(?:{pattern})|(?:{HARMLESS_RAY_LINES})" if pattern else HARMLESS_RAY_LINES
    os.environ["RAY_DEDUP_LOGS_SKIP_REGEX"] = pattern
    try:  # Ray's private forwarders (2.60): another Ray version keeps the variable only
        from ray._private import ray_logging

        for forwarder in (ray_logging.stdout_deduplicator, ray_logging.stderr_deduplicator):
            forwarder.skip_re = re.compile(pattern)
    except (ImportError, AttributeError):
        pass


def _plugin_env(plugins: list[str]) -> dict[str, Any] | None:
    """The workers' runtime env for a config's plugins: their import roots on PYTHONPATH
    (a worker validates the config, and so imports them, before it trains)."""
    if not plugins:
        return None
    from raybm.plugins import plugin_roots

    paths = plugin_roots(plugins) + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def start_ray(workers: int, use_gpu: bool) -> tuple[str | None, ClusterInfo | None]:
    """Join the cluster at ``RAY_ADDRESS`` (``--address``) or start a local Ray: (None, the
    cluster) when ``workers`` can run, else (why not, None).

    A local Ray without the resources is a reason to train in-process; a cluster the user
    asked for is not: failing to join it is an error, and its workers may wait for nodes
    (an autoscaler's, a lost node's replacement) up to ``distributed.start_timeout_s``.
    """
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a dependency
        return f"Ray is not importable ({err})", None
    skip_harmless_ray_lines()
    address = requested_address()
    joined = address is not None
    if joined and not ray.is_initialized():
        check_reachable(address)
    try:
        if not ray.is_initialized():
            # Without the dashboard there is no State API, and Ray Train's placement-group
            # cleaner warns about that every few seconds: actors log at ERROR (Ray's full logs
            # stay in /tmp/ray/session_latest/logs), raybm's own lines are written directly.
            # "local": without --address, a Ray of its own, never a `ray start` cluster that
            # Ray would otherwise find on this machine and join unannounced.
            ray.init(address=address or "local", configure_logging=True, logging_level="WARNING",
                     log_to_driver=True, logging_config=ray.LoggingConfig(log_level="ERROR"),
                     **({} if joined else {"include_dashboard": False}))
            sigterm_as_interrupt()  # ray.init replaced raybm's SIGTERM handler with an abort
        else:  # a Tune trial, a test's session: whatever this process is already part of
            joined = joined or len(alive_nodes()) > 1
        cluster = cluster_info(joined)
    except Exception as err:  # Ray raises many kinds at start-up (ports, /dev/shm, ...)
        why = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:160]}"
        if joined:
            raise InputError(address, "--address", f"cannot join this Ray cluster ({why})") from None
        return f"Ray could not start ({why})", None
    if joined:
        return None, cluster
    need, have = ("GPU", cluster.gpus) if use_gpu else ("CPU", cluster.cpus)
    if int(have) < workers:
        return f"Ray has {int(have)} {need}(s), {workers} workers need {workers}", None
    return None, cluster


def fit_name() -> str:
    """A fresh, sortable folder name for one fit's checkpoints under ``<run>/ray``."""
    return f"fit-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def fit(config: Config, run_dir: Path, meta: dict[str, Any], resume: Path | None = None,
        on_report: Callable[[int, dict[str, float], Path | None], None] | None = None,
        extra_metrics: dict[str, float] | None = None,
        cpus_per_worker: float | None = None, gpus_per_worker: float | None = None,
        report_every_log: bool | None = None) -> Path:
    """Train on ``distributed.workers`` Ray workers; the final checkpoint in ``run_dir``.

    ``resume`` is the checkpoint to start from (``--resume``, or the one Tune handed a trial).
    Each report (rank 0's metrics since the last one, the checkpoint copied into
    ``<run>/checkpoints``) is passed to ``on_report`` here; with ``report_every_log`` (default:
    whenever there is an ``on_report``) every rank reports every ``log_every`` updates too,
    not only at checkpoints.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raybm.distributed.worker import parse_fault, train_worker

    fault = os.environ.get("RAYBM_FAULT_INJECT")
    parse_fault(fault)  # a malformed test hook is a one-line error here, not a crashed worker
    d = config.distributed
    run_dir = Path(run_dir).resolve()
    name = fit_name()
    fit_dir = run_dir / "ray" / name
    if cpus_per_worker is None:
        cpus_per_worker = d.cpus_per_worker
    if cpus_per_worker is None:
        cluster = cluster_info(joined=False)
        cpus_per_worker = 1 if d.use_gpu else max(
            min(int(cluster.cpus) // d.workers, int(cluster.node_cpus)), 1)
    from raybm.distributed.reporting import ReportForwarder

    # Ray Train gives a worker group 60 s to start, then tears it down and starts over; two
    # 2-worker Tune trials starting at once on this project's 2-core machine took longer
    # (each worker imports torch and Ray), so they restarted in a loop. The driver's value
    # reaches the controller (Ray Train propagates RAY_TRAIN_* variables).
    # The same wait covers a group restarted after a lost node: its replacement (or an
    # autoscaler's node) has distributed.start_timeout_s to join before the start fails.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = f"{d.start_timeout_s:g}"

    # Every report comes back here: each checkpoint is copied into <run>/checkpoints as soon as
    # Ray registers it (``raybm sample`` works mid-run), and ``on_report`` sees the rest.
    forwarder = ReportForwarder.create()
    loop_config: dict[str, Any] = {
        "config": config.model_dump(), "run_dir": str(run_dir), "fit_dir": str(fit_dir),
        "meta": meta, "resume": None if resume is None else str(resume),
        "cpus_per_worker": cpus_per_worker, "fault": fault,
        "report_every_log": (on_report is not None if report_every_log is None
                             else report_every_log),
        "extra_metrics": extra_metrics or {},
    }
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=d.workers, use_gpu=d.use_gpu, placement_strategy=d.placement.upper(),
            resources_per_worker=({"GPU": gpus_per_worker or 1, "CPU": cpus_per_worker}
                                  if d.use_gpu else {"CPU": cpus_per_worker})),
        torch_config=TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            storage_path=str(run_dir / "ray"), name=name, callbacks=[forwarder],
            # A worker group that cannot get its resources within start_timeout_s ends the
            # fit (Ray's default retries such a start forever: a lost node with no
            # replacement would hang the run); workers that fail are retried max_failures times.
            failure_config=ray.train.FailureConfig(max_failures=d.max_failures,
                                                   controller_failure_limit=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=d.keep_checkpoints),
            # Ray Train's controller narrates every worker-group step at INFO on the driver's
            # terminal; raybm's own lines say what matters.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            worker_runtime_env=_plugin_env(config.plugins)),
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err

    thread = threading.Thread(target=run, name="raybm-fit", daemon=True)
    copies: dict[str, Path] = {}  # Ray's checkpoint path -> its copy in <run>/checkpoints
    called = time.time()
    thread.start()
    try:
        while True:
            alive = thread.is_alive()
            item = forwarder.next(timeout=0.2 if alive else None)  # drain once it ended
            if item is None:
                if not alive:
                    break
                continue
            metrics, checkpoint = item
            copied = None
            if checkpoint is not None:
                copied = copies[checkpoint] = copy_checkpoint(Path(checkpoint), run_dir)
                forwarder.ack()  # the controller may now prune Ray's copy
            if on_report is not None:
                on_report(int(metrics.get("step", 0)), metrics, copied)
        thread.join()
    except KeyboardInterrupt:
        # Stop the workers where they are (their checkpoints are complete or ignored) and
        # hand the interruption on: the run ends KILLED with raybm's one line.
        ray.shutdown()
        raise
    finally:
        if ray.is_initialized():
            # Whatever ended the wait: the queues go (a controller still waiting on them
            # fails, which ends its run) and so does the workers' placement group.
            forwarder.shutdown()
            release_placement_groups(fit_dir)
    record_fit_times(run_dir, fit_dir, called, time.time())
    nodes = worker_nodes(fit_dir)
    if nodes:  # where the last worker group ran (the driver logs them as MLflow tags)
        atomic_write_text(run_dir / NODES_FILE, json.dumps(
            {str(rank): node for rank, node in nodes.items()}, indent=2))
    result = outcome.get("result")
    final = None
    if result is not None and result.checkpoint is not None:
        final = copies.get(result.checkpoint.path) or copy_checkpoint(
            Path(result.checkpoint.path), run_dir)
        set_latest(run_dir, final)
    raise_worker_error(fit_dir)  # after the copy: a diverged run keeps its last good state
    if "error" in outcome:
        err = outcome["error"]
        found = find_raybm_error(err)
        if found is not None:
            raise found from None
        raise RaybmError(f"distributed training failed: {_cause(err)}{_resume_hint(run_dir)}"
                         ) from err
    if final is None and resume is not None:
        final = resume
    if final is None:
        raise RaybmError("distributed training ended without a checkpoint")
    return final


def release_placement_groups(root: Path) -> int:
    """Remove the worker placement groups recorded under ``root`` (a fit's folder, or a run
    directory for all its fits); the number removed.

    Ray Train V2 creates each worker group's placement group from its controller actor, so the
    group lives as long as the *job*, not the controller: when Tune stops or pauses a trial
    (ASHA, a PBT exploit) the controller dies with the trial, and only Train's cleaner, which
    needs the dashboard's State API, would remove the group. Without it the CPUs stay reserved
    and the next trial's workers wait forever (seen here: two PBT trials on 2 workers each hung
    at their first restart). Rank 0 records its group's id; the sweep driver and each ended
    fit remove it.
    """
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    for path in sorted(Path(root).glob(f"**/{PLACEMENT_GROUP}")):
        try:
            pg = PlacementGroup(PlacementGroupID.from_hex(path.read_text().strip()))
            if ray.is_initialized():
                remove_placement_group(pg)
                removed += 1
        except Exception:  # already removed with its fit, or never created
            pass
        path.unlink(missing_ok=True)
    return removed


def record_ray_start(run_dir: Path, started: float, ended: float) -> None:
    """When this process started (or joined) Ray, in ``<run>/timings.json`` (the fits add
    theirs: benchmarks/cluster_startup.py sets them against the process's own start)."""
    update_timings(run_dir, lambda record: record.update(ray_started=started,
                                                         ray_start_s=ended - started))


def record_fit_times(run_dir: Path, fit_dir: Path, called: float, ended: float) -> None:
    """Append where one fit's time went to ``<run>/timings.json``: starting the worker group
    (until rank 0 had its data and trainer), training, and tearing the group down."""


    try:
        times = json.loads((fit_dir / TIMES).read_text())
    except (OSError, ValueError):  # the fit failed before rank 0 finished
        return
    first = times.get("first_update")
    fit = {"fit": fit_dir.name, "called": called, "group_start_s": times["ready"] - called,
           "workers_up_s": times["entered"] - called,  # controller, processes, imports
           "first_update_s": None if first is None else first - times["ready"],
           "train_s": times["done"] - times["ready"], "teardown_s": ended - times["done"]}
    update_timings(run_dir, lambda record: record.setdefault("fits", []).append(fit))


def _cause(err: BaseException) -> str:
    """Ray's failure in one line: the innermost cause, its first sentence."""
    while getattr(err, "controller_failure", None) is not None:  # Ray Train's ControllerError
        err = err.controller_failure
    lines = str(err).strip().splitlines() or [""]
    # A message that carries a remote traceback (a worker's failure) ends with the exception
    # line; any other message says what happened first (a start-up timeout, a lost node).
    line = lines[-1] if any(x.startswith("Traceback (most recent call last)") for x in lines) \
        else lines[0]
    return f"{type(err).__name__}: {line.split('. ')[0][:300]}"


def _resume_hint(run_dir: Path) -> str:
    """Where a failed fit can continue from (its newest complete checkpoint), as a command."""
    from raybm.checkpoint import find_checkpoint

    try:
        ckpt = find_checkpoint(run_dir)
    except RaybmError:
        return ""
    return (f"; the last complete checkpoint is {ckpt}: continue with raybm train --resume "
            f"{run_dir} (add --workers N to re-split the walkers over N workers)")


def copy_checkpoint(source: Path, run_dir: Path) -> Path:
    """Copy a Ray checkpoint into ``<run>/checkpoints/step_N`` atomically; point ``latest``."""
    target = run_dir / "checkpoints" / f"step_{checkpoint_step(source):08d}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    replace_directory(tmp, target)  # the same step again (a restarted group): the newer wins
    set_latest(run_dir, target)
    return target

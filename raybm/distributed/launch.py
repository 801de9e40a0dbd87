"""Starting Ray and the ``TorchTrainer`` that runs the walker shards (driver side).

Ray Train V2 (Ray 2.60): one ``TorchTrainer`` with ``distributed.workers`` workers, gloo on CPU
and NCCL with ``distributed.use_gpu``; ``FailureConfig(max_failures)`` restarts a failed worker
group from the last complete checkpoint. Ray persists checkpoints under ``<run>/ray`` (the
``storage_path`` is the run directory, so a stopped driver leaves them where ``--resume``
looks); the final one is copied atomically to ``<run>/checkpoints/step_N``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from raybm.checkpoint import checkpoint_step, set_latest
from raybm.config import Config
from raybm.errors import DivergenceError, RaybmError


def start_ray(workers: int, use_gpu: bool) -> str | None:
    """Start (or join, with ``RAY_ADDRESS``) Ray; None when ``workers`` can run, else why not."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a dependency
        return f"Ray is not importable ({err})"
    try:
        if not ray.is_initialized():
            # Without the dashboard there is no State API, and Ray Train's placement-group
            # cleaner warns about that every few seconds: actors log at ERROR (Ray's full logs
            # stay in /tmp/ray/session_latest/logs), raybm's own lines are written directly.
            ray.init(include_dashboard=False, configure_logging=True, logging_level="WARNING",
                     log_to_driver=True, logging_config=ray.LoggingConfig(log_level="ERROR"))
        resources = ray.cluster_resources()
    except Exception as err:  # Ray raises many kinds at start-up (ports, /dev/shm, ...)
        return f"Ray could not start ({type(err).__name__}: {str(err).splitlines()[0][:160]})"
    need = "GPU" if use_gpu else "CPU"
    have = int(resources.get(need, 0))
    if have < workers:
        return f"Ray has {have} {need}(s), {workers} workers need {workers}"
    return None


def fit(config: Config, run_dir: Path, run_id: str | None, tracking_uri: str,
        resume: Path | None = None) -> Path:
    """Train on ``distributed.workers`` Ray workers; the final checkpoint in ``run_dir``."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from raybm.distributed.worker import DIVERGED, parse_fault, train_worker

    fault = os.environ.get("RAYBM_FAULT_INJECT")
    parse_fault(fault)  # a malformed test hook is a one-line error here, not a crashed worker
    d = config.distributed
    run_dir = Path(run_dir).resolve()
    (run_dir / DIVERGED).unlink(missing_ok=True)
    cpus = max(int(ray.cluster_resources().get("CPU", 1)) // d.workers, 1) if not d.use_gpu else 1
    loop_config: dict[str, Any] = {
        "config": config.model_dump(), "run_dir": str(run_dir), "run_id": run_id,
        "tracking_uri": tracking_uri, "resume": None if resume is None else str(resume),
        "cpus_per_worker": cpus, "fault": fault,
    }
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=d.workers, use_gpu=d.use_gpu,
            resources_per_worker={"GPU": 1} if d.use_gpu else {"CPU": cpus}),
        torch_config=TorchConfig(backend="nccl" if d.use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            storage_path=str(run_dir), name="ray",
            failure_config=ray.train.FailureConfig(max_failures=d.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=d.keep_checkpoints)),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # Ray wraps worker errors (TrainingFailedError, ...)
        raise RaybmError(f"distributed training failed: {type(err).__name__}: "
                         f"{str(err).strip().splitlines()[-1][:300]}") from err
    final = None if result.checkpoint is None else Path(result.checkpoint.path)
    if final is not None:
        final = copy_checkpoint(final, run_dir)
    elif resume is not None:
        final = resume
    diverged = run_dir / DIVERGED
    if diverged.exists():
        raise DivergenceError(diverged.read_text().strip())
    if final is None:
        raise RaybmError("distributed training ended without a checkpoint")
    return final


def copy_checkpoint(source: Path, run_dir: Path) -> Path:
    """Copy a Ray checkpoint into ``<run>/checkpoints/step_N`` atomically; point ``latest``."""
    target = run_dir / "checkpoints" / f"step_{checkpoint_step(source):08d}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        os.replace(tmp, target)
    set_latest(run_dir, target)
    return target

"""Ray Tune's overhead on a sweep of short digits jobs, and where it goes.

    python benchmarks/tune_overhead.py --trials 8 --updates 300 --concurrency 2 --workers 0 2

For each ``--workers`` value it runs one sweep of ``--trials`` F&F-10 trials on digits (a grid
of learning rates, FIFO, ``--concurrency`` at a time, in a fresh Ray), then sets the sweep's wall
time against the sum of the trials' own training times (fit + end-of-run evaluation, measured
inside each trial; for trials on Ray workers, the workers' training only) at the same
concurrency:

    overhead per trial = (wall - sum(own) / concurrency) * concurrency / trials

and splits it by the timings raybm records (``<sweep>/timings.json``, ``<trial>/timings.json``):
Ray's start (once per sweep), a trial's start (Tune starting its process until the trial
function runs), the trial's set-up (config, data), MLflow (every tracking call of the trial
process), the worker group's start and teardown (Ray Train), and Tune's reporting. The peer
in the same run: the same job as one ``raybm train`` in this process (``train_run``), no Ray.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml

JOB = {"model": {"n_hidden": 64}, "algorithm": {"name": "kstep", "k": 10},
       "train": {"batch_size": 100, "log_every": 50, "checkpoint_every": 100,
                 "eval_t": [1, 10], "eval_samples": 300, "eval_k_long": 50, "threads": 1}}


def base_config(updates: int, workers: int) -> dict:
    job = json.loads(json.dumps(JOB))
    job["train"]["n_updates"] = updates
    job["distributed"] = {"workers": workers}
    return job


def run_sweep(root: Path, trials: int, updates: int, concurrency: int, workers: int) -> dict:
    import ray

    from raybm.tuning.sweep import tune_sweep

    if ray.is_initialized():
        ray.shutdown()  # every sweep pays Ray's start, as a user's does
    lrs = [round(0.01 + 0.01 * i, 4) for i in range(trials)]
    cpus = 1.0 if workers == 0 else round(0.98 / workers, 2)
    space = root / f"space-w{workers}.yaml"
    space.write_text(yaml.safe_dump({
        "name": f"overhead-w{workers}", "base": base_config(updates, workers),
        "param_space": {"optimizer.lr": {"grid_search": lrs}}, "metric": "test_accuracy",
        "mode": "max", "max_concurrent_trials": concurrency,
        "resources": {"workers": workers, "cpus_per_worker": cpus}}))
    summary = tune_sweep(space, [f"tracking.uri=sqlite:///{root / 'mlflow.db'}"],
                         out=root / f"sweep-w{workers}")
    return analyse(summary.sweep_dir, concurrency)


def analyse(sweep_dir: Path, concurrency: int) -> dict:
    sweep = json.loads((sweep_dir / "timings.json").read_text())
    rows = []
    for trial_dir in sorted((sweep_dir / "trials").iterdir()):
        t = json.loads((trial_dir / "timings.json").read_text())
        start = t["starts"][-1]
        fits = t.get("fits", [])
        group = sum(f["group_start_s"] for f in fits)
        teardown = sum(f["teardown_s"] for f in fits)
        train = sum(f["train_s"] for f in fits) if fits else start["fit_s"]
        launched = sweep["trial_started"][trial_dir.name][-1]
        rows.append({
            "own": train + start["evaluate_s"],
            "trial_start": start["entered"] - launched,
            "setup": start["plan_s"],
            "mlflow": start["mlflow_s"],
            "group_start": group, "teardown": teardown,
            "report": start.get("report_s", 0.0),
        })
    n = len(rows)
    own = sum(r["own"] for r in rows)
    wall = sweep["wall_s"]
    per_trial = (wall - own / concurrency) * concurrency / n
    parts = {k: statistics.mean(r[k] for r in rows)
             for k in ("trial_start", "setup", "mlflow", "group_start", "teardown", "report")}
    parts["ray_start"] = sweep["ray_start_s"] * concurrency / n
    parts["other (Tune scheduling, process exit)"] = per_trial - sum(parts.values())
    return {"trials": n, "wall_s": wall, "own_mean_s": own / n, "ideal_s": own / concurrency,
            "overhead_per_trial_s": per_trial, "parts": parts}


def peer(root: Path, updates: int) -> float:
    """The same job once, as ``raybm train`` runs it in-process (no Ray, no Tune)."""
    from raybm.config import config_from
    from raybm.run import train_run

    config = config_from(base_config(updates, 0), "peer",
                         [f"tracking.uri=sqlite:///{root / 'mlflow.db'}", "optimizer.lr=0.05",
                          "train.progress=false"])
    t0 = time.perf_counter()
    train_run(config, out=root / "peer")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--updates", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--out", help="keep the sweeps here (default: a temporary directory)")
    args = p.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="raybm-tune-overhead-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    peer_s = peer(root, args.updates)
    print(f"peer: one `raybm train` of the job in-process: {peer_s:.1f} s")
    for workers in args.workers:
        r = run_sweep(root, args.trials, args.updates, args.concurrency, workers)
        where = "in the trial process" if workers == 0 else f"on {workers} Ray workers each"
        print(f"\nworkers {workers} ({where}): {r['trials']} trials, {args.concurrency} at a "
              f"time; wall {r['wall_s']:.1f} s, own training {r['own_mean_s']:.1f} s a trial "
              f"(ideal wall {r['ideal_s']:.1f} s); overhead {r['overhead_per_trial_s']:.1f} s "
              "a trial:")
        for name, value in r["parts"].items():
            print(f"  {name:40s} {value:6.2f} s")
    print(f"\nsweeps kept in {root}")


if __name__ == "__main__":
    main()

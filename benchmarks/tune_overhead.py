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
    """Where the sweep's ``wall x concurrency`` trial slots went.

    Each trial's slot is rebuilt from the times recorded on both sides: a trial enters its
    function (``entered``, in the trial process) some time after its slot was freed (Tune's
    start of the trial run, or the end of the previous trial in that slot: the launch gap, a
    new process importing torch, Ray and raybm), runs set-up, fit and evaluation, and ends when
    the driver hears it has (``trial_ended``).
    """
    sweep = json.loads((sweep_dir / "timings.json").read_text())
    trials = []
    for trial_dir in sorted((sweep_dir / "trials").iterdir()):
        t = json.loads((trial_dir / "timings.json").read_text())
        start = t["starts"][-1]
        fits = t.get("fits", [])
        train = sum(f["train_s"] for f in fits) if fits else start["fit_s"]
        trials.append({
            "entered": start["entered"], "ended": sweep["trial_ended"][trial_dir.name],
            "own": train + start["evaluate_s"],
            "setup": start["plan_s"] + start["open_s"],
            "group_start": sum(f["group_start_s"] for f in fits),
            "teardown": sum(f["teardown_s"] for f in fits),
            "report": start.get("report_s", 0.0), "mlflow": start["mlflow_s"],
            "laps": start["plan_s"] + start["open_s"] + start["fit_s"] + start["evaluate_s"],
        })
    slots = [sweep["fit_started"]] * concurrency
    for trial in sorted(trials, key=lambda r: r["entered"]):
        # The slot this trial took: the one freed most recently before it entered.
        i = max((j for j in range(concurrency) if slots[j] <= trial["entered"]),
                key=lambda j: slots[j], default=min(range(concurrency), key=lambda j: slots[j]))
        trial["launch"] = max(trial["entered"] - slots[i], 0.0)
        trial["exit"] = trial["ended"] - trial["entered"] - trial["laps"]
        slots[i] = trial["ended"]
    n = len(trials)
    own = sum(r["own"] for r in trials)
    wall = sweep["wall_s"]
    per_trial = (wall - own / concurrency) * concurrency / n
    parts = {
        "Ray start (once a sweep)": sweep["ray_start_s"] * concurrency / n,
        "driver: validation, parent run, best config":
            (wall - sweep["ray_start_s"] - (sweep["fit_ended"] - sweep["fit_started"]))
            * concurrency / n,
        "trial start (process, imports)": statistics.mean(r["launch"] for r in trials),
        "trial set-up (config, data, MLflow run)": statistics.mean(r["setup"] for r in trials),
        "worker group start (Ray Train)": statistics.mean(r["group_start"] for r in trials),
        "worker group teardown": statistics.mean(r["teardown"] for r in trials),
        "trial end (final report, exit)": statistics.mean(r["exit"] for r in trials),
    }
    parts["Tune's run: idle slots, the last trials' tail"] = per_trial - sum(parts.values())
    return {"trials": n, "wall_s": wall, "own_mean_s": own / n, "ideal_s": own / concurrency,
            "overhead_per_trial_s": per_trial, "parts": parts,
            "mlflow_s": statistics.mean(r["mlflow"] for r in trials),
            "report_s": statistics.mean(r["report"] for r in trials)}


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
    for workers in args.workers:
        r = run_sweep(root, args.trials, args.updates, args.concurrency, workers)
        where = "in the trial process" if workers == 0 else f"on {workers} Ray workers each"
        print(f"\nworkers {workers} ({where}): {r['trials']} trials, {args.concurrency} at a "
              f"time; wall {r['wall_s']:.1f} s, own training {r['own_mean_s']:.1f} s a trial "
              f"(ideal wall {r['ideal_s']:.1f} s); overhead {r['overhead_per_trial_s']:.1f} s "
              "a trial:")
        for name, value in r["parts"].items():
            print(f"  {name:48s} {value:6.2f} s")
        print(f"  (inside the trials, of their own time: MLflow calls {r['mlflow_s']:.2f} s, "
              f"Tune reports {r['report_s']:.2f} s)")
    # After the sweeps: the tracking store exists, as it does for a user's second run.
    peer_s = peer(root, args.updates)
    print(f"\npeer: the same job as one `raybm train` in this process (no Ray): {peer_s:.1f} s "
          "(plan, MLflow run, training, evaluation)")
    print(f"sweeps kept in {root}")


if __name__ == "__main__":
    main()

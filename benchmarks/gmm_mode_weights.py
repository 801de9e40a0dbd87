"""Mode weights of a Gaussian mixture in d = 50: Jarzynski against PCD and CD (research
reproduction 1 of issue 8).

The study of Carbone, Hua, Coste, Vanden-Eijnden 2023 (arXiv 2305.19414, "Efficient Training of
Energy-Based Models Using Jarzynski Equality", section 4.1 and its GMM code): data from two
unit-variance Gaussians at -10 e1 and +6 e1 with weights 1/4 and 3/4; a student of the same
family with trainable means and log-weights, starting at equal weights with both means near
the origin; 10^4 walkers, one ULA step of 0.1 per update, 8,000 full-batch updates. ULA
walkers cannot cross between modes 16 standard deviations apart, so the minor mode's weight
is what separates the methods. The research's figures: Jarzynski ends at 0.24-0.25 (resampling
when CV^2 > 0.4), PCD drifts towards 0, CD stays near 0.47.

Each run is ``raybm train configs/gmm50_<method>.yaml`` exactly as a user runs it (a
subprocess; ``--workers 2`` puts the walkers on two Ray Train workers), tracked in one MLflow
SQLite store under ``--out``; the curves are read back from MLflow. Reported per run: the
weight of the minor mode (the component whose mean ends at negative e1) at the end, and for
Jarzynski the running log Z against the student's exact log Z along the run.

    python benchmarks/gmm_mode_weights.py [--methods jarzynski pcd cd] [--seeds 0 1 2]
        [--workers 0 2] [--updates 8000] [--jobs 2] [--out bench-out/gmm]

``--jobs``: in-process runs (0 workers) run this many at a time, one thread each; Ray runs
(workers > 0) one at a time, since each takes the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"jarzynski": "0.24-0.25", "pcd": "-> 0", "cd": "~0.47"}
TRUE_MINOR = 0.25


def run_one(method: str, seed: int, workers: int, updates: int, out: Path) -> dict:
    """Train one student with the CLI; its curves and figures from MLflow."""
    name = f"{method}-w{workers}-s{seed}"
    run_dir = out / "runs" / name
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    cmd = [sys.executable, "-m", "raybm.cli", "train", str(ROOT / f"configs/gmm50_{method}.yaml"),
           "--out", str(run_dir), "--set", f"train.seed={seed}",
           "--set", f"train.n_updates={updates}", "--set", f"distributed.workers={workers}",
           "--set", "train.threads=1", "--set", "train.progress=false",
           "--set", f"tracking.uri={uri}", "--set", "tracking.experiment=gmm_mode_weights",
           "--set", f"tracking.run_name={name}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"method": method, "seed": seed, "workers": workers, "seconds": seconds,
            **curves(uri, name, run_dir)}


def curves(uri: str, name: str, run_dir: Path) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("gmm_mode_weights").experiment_id],
        filter_string=f"attributes.run_name = '{name}'")

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    w0 = history("mode_weight_0")
    log_z, exact = dict(history("log_z")), dict(history("log_z_exact"))
    # mode_weight_0 is the weight of the data's first mode (-10 e1, the minor one): the
    # student's components are matched to the data's modes (metrics.modes); the component
    # whose mean ends at negative e1 is kept in the record as a cross-check.
    minor = minor_component(run_dir)
    weights = w0
    z_err = [log_z[s] - exact[s] for s in sorted(log_z) if s in exact]
    return {"minor_component": minor, "minor_weight": weights[-1][1],
            "minor_curve": weights, "log_z_error_final": z_err[-1] if z_err else None,
            "log_z_error_max": max((abs(e) for e in z_err), default=None),
            "log_z_final": log_z[max(log_z)] if log_z else None,
            "log_z_exact_final": exact[max(exact)] if exact else None}


def minor_component(run_dir: Path) -> int:
    """The component whose mean's first coordinate is lowest in the run's last checkpoint."""
    from raybm.checkpoint import load_checkpoint

    return int(load_checkpoint(run_dir).model.means.detach()[:, 0].argmin())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["jarzynski", "pcd", "cd"],
                        choices=["jarzynski", "pcd", "cd"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--updates", type=int, default=8000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/gmm"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [(m, s, w) for w in args.workers for m in args.methods for s in args.seeds]
    print(f"GMM d=50 minor-mode weight (truth {TRUE_MINOR}), {args.updates} updates, "
          f"runs and MLflow store under {args.out}")
    print("| workers | method | seed | minor weight | research | log Z - exact (end) "
          "| max abs log Z error | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    results = []

    def report(r: dict) -> None:
        results.append(r)
        zf = "" if r["log_z_error_final"] is None else f"{r['log_z_error_final']:+.3f}"
        zm = "" if r["log_z_error_max"] is None else f"{r['log_z_error_max']:.3f}"
        print(f"| {r['workers']} | {r['method']} | {r['seed']} | {r['minor_weight']:.3f} | "
              f"{TARGETS[r['method']]} | {zf} | {zm} | {r['seconds']:.0f} |", flush=True)

    local = [t for t in todo if t[2] == 0]
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        for r in pool.map(lambda t: run_one(*t, args.updates, args.out), local):
            report(r)
    for t in [t for t in todo if t[2] > 0]:
        report(run_one(*t, args.updates, args.out))
    print("\n| workers | method | minor weight, mean +- sd over seeds | research |")
    print("|---|---|---|---|")
    for w in args.workers:
        for m in args.methods:
            v = [r["minor_weight"] for r in results if r["method"] == m and r["workers"] == w]
            if v:
                sd = statistics.stdev(v) if len(v) > 1 else math.nan
                print(f"| {w} | {m} | {statistics.mean(v):.3f} +- {sd:.3f} (n={len(v)}) | "
                      f"{TARGETS[m]} |")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

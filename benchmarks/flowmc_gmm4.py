"""FlowMC-EBM on mixtures of 4 Gaussians in d = 16, 32, 64 against ULA-PCD (issue 18,
acceptance 1 and 3).

The study of Grenioux, Moulines, Gabrié 2023 (arXiv 2306.00684, "Balanced training of
energy-based models with adaptive flow sampling", section 5.1): a mixture whose modes are far
apart for Langevin chains, with unequal weights (0.1, 0.2, 0.3, 0.4) and unequal widths (0.6,
0.8, 1.0, 1.2), means in general position in three coordinates of d. The student is the same
parametric family (trainable means, log-weights, widths; means at k-means centres). Runs:

- ``flowmc``: ``configs/flowmc_gmm4_d<d>.yaml``: FlowMC walkers (1 flow-IMH + 10 MALA per
  update), MAF flow fitted on them, 2 flow steps per energy step;
- ``ula``: ``configs/ula_pcd_gmm4_d32.yaml`` at dimension d: PCD whose walkers take 11 ULA
  steps per update (as many gradient evaluations), started at the data;
- ``unfitted``: the FlowMC run with the flow never fitted (its learning rate 1e-12 and no
  warm-up): the ablation that must fail;
- ``mlp``: ``configs/flowmc_gmm4_d64_mlp.yaml`` at dimension d (shipped for 64): the MLP
  energy on a Gaussian base, whose weights are read from frozen chains and by importance
  sampling through the flow (3,000 updates, a 3-layer MAF);
- ``mismatched``: the energy's learning rate 100 times the shipped one (1.0) and the flow's
  0.3 times (``lr_ratio`` 3e-4): the mismatch the run must report. (30 times the energy's
  rate against the shipped flow rate was still matched enough: error 0.012, no window below
  the floor.) Such a run may end in a divergence, which is recorded, not raised.

Each is ``raybm train`` as a user runs it (a subprocess; ``--workers 2`` puts the walkers on
two Ray Train workers), tracked in one MLflow SQLite store under ``--out``. Reported per run,
from its ``summary.json`` and MLflow: the largest mode-weight error of the energy, the frozen
chains' R-hat (100 rounds from the final walkers, the energy fixed) and their mode-weight
error, the smallest IMH acceptance over the 50-update log windows (from the first and from
the fifth window), how many windows were flagged as the flow lagging, and the wall time.

    python benchmarks/flowmc_gmm4.py [--dims 16 32 64] [--seeds 0 1 2] [--workers 0]
        [--runs flowmc ula] [--jobs 2] [--out bench-out/flowmc_gmm4]

``--jobs``: in-process runs run this many at a time, one thread each; Ray runs one at a time.
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
EXPERIMENT = "flowmc_gmm4"
RUNS = ("flowmc", "ula", "unfitted", "mismatched", "mlp")


def command(run: str, dim: int, seed: int, workers: int, run_dir: Path, uri: str,
            name: str, updates: int | None) -> list[str]:
    config = ROOT / {"ula": "configs/ula_pcd_gmm4_d32.yaml",
                     "mlp": "configs/flowmc_gmm4_d64_mlp.yaml"}.get(
                         run, f"configs/flowmc_gmm4_d{dim}.yaml")
    sets = [f"data.mixture.dim={dim}", f"train.seed={seed}", f"distributed.workers={workers}",
            "train.threads=1", "train.progress=false", f"tracking.uri={uri}",
            f"tracking.experiment={EXPERIMENT}", f"tracking.run_name={name}"]
    if updates is not None:
        sets.append(f"train.n_updates={updates}")
    if run == "unfitted":
        sets += ["optimizers.flow.lr_ratio=1e-10", "algorithm.flow_warmup=0"]
    if run == "mismatched":
        sets += ["optimizer.lr=1.0", "optimizers.flow.lr_ratio=0.0003"]
    return [sys.executable, "-m", "raybm.cli", "train", str(config), "--out", str(run_dir),
            *[a for s in sets for a in ("--set", s)]]


def run_one(run: str, dim: int, seed: int, workers: int, out: Path,
            updates: int | None) -> dict:
    name = f"{run}-d{dim}-w{workers}-s{seed}"
    run_dir = out / "runs" / name
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    t0 = time.perf_counter()
    proc = subprocess.run(command(run, dim, seed, workers, run_dir, uri, name, updates),
                          capture_output=True, text=True, cwd=out)
    seconds = time.perf_counter() - t0
    diverged = proc.returncode != 0 and "training diverged" in proc.stderr
    if proc.returncode != 0 and not (diverged and run == "mismatched"):
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = {} if diverged else json.loads((run_dir / "summary.json").read_text())
    windows = history(uri, name, "imh_acceptance_window")
    lagging = history(uri, name, "flow_lagging")
    warnings = proc.stderr.count("the flow is not keeping up")
    return {"run": run, "dim": dim, "seed": seed, "workers": workers, "seconds": seconds,
            "error": summary.get("mode_weight_error"),
            "weights": [summary.get(f"mode_weight_{k}") for k in range(4)],
            "rhat": summary.get("rhat"), "rhat_mode": summary.get("rhat_mode"),
            "chain_error": summary.get("chain_mode_weight_error"),
            "is_error": summary.get("is_mode_weight_error"), "is_ess": summary.get("is_ess"),
            "imh_min": min(windows, default=None),
            "imh_min_after_4": min(windows[4:], default=None),
            "imh_last": windows[-1] if windows else None,
            "lagging_windows": int(sum(lagging)), "warnings": warnings,
            "diverged": proc.stderr.strip().splitlines()[-1] if diverged else None}


def history(uri: str, name: str, key: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string=f"attributes.run_name = '{name}'")
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key),
                                    key=lambda m: m.step)]


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", default=["flowmc", "ula"], choices=RUNS)
    parser.add_argument("--updates", type=int, default=None, help="default: the config's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/flowmc_gmm4"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(r, d, s, w) for w in args.workers for d in args.dims for r in args.runs
            for s in args.seeds]
    local = [j for j in jobs if j[3] == 0]
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        results += pool.map(lambda j: run_one(*j, args.out, args.updates), local)
    results += [run_one(*j, args.out, args.updates) for j in jobs if j[3] > 0]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"4-Gaussian mixture, weights 0.1/0.2/0.3/0.4, widths 0.6-1.2; "
          f"{args.updates or 'the configs'} updates")
    print("| run | d | workers | seed | weight error | weights | R-hat (frozen) | chains' "
          "error | IS error (ESS) | IMH min window (from 5th) | lagging windows | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        weights = "/".join(fmt(w, 3) for w in r["weights"])
        is_part = (f"{fmt(r['is_error'])} ({fmt(r['is_ess'], 2)})"
                   if r["is_error"] is not None else "-")
        if r["diverged"]:
            print(f"| {r['run']} | {r['dim']} | {r['workers']} | {r['seed']} | {r['diverged']} "
                  f"| | | | | {fmt(r['imh_min'])} | {r['lagging_windows']} "
                  f"({r['warnings']} warnings) | {r['seconds']:.0f} |")
            continue
        print(f"| {r['run']} | {r['dim']} | {r['workers']} | {r['seed']} | {fmt(r['error'])} "
              f"| {weights} | {fmt(r['rhat'])} | {fmt(r['chain_error'])} | {is_part} "
              f"| {fmt(r['imh_min'])} ({fmt(r['imh_min_after_4'])}) | {r['lagging_windows']} "
              f"| {r['seconds']:.0f} |")
    print("\n| run | d | workers | max weight error over seeds | mean +- sd | worst R-hat |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["run"], r["dim"], r["workers"]), []).append(r)
    for (run, dim, workers), rs in groups.items():
        rs = [r for r in rs if not r["diverged"]]
        if not rs:
            continue
        errors = [r["error"] for r in rs]
        sd = statistics.stdev(errors) if len(errors) > 1 else 0.0
        print(f"| {run} | {dim} | {workers} | {max(errors):.3f} | "
              f"{statistics.mean(errors):.3f} +- {sd:.3f} | "
              f"{fmt(max(r['rhat'] for r in rs))} |")


if __name__ == "__main__":
    main()

"""FlowMC-EBM against Langevin-trained energies on 2-D sets with unequal mode weights (issue
18, acceptance 2).

The sets: ``two_modes`` (weights 0.2 / 0.8 at (-2, 0) and (2, 0), std 0.5) and FFJORD's
``8gaussians`` with weights 1 : 2 : ... : 8 (0.028 to 0.222). One energy for every method: the
MLP 128-128 on a Gaussian base of ``configs/flowmc_toy2d_<set>.yaml``, Adam 1e-3 decaying
linearly over the second half, 512 walkers, 2,000 updates. The methods, at the same number of
energy evaluations per update (FlowMC: 1 flow-IMH + 10 MALA steps; the others 11 ULA steps):

- ``flowmc``: the shipped config (a spline flow fitted on the walkers, 2 flow steps);
- ``ula_pcd``: PCD whose walkers take 11 ULA steps per update, started at the data;
- ``short_run``: 11 ULA steps from the kernel's N(0, I) start, restarted every update
  (``algorithm.name: kstep``, short-run / non-persistent training);
- ``jarzynski``: Jarzynski-weighted ULA walkers (11 steps per update), resampled when the
  ESS falls below half (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414).

ULA's step is ``--ula-step`` (default 0.02: its bias, ~h / (2 std^2) in a mode's variance, is
under 10% for the narrower set). Each run is ``raybm train`` as a user runs it (a subprocess
on a config written under ``--out``), tracked in one MLflow store. Read from each run's
``summary.json``: the energy's own mode weights by quadrature on a 300 x 300 grid
(``mode_weight_<k>``, the data's order) and their largest error, the test log-likelihood by
quadrature, the frozen chains' R-hat where the run has persistent walkers. The learned
densities side by side: ``<out>/densities_<set>.png`` (the data's density, each method's
energy, FlowMC's flow), one row per seed.

    python benchmarks/flowmc_toy2d.py [--sets two_modes 8gaussians] [--seeds 0 1 2]
        [--methods flowmc ula_pcd short_run jarzynski] [--jobs 2] [--out bench-out/flowmc_toy2d]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from flowmc_gmm4 import fmt  # a sibling script (benchmarks/ is the script's directory)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "flowmc_toy2d"
SETS = ("two_modes", "8gaussians")
METHODS = ("flowmc", "ula_pcd", "short_run", "jarzynski")
# Energy evaluations per update of FlowMC: 1 IMH step (the energy at the proposals) and 10
# MALA steps (energy and gradient at each proposal); the Langevin baselines take as many.
STEPS = 11


def method_config(set_name: str, method: str, ula_step: float) -> dict:
    """The shipped FlowMC config of ``set_name`` with the sampler and estimator of
    ``method`` (data, energy, optimizer and budget unchanged)."""
    config = yaml.safe_load((ROOT / f"configs/flowmc_toy2d_{set_name}.yaml").read_text())
    if method == "flowmc":
        return config
    walkers = config["algorithm"]["n_walkers"]
    config["sampler"] = {"name": "ula", "step_size": ula_step}
    config["algorithm"] = {
        "ula_pcd": {"name": "pcd", "k": STEPS, "n_walkers": walkers, "walker_init": "data"},
        "short_run": {"name": "kstep", "k": STEPS},
        "jarzynski": {"name": "jarzynski", "k": STEPS, "n_walkers": walkers,
                      "ess_threshold": 0.5},
    }[method]
    config.pop("optimizers", None)  # no flow to train
    return config


def run_one(set_name: str, method: str, seed: int, out: Path, ula_step: float,
            updates: int | None) -> dict:
    name = f"{method}-{set_name}-s{seed}"
    config_path = out / "configs" / f"{method}_{set_name}.yaml"
    run_dir = out / "runs" / name
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    sets = [f"train.seed={seed}", "train.threads=1", "train.progress=false",
            f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}",
            f"tracking.run_name={name}"]
    if updates is not None:
        sets.append(f"train.n_updates={updates}")
    command = [sys.executable, "-m", "raybm.cli", "train", str(config_path), "--out",
               str(run_dir), *[a for s in sets for a in ("--set", s)]]
    t0 = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=out)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        return {"set": set_name, "method": method, "seed": seed, "seconds": seconds,
                "failed": last, "run_dir": str(run_dir)}
    summary = json.loads((run_dir / "summary.json").read_text())
    n_modes = len(yaml.safe_load(config_path.read_text())["data"]["toy"]["weights"])
    return {"set": set_name, "method": method, "seed": seed, "seconds": seconds,
            "failed": None, "run_dir": str(run_dir),
            "error": summary.get("mode_weight_error"),
            "weights": [summary.get(f"mode_weight_{k}") for k in range(n_modes)],
            "test_loglik": summary.get("test_loglik_grid"), "rhat": summary.get("rhat"),
            "imh": summary.get("imh_acceptance")}


def densities(set_name: str, results: list[dict], out: Path) -> Path:
    """``<out>/densities_<set>.png``: per seed, the data's density and each method's learned
    one (grid quadrature), and FlowMC's flow."""
    import torch

    from raybm.data.continuous import gaussian_mixture_logprob
    from raybm.data.load import load_data
    from raybm.metrics.continuous import GRID_POINTS, grid_cells, grid_extent, grid_log_density
    from raybm.metrics.plots import density_panels
    from raybm.run import load_run
    from raybm.sampling import run_flow, run_modules

    rows, extent = [], None
    for seed in sorted({r["seed"] for r in results if r["set"] == set_name}):
        row = []
        for r in results:
            if r["set"] != set_name or r["seed"] != seed or r["failed"]:
                continue
            config, ckpt = load_run(r["run_dir"])
            if extent is None:
                train, _ = load_data(config)
                extent = grid_extent(train)
                points, cell = grid_cells(extent, GRID_POINTS)
                info = train.info
                means = torch.tensor(info.get("centers") or [
                    [info["radius"] * math.cos(k * math.pi / 4),
                     info["radius"] * math.sin(k * math.pi / 4)] for k in range(8)])
                truth = gaussian_mixture_logprob(points.float(), means,
                                                 torch.tensor(info["weights"]), info["std"])
                data_panel = ("data", truth.double().reshape(GRID_POINTS, GRID_POINTS).numpy())
            if not row:
                row.append((f"data (seed {seed})", data_panel[1]))
            log_density, _, _ = grid_log_density(ckpt.model, extent)
            row.append((f"{r['method']}: error {r['error']:.3f}", log_density.numpy()))
            flow = run_flow(config, run_modules(config, ckpt))
            if flow is not None:
                with torch.no_grad():
                    lq = torch.cat([flow.log_prob(c.float()).double()
                                    for c in points.split(10_000)])
                row.append(("its flow", lq.reshape(GRID_POINTS, GRID_POINTS).numpy()))
        if row:
            rows.append(row)
    path = out / f"densities_{set_name}.png"
    if rows:
        density_panels(rows, extent, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ula-step", type=float, default=0.02)
    parser.add_argument("--updates", type=int, default=None, help="default: the config's")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/flowmc_toy2d"))
    parser.add_argument("--report", action="store_true",
                        help="print the tables and draw the figures of the runs in --out")
    args = parser.parse_args()
    if args.report:
        report(json.loads((args.out / "results.json").read_text()), args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "configs").mkdir(exist_ok=True)
    for set_name in args.sets:
        for method in args.methods:
            text = yaml.safe_dump(method_config(set_name, method, args.ula_step),
                                  sort_keys=False)
            (args.out / "configs" / f"{method}_{set_name}.yaml").write_text(text)
    jobs = [(s, m, seed) for s in args.sets for seed in args.seeds for m in args.methods]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(
            lambda j: run_one(*j, args.out, args.ula_step, args.updates), jobs))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report(results, args)


def report(results: list[dict], args: argparse.Namespace) -> None:
    """The tables of ``results`` and, per set, the densities side by side."""
    print(f"2-D sets with unequal mode weights; {args.updates or 'the configs'} updates; "
          f"ULA step {args.ula_step}; {STEPS} energy evaluations per update for every method")
    print("| set | method | seed | weight error | weights | test log-lik (grid) | R-hat "
          "(frozen) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if r["failed"]:
            print(f"| {r['set']} | {r['method']} | {r['seed']} | failed: {r['failed']} "
                  f"| | | | {r['seconds']:.0f} |")
            continue
        weights = "/".join(fmt(w, 3) for w in r["weights"])
        print(f"| {r['set']} | {r['method']} | {r['seed']} | {fmt(r['error'])} | {weights} "
              f"| {fmt(r['test_loglik'])} | {fmt(r['rhat'])} | {r['seconds']:.0f} |")
    print("\n| set | method | weight error, worst over seeds | mean |")
    print("|---|---|---|---|")
    for set_name in sorted({r["set"] for r in results}, key=SETS.index):
        for method in sorted({r["method"] for r in results}, key=METHODS.index):
            errors = [r["error"] for r in results if r["set"] == set_name
                      and r["method"] == method and not r["failed"]]
            if errors:
                print(f"| {set_name} | {method} | {max(errors):.3f} | "
                      f"{sum(errors) / len(errors):.3f} |")
        print(f"densities: {densities(set_name, results, args.out)}")


if __name__ == "__main__":
    main()

"""DCD-VE against CD-k and PCD-k on the seven 2-D sets (issue 19, acceptance 1, 3 and 6).

One MLP energy for every method (2-128-128-128-1, SiLU, the Gaussian base ``|x|^2 / 2``),
Adam, batch 1,000, 1,000 updates, as the issue's calibration. Per set and method:

1. **Sweep** with ``raybm tune`` (Optuna, ``--trials`` trials, two at a time, one thread
   each) on a *validation* draw of the set (``data.toy.seed: 1``, independent of the test
   data; its held-out tenth scores the trials), ranked on ``sm_loss_test``, the held-out
   Hyvarinen score-matching loss ``<|grad E|^2 / 2 - Lap E>`` (exact Laplacian; lower is
   better; it does not depend on a method's own scales, so all trials compare):
   - DCD-VE (heat-equation route): ``algorithm.sigma`` in the data's width, and the lr;
   - CD-k and PCD-k (ULA from the data / persistent ULA walkers started at the data, as many
     as the batch): ``algorithm.k`` in 1..20, ``sampler.step_size`` in [0.001, 0.03] and
     the lr. (A first sweep over steps in [0.001, 0.3] lost 3 of its 4 trials on 8 Gaussians,
     every step above 0.05, and all 4 on pinwheel, steps 0.011 to 0.16, to energies that ran
     away, held-out loss 1e12 to 1e18: the range is where ULA on these energies is stable. On rings, whose
     rings are thin, every trial ran away in it too; that set's CD-k and PCD-k were swept
     again over steps 10 times smaller, ``--step-range 0.0003 0.01``, which the report
     names.)
2. **Final runs**: the sweep's best config (``best_config.yaml``) trained on the test draw
   (``data.toy.seed: 0``) with train seeds ``--seeds``, scored on its held-out tenth; a run
   that stops on a non-finite loss or parameter counts as diverged.
3. **Defaults**: DCD-VE at its default settings (``configs/dcd_toy2d_8gaussians.yaml`` with
   only the set changed) for the same seeds: must never diverge.
4. **Report**: per set the mean and spread of the test ``sm_loss_test`` over seeds; DCD-VE
   against PCD (lower wins; a method with a diverged seed loses) and against CD by the
   issue's SM ratio ``SM_dcd / SM_cd`` (the losses are negative here: the share of CD's loss
   DCD-VE reaches, >= 0.5 asked; above 1, DCD-VE is better) and, stricter, by the ratio of
   improvements over the ``N(0, I)`` reference (``E = |x|^2 / 2``, whose loss is ``<|x|^2> /
   2 - 2`` in closed form) ``(SM_ref - SM_dcd) / (SM_ref - SM_cd)``; the chosen settings; a
   grid of learned densities
   (seed 0) beside the data; ``--configs DIR`` writes the shipped
   ``{dcd,cd,pcd}_toy2d_<set>.yaml`` at the chosen settings.

Every stage is resumable: results go to ``OUT/results.json`` as they come; a sweep or run
already there is not repeated. Runs of the study must not share the machine with other jobs.

    python benchmarks/dcd_toy2d.py --out study [--sets 8gaussians moons] [--trials 6]
        [--seeds 0 1 2] [--stages sweep final defaults report] [--configs configs]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.threads import cpu_model  # noqa: E402
from raybm.config import load_config  # noqa: E402

SETS = ("8gaussians", "rings", "moons", "swissroll", "checkerboard", "pinwheel", "2spirals")
METHODS = ("dcd", "cd", "pcd")
ROOT = Path(__file__).resolve().parents[1]

COMMON = {
    "data": {"format": "toy2d", "toy": {"n_samples": 10000}, "test_fraction": 0.1},
    "model": {"kind": "mlp", "widths": [128, 128, 128], "activation": "silu"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "train": {"n_updates": 1000, "batch_size": 1000, "log_every": 100,
              "checkpoint_every": 1000, "threads": 1},
    "distributed": {"workers": 0},
}
ALGORITHMS = {
    "dcd": {"algorithm": {"name": "dcd_ve", "route": "taylor"},
            "sampler": {"name": "ula", "step_size": 0.005}},
    "cd": {"algorithm": {"name": "cd", "k": 5}, "sampler": {"name": "ula", "step_size": 0.01}},
    "pcd": {"algorithm": {"name": "pcd", "k": 5, "n_walkers": 1000, "walker_init": "data"},
            "sampler": {"name": "ula", "step_size": 0.01}},
}
SPACES = {
    "dcd": {"algorithm.sigma": {"loguniform": [0.01, 0.3]},
            "optimizer.lr": {"loguniform": [0.0003, 0.003]}},
    "cd": {"algorithm.k": {"randint": [1, 21]},
           "sampler.step_size": {"loguniform": [0.001, 0.03]},
           "optimizer.lr": {"loguniform": [0.0003, 0.003]}},
}
SPACES["pcd"] = SPACES["cd"]
LABELS = {"dcd": "DCD-VE", "cd": "CD-k", "pcd": "PCD-k"}


def base_config(name: str, method: str, seed: int) -> dict:
    """The config of ``method`` on set ``name`` drawn with data seed ``seed``."""
    config = json.loads(json.dumps(COMMON)) | json.loads(json.dumps(ALGORITHMS[method]))
    config["data"]["toy"] |= {"name": name, "seed": seed}
    return config


class Study:
    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.args = args
        self.path = out / "results.json"
        self.results = json.loads(self.path.read_text()) if self.path.exists() else {}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=2, sort_keys=True))
        os.replace(tmp, self.path)

    def entry(self, name: str, method: str) -> dict:
        return self.results.setdefault(name, {}).setdefault(method, {})

    # -- stage 1 ---------------------------------------------------------------------------
    def sweep(self, name: str, method: str) -> None:
        entry = self.entry(name, method)
        if "best" in entry:
            return
        sweep_dir = self.out / "sweeps" / f"{name}_{method}"
        param_space = json.loads(json.dumps(SPACES[method]))
        if method != "dcd" and self.args.step_range:
            param_space["sampler.step_size"] = {"loguniform": list(self.args.step_range)}
        space = {"base": base_config(name, method, seed=1), "param_space": param_space,
                 "metric": "sm_loss_test", "mode": "min", "num_samples": self.args.trials,
                 "search_alg": {"name": "optuna", "seed": 0}, "max_concurrent_trials": 2,
                 "resources": {"workers": 0, "cpus_per_worker": 1}}
        space["base"]["train"]["n_updates"] = self.args.updates
        space_file = self.out / "spaces" / f"{name}_{method}.yaml"
        space_file.parent.mkdir(parents=True, exist_ok=True)
        space_file.write_text(yaml.safe_dump(space, sort_keys=False))
        command = [sys.executable, "-m", "raybm.cli", "tune", str(space_file),
                   "--tracking-uri", f"sqlite:///{self.out.resolve()}/mlflow.db"]
        command += (["--resume", str(sweep_dir)] if (sweep_dir / "sweep.json").exists()
                    else ["--out", str(sweep_dir)])
        if self.args.address:
            command += ["--address", self.args.address]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        best = sweep_dir / "best_config.yaml"
        if not best.exists():
            raise SystemExit(f"sweep {name}/{method} failed (exit {done.returncode}):\n"
                             f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        chosen = load_config(best).flat()
        trials = []
        for trial in sorted((sweep_dir / "trials").iterdir()):
            summary, config = trial / "summary.json", trial / "config.yaml"
            if not config.exists():
                continue
            flat = load_config(config).flat()
            # a trial that diverged wrote no summary
            value = (json.loads(summary.read_text())["sm_loss_test"] if summary.exists()
                     else math.nan)
            trials.append({k: flat[k] for k in SPACES[method]} | {"sm_loss_test": value})
        entry |= {"best": {k: chosen[k] for k in SPACES[method]},
                  "space": param_space,
                  "trials": trials, "sweep_seconds": round(seconds, 1),
                  "validation_sm": min((t["sm_loss_test"] for t in trials
                                        if math.isfinite(t["sm_loss_test"])),
                                       default=math.nan)}
        self.save()
        print(f"sweep {name:12s} {method:4s} {seconds:6.0f} s  best {entry['best']} "
              f"val sm {entry['validation_sm']:.3f}", flush=True)

    # -- stage 2 and 3 ---------------------------------------------------------------------
    def chosen_config(self, name: str, method: str) -> dict:
        """The sweep's choice on the full budget, on the test draw."""
        config = base_config(name, method, seed=0)
        for key, value in self.entry(name, method)["best"].items():
            section, leaf = key.split(".")
            config[section][leaf] = value
        return config

    def default_config(self, name: str) -> dict:
        config = yaml.safe_load((ROOT / "configs" / "dcd_toy2d_8gaussians.yaml").read_text())
        config["data"]["toy"]["name"] = name
        return config

    def runs(self, jobs: list[tuple[str, str, str, dict]]) -> None:
        """Train ``(set, method, key, config)`` for every seed not yet done: two runs at a
        time, one thread each, the longest (DCD-VE's) first so that both cores stay busy."""
        todo = [(name, method, key, config, seed) for name, method, key, config in jobs
                for seed in self.args.seeds
                if str(seed) not in self.entry(name, method).get(key, {})]
        todo.sort(key=lambda job: job[1] != "dcd")
        running: list[tuple] = []
        try:
            self._pool(todo, running)
        finally:  # stopped or failed: no run left behind writing into its directory
            for _, _, _, log, proc in running:
                proc.terminate()
                proc.wait()
                log.close()

    def _pool(self, todo: list[tuple], running: list[tuple]) -> None:
        while todo or running:
            while todo and len(running) < 2:
                name, method, key, config, seed = job = todo.pop(0)
                run_dir = self.out / "runs" / f"{name}_{method}_{key}_{seed}"
                config_file = self.out / "runs" / f"{name}_{method}_{key}_{seed}.yaml"
                config_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(run_dir, ignore_errors=True)  # a stopped attempt's
                run_config = json.loads(json.dumps(config))
                run_config["train"] = run_config.get("train", {}) | {"seed": seed,
                                                                      "progress": False}
                run_config["tracking"] = {"enabled": False}
                config_file.write_text(yaml.safe_dump(run_config, sort_keys=False))
                command = [sys.executable, "-m", "raybm.cli", "train", str(config_file),
                           "--out", str(run_dir)]
                # output to a file: a pipe nobody reads while the other run is waited on
                # could fill and stall the run
                log = (self.out / "runs" / f"{name}_{method}_{key}_{seed}.log").open("w")
                running.append((job, run_dir, time.perf_counter(), log, subprocess.Popen(
                    command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)))
            time.sleep(0.5)
            for item in [r for r in running if r[4].poll() is not None]:
                running.remove(item)
                self._record(*item)

    def _record(self, job: tuple, run_dir: Path, start: float, log, proc) -> None:
        name, method, key, _, seed = job
        log.close()
        output = Path(log.name).read_text()
        seconds = time.perf_counter() - start
        done = self.entry(name, method).setdefault(key, {})
        summary = run_dir / "summary.json"
        if proc.returncode == 0 and summary.exists():
            s = json.loads(summary.read_text())
            done[str(seed)] = {"sm_loss_test": s["sm_loss_test"],
                               "test_loglik_grid": s.get("test_loglik_grid"),
                               "updates_per_s": s["updates_per_s"],
                               "diverged": False, "seconds": round(seconds, 1)}
        elif "diverged" in output:
            line = next(x for x in output.splitlines() if "diverged" in x)
            done[str(seed)] = {"sm_loss_test": math.nan, "diverged": True,
                               "message": line[-300:], "seconds": round(seconds, 1)}
        else:
            raise SystemExit(f"run {run_dir} failed:\n{output[-3000:]}")
        self.save()
        r = done[str(seed)]
        print(f"{key:8s} {name:12s} {method:4s} seed {seed}: sm {r['sm_loss_test']:.3f}"
              f"{'  DIVERGED' if r['diverged'] else ''}  {seconds:.0f} s", flush=True)

    # -- stage 4 ---------------------------------------------------------------------------
    def report(self) -> str:
        import torch

        from raybm.config import parse_config
        from raybm.data.load import load_data

        lines = [f"CPU: {cpu_model()} ({platform.machine()}), torch "
                 f"{torch.__version__}, one thread per run, two runs at a time", "",
                 "| set | SM_ref | DCD-VE | CD-k | PCD-k | DCD < PCD | SM_dcd / SM_cd | "
                 "(SM_ref - SM_dcd) / (SM_ref - SM_cd) | DCD-VE defaults |",
                 "|---|---|---|---|---|---|---|---|---|"]
        wins_pcd = half_cd = beats_cd = n = 0
        for name in self.args.sets:
            if name not in self.results:
                continue
            test = load_data(parse_config(base_config(name, "dcd", 0)))[1]
            # the N(0, I) reference (E = |x|^2 / 2): <|x|^2> / 2 - d in closed form
            ref = float(test.x.double().square().sum(1).mean() / 2 - 2)
            cells, means = [name, f"{ref:.2f}"], {}
            for method in METHODS:
                finals = self.entry(name, method).get("final", {})
                values = [r["sm_loss_test"] for r in finals.values()]
                means[method] = mean_or_nan(values)  # nan: a seed diverged
                cells.append(fmt(values))
            defaults = self.entry(name, "dcd").get("defaults", {})
            if len(self.entry(name, "cd").get("final", {})) and len(
                    self.entry(name, "pcd").get("final", {})) and len(
                    self.entry(name, "dcd").get("final", {})):
                n += 1
                dcd, cd, pcd = means["dcd"], means["cd"], means["pcd"]
                # a method with a diverged seed loses its comparison
                win = math.isfinite(dcd) and not dcd >= pcd
                wins_pcd += win
                # the ratio: the share of CD's (negative) loss DCD-VE reaches
                share = dcd / cd if math.isfinite(dcd) and math.isfinite(cd) and cd < 0 else (
                    math.inf if math.isfinite(dcd) and not math.isfinite(cd) else math.nan)
                half_cd += share >= 0.5
                beats_cd += math.isfinite(dcd) and not dcd >= cd
                gain = ((ref - dcd) / (ref - cd) if math.isfinite(dcd) and math.isfinite(cd)
                        and ref > cd else math.nan)
                cells += ["yes" if win else "no", f"{share:.2f}", f"{gain:.2f}"]
            else:
                cells += ["-", "-", "-"]
            cells.append(fmt([r["sm_loss_test"] for r in defaults.values()]))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"DCD-VE below PCD-k on {wins_pcd}/{n} sets; SM ratio >= 0.5 (at least "
                  f"half of CD-k's loss) on {half_cd}/{n}; below CD-k on {beats_cd}/{n}.", "",
                  "Chosen settings (sweep on the validation draw; validation sm_loss_test):", ""]
        for name in self.args.sets:
            for method in METHODS:
                e = self.entry(name, method)
                if "best" in e:
                    settings = ", ".join(f"{k.split('.')[1]} {_short(v)}"
                                         for k, v in e["best"].items())
                    steps = e.get("space", {}).get("sampler.step_size", {}).get("loguniform")
                    wider = (f", steps swept in {steps}" if steps and steps != SPACES[method][
                        "sampler.step_size"]["loguniform"] else "")
                    lines.append(f"- {name} {LABELS[method]}: {settings} (val "
                                 f"{e['validation_sm']:.3f}, sweep {e['sweep_seconds']:.0f} s"
                                 f"{wider})")
        diverged = [(name, method, key, seed)
                    for name in self.args.sets for method in METHODS
                    for key in ("final", "defaults")
                    for seed, r in self.entry(name, method).get(key, {}).items()
                    if r.get("diverged")]
        lines += ["", f"Diverged runs: {diverged or 'none'}"]
        return "\n".join(lines)

    def densities(self, path: Path) -> None:
        """Learned densities of the seed-0 final runs beside the data, a row per set."""
        import numpy as np
        from matplotlib.figure import Figure

        from raybm.checkpoint import load_checkpoint
        from raybm.config import parse_config
        from raybm.data.load import load_data
        from raybm.metrics.continuous import grid_extent, grid_log_density

        names = [s for s in self.args.sets if s in self.results]
        fig = Figure(figsize=(2.2 * (1 + len(METHODS)), 2.2 * len(names)))
        for row, name in enumerate(names):
            train = load_data(parse_config(base_config(name, "dcd", 0)))[0]
            extent = grid_extent(train)
            ax = fig.add_subplot(len(names), 1 + len(METHODS), row * (1 + len(METHODS)) + 1)
            ax.hist2d(train.x[:, 0].numpy(), train.x[:, 1].numpy(), bins=120,
                      range=[extent[:2], extent[2:]], cmap="viridis")
            ax.set_title(f"{name}: data", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            for col, method in enumerate(METHODS):
                ax = fig.add_subplot(len(names), 1 + len(METHODS),
                                     row * (1 + len(METHODS)) + col + 2)
                run_dir = self.out / "runs" / f"{name}_{method}_final_0"
                ax.set_xticks([]), ax.set_yticks([])
                if not (run_dir / "summary.json").exists():
                    ax.set_title(f"{LABELS[method]}: no run", fontsize=8)
                    continue
                model = load_checkpoint(run_dir).model
                log_density, _, _ = grid_log_density(model, extent)
                ax.imshow(np.exp(log_density.numpy()), origin="lower", extent=extent,
                          cmap="viridis", aspect="auto", interpolation="nearest")
                sm = self.entry(name, method)["final"]["0"]["sm_loss_test"]
                ax.set_title(f"{LABELS[method]} (SM {sm:.2f})", fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)

    def write_configs(self, directory: Path) -> None:
        """The shipped configs: each set and method at the setting its sweep chose."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in self.args.sets:
            for method in METHODS:
                e = self.entry(name, method)
                if "best" not in e:
                    continue
                config = self.chosen_config(name, method)
                config["train"].pop("threads")
                finals = [r["sm_loss_test"] for r in e.get("final", {}).values()]
                settings = ", ".join(f"{k} {_short(v)}" for k, v in e["best"].items())
                steps = e.get("space", {}).get("sampler.step_size", {}).get("loguniform")
                swept = f", steps in {steps}" if steps else ""
                header = [
                    f"# {LABELS[method]} on the 2-D set {name}: an MLP energy 2-128-128-128-1,",
                    "# Adam, batch 1,000, 1,000 updates (issue 19's study, "
                    "benchmarks/dcd_toy2d.py).",
                    f"# Chosen by a raybm tune sweep ({len(e['trials'])} Optuna trials{swept}) "
                    "on a validation draw",
                    "# of the set (data.toy.seed 1), ranked on held-out score matching:",
                    f"#   {settings}.",
                    f"# Test sm_loss_test over train seeds {', '.join(e.get('final', {}))} "
                    f"(data.toy.seed 0): {fmt(finals)} (lower is better).",
                    f"#   raybm train configs/{method}_toy2d_{name}.yaml"]
                text = "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False)
                (directory / f"{method}_toy2d_{name}.yaml").write_text(text)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def mean_or_nan(values: list[float]) -> float:
    return statistics.fmean(values) if values and all(map(math.isfinite, values)) else math.nan


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if not all(map(math.isfinite, values)):
        return f"{sum(not math.isfinite(v) for v in values)}/{len(values)} diverged"
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--updates", type=int, default=1000, help="per sweep trial")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--stages", nargs="+", default=["sweep", "final", "defaults", "report"],
                        choices=["sweep", "final", "defaults", "report"])
    parser.add_argument("--address", default=None, help="a running Ray cluster for the sweeps")
    parser.add_argument("--step-range", nargs=2, type=float, default=None,
                        help="CD-k / PCD-k's ULA step range for new sweeps (a set whose "
                             "sweep ran away everywhere in the default range)")
    parser.add_argument("--configs", type=Path, default=None,
                        help="write the shipped configs here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    study = Study(args.out, args)
    for name in args.sets:
        jobs = []
        for method in args.methods:
            if "sweep" in args.stages:
                study.sweep(name, method)
            if "final" in args.stages and "best" in study.entry(name, method):
                jobs.append((name, method, "final", study.chosen_config(name, method)))
        if "defaults" in args.stages and "dcd" in args.methods:
            jobs.append((name, "dcd", "defaults", study.default_config(name)))
        study.runs(jobs)
    if "report" in args.stages:
        text = study.report()
        print(text)
        (args.out / "report.md").write_text(text + "\n")
        study.densities(args.out / "densities.png")
        print(f"densities: {args.out / 'densities.png'}")
    if args.configs is not None:
        study.write_configs(args.configs)


if __name__ == "__main__":
    main()

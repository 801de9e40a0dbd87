"""Digits from the MNIST conv energy on 2 CPU cores: PCD with a persistent buffer, short-run
Langevin and an energy penalty (configs/mnist236_conv_buffer.yaml), read by an independent
classifier; and, at the same budget, Jarzynski with exactly weighted walkers beside it.

For each seed, one ``raybm train`` of the config (in-process, or on ``--workers`` Ray
workers), then, from its last checkpoint:

1. the class shares of the *whole buffer* by the classifier of
   benchmarks/mnist_conv_proportions.py (softmax regression on the real 2 / 3 / 6 of the
   file's other half; held-out accuracy and its reading of uniform noise are printed), and
   their total-variation distance from 4 : 2 : 1 (Jarzynski's walkers weighted by their
   normalised weights);
2. the shares of fresh short runs: ``k`` kernel steps from the kernel's start with the final
   model (``raybm sample --from chains``), where the research's recipe says the proportions
   do not live;
3. grids of 100 walkers at every checkpoint (``<out>/<run>_step<N>.png``) and the seconds
   each run took.

    python benchmarks/mnist_conv_buffer.py [--seeds 0 1 2] [--updates 2000] [--workers 0]
        [--jobs 2] [--config configs/mnist236_conv_buffer.yaml] [--set key=value ...]
        [--out bench-out/mnist236_buffer]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.mnist_conv_proportions import DIGITS, IMAGES, LABELS, TARGET, classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_one(seed: int, args: argparse.Namespace) -> dict:
    name = f"{args.name}-s{seed}" + (f"-w{args.workers}" if args.workers else "")
    run_dir = args.out / "runs" / name
    sets = [f"data.path={IMAGES}", f"data.labels_path={LABELS}",
            f"train.n_updates={args.updates}", f"train.seed={seed}", "train.progress=false",
            f"tracking.uri=sqlite:///{(args.out / 'mlflow.db').resolve()}",
            "tracking.experiment=mnist236_buffer", f"tracking.run_name={name}", *args.set]
    if not args.workers:
        sets.append("train.threads=1")
    cmd = [sys.executable, "-m", "raybm.cli", "train", str(args.config.resolve()),
           "--workers", str(args.workers), "--out", str(run_dir)]
    for item in sets:
        cmd += ["--set", item]
    if args.reuse and (run_dir / "summary.json").is_file():
        return {"seed": seed, "run_dir": run_dir, "seconds": float("nan"), "name": name}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=args.out)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"seed": seed, "run_dir": run_dir, "seconds": time.perf_counter() - t0,
            "name": name}


@torch.no_grad()
def class_shares(clf: torch.nn.Module, x: torch.Tensor,
                 log_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Shares of each class among ``x`` (weighted by ``softmax(log_weight)``)."""
    n = x.shape[0]
    w = (torch.full((n,), 1.0 / n, dtype=torch.float64) if log_weight is None
         else torch.softmax(log_weight.double(), 0))
    pred = clf(x.reshape(n, -1).float()).argmax(1)
    return torch.zeros(len(DIGITS), dtype=torch.float64).index_add_(0, pred, w)


def tv(p: torch.Tensor) -> float:
    return 0.5 * float((p - TARGET).abs().sum())


def grids(run_dir: Path, out: Path, name: str) -> list[Path]:
    """A grid of 100 walkers (drawn by weight) of every checkpoint the run kept."""
    from raybm.checkpoint import load_checkpoint
    from raybm.metrics.plots import sample_grid

    written = []
    for ckpt in sorted((run_dir / "checkpoints").glob("step_*")):
        walkers = load_checkpoint(ckpt).walkers
        w = torch.softmax(walkers.log_weight.double(), 0)
        pick = torch.multinomial(w, 100, replacement=False,
                                 generator=torch.Generator().manual_seed(0))
        path = out / f"{name}_{ckpt.name}.png"
        sample_grid(walkers.x[pick].reshape(100, -1), (28, 28), path, value_range=(-1.0, 1.0))
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mnist236_conv_buffer.yaml")
    parser.add_argument("--name", default="buffer")
    parser.add_argument("--set", action="append", default=[], help="key=value for every run")
    parser.add_argument("--fresh", type=int, default=1000, help="fresh short runs to classify")
    parser.add_argument("--out", type=Path, default=Path("bench-out/mnist236_buffer"))
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    clf, acc = classifier(gen)
    noise = 2 * torch.rand((4096, 784), generator=gen) - 1
    print(f"classifier (softmax regression on real 2/3/6 of the file's other half): held-out "
          f"accuracy {acc:.3f}; uniform noise read as {class_shares(clf, noise).numpy().round(3)}"
          f" (TV {tv(class_shares(clf, noise)):.3f} from 4:2:1)")
    from raybm.config import load_config
    from raybm.data.load import load_data

    train, _ = load_data(load_config(args.config, [f"data.path={IMAGES}",
                                                   f"data.labels_path={LABELS}"]))
    real = class_shares(clf, train.x)
    print(f"the run's {train.n_samples} training images read as {real.numpy().round(3)} "
          f"(TV {tv(real):.3f}; their labels: "
          f"{(torch.bincount(train.labels) / train.n_samples).numpy().round(3)})")
    print(f"config {args.config.name}, {args.updates} updates, workers {args.workers}, "
          f"sets {args.set}")
    print("| run | buffer 2 / 3 / 6 | TV | ESS / N | fresh short runs 2 / 3 / 6 | TV | seconds |")
    print("|---|---|---|---|---|---|---|")
    from raybm.run import load_run
    from raybm.sampling import draw_run

    found: dict[str, list[float]] = {"buffer": [], "fresh": []}
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        for r in pool.map(lambda s: run_one(s, args), args.seeds):
            config, ckpt = load_run(r["run_dir"])
            w = ckpt.walkers
            p = class_shares(clf, w.x, w.log_weight)
            lw = torch.softmax(w.log_weight.double(), 0)
            ess = float(1 / (lw * lw).sum()) / w.n_walkers
            fresh = draw_run(config, ckpt, args.fresh, source="chains", k=config.algorithm.k,
                             seed=r["seed"])
            q = class_shares(clf, fresh.x)
            found["buffer"].append(tv(p))
            found["fresh"].append(tv(q))
            grids(r["run_dir"], args.out, r["name"])
            print(f"| {r['name']} | {p[0]:.3f} / {p[1]:.3f} / {p[2]:.3f} | {tv(p):.3f} | "
                  f"{ess:.3f} | {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} | {tv(q):.3f} | "
                  f"{r['seconds']:.0f} |", flush=True)
    for what, values in found.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{what}: TV from 4:2:1, mean {statistics.mean(values):.3f} +- {sd:.3f} over "
              f"{len(values)} seeds")


if __name__ == "__main__":
    main()

"""Class proportions of conv-energy walkers on MNIST digits 2, 3, 6 at 4 : 2 : 1: Jarzynski
against PCD with the same budget (research reproduction 2 of issue 8, at the budget of a
2-core machine).

The Jarzynski research (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414, section
4.2) trains its conv energy on digits 2, 3, 6 in proportions 4 : 2 : 1 and reads the weight of
each class off the walkers with a classifier trained on real digits: the Jarzynski weights keep
the proportions, PCD's walkers drift. This script does the same with ``raybm train`` (the
``mnist`` data format with ``data.digits`` / ``data.proportions``, ``model.kind: conv``):

1. an independent classifier (softmax regression on pixels, trained on the real 2 / 3 / 6
   images of the *other* half of the file than the EBM's training images; its held-out
   accuracy is printed);
2. for each method and seed, one CLI run; the last checkpoint's walkers are classified and
   the class shares are weighted by the normalised Jarzynski weights (uniform for PCD);
3. the total-variation distance of those shares from 4/7, 2/7, 1/7, and a grid of walkers
   (drawn by weight) per run under ``--out``.

    python benchmarks/mnist_conv_proportions.py [--seeds 0 1 2] [--updates 500]
        [--walkers 256] [--k 10] [--step 0.01] [--lr 1e-4] [--no-box] [--jobs 2]
        [--out bench-out/mnist236]

The research's run is 600 epochs of 9,800 images at batch 128 (about 46,000 updates), 30 ULA
steps per update and 1,024 walkers: about 1.4e9 walker-gradients of the conv energy. This
machine does about 4,000 walker-gradients per second per core (1,024 walkers in 0.27 s), so
that is ~100 hours per run; the defaults here are what fits in minutes, and say so.
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

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
IMAGES, LABELS = MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz"
DIGITS, PROPORTIONS = [2, 3, 6], [4, 2, 1]
TARGET = torch.tensor(PROPORTIONS, dtype=torch.float64) / sum(PROPORTIONS)


def classifier(gen: torch.Generator) -> tuple[torch.nn.Module, float]:
    """Softmax regression on the real digits 2 / 3 / 6 of the file's second half (the EBM
    trains on a subset drawn from all of it: the classifier is independent of the trained
    model, not of the data distribution); accuracy on a held-out quarter of that half."""
    from raybm.data.mnist_float import load_mnist_float

    data = load_mnist_float(IMAGES, LABELS, DIGITS)
    half = data.subset(torch.arange(data.n_samples // 2, data.n_samples))
    order = torch.randperm(half.n_samples, generator=gen)
    cut = half.n_samples * 3 // 4
    fit, held = half.subset(order[:cut]), half.subset(order[cut:])
    torch.manual_seed(int(torch.randint(2**31, (), generator=gen)))  # the layer's init
    model = torch.nn.Linear(784, len(DIGITS))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = fit.x.reshape(fit.n_samples, -1), fit.labels
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, weight=None).backward()
        opt.step()
    with torch.no_grad():
        acc = float((model(held.x.reshape(held.n_samples, -1)).argmax(1) == held.labels)
                    .double().mean())
    return model, acc


def run_one(method: str, seed: int, args: argparse.Namespace) -> dict:
    name = f"{method}-s{seed}"
    run_dir = args.out / "runs" / name
    algorithm = ["--set", f"algorithm.name={method}"]
    if method == "jarzynski":
        algorithm += ["--set", "algorithm.ess_threshold=0.5"]
    # PCD's walkers start from the kernel's noise, as the research's do: started at the data
    # they would hold the data's proportions until they move, which says nothing.
    cmd = [sys.executable, "-m", "raybm.cli", "train", "--workers", "0", "--out", str(run_dir),
           "--set", "data.format=mnist", "--set", f"data.path={IMAGES}",
           "--set", f"data.digits={DIGITS}", "--set", f"data.proportions={PROPORTIONS}",
           "--set", "data.test_fraction=0.1", "--set", "model.kind=conv",
           "--set", "sampler.name=ula", "--set", f"sampler.step_size={args.step}",
           *(["--set", "sampler.box=[-1, 1]"] if args.box else []), *algorithm,
           "--set", f"algorithm.k={args.k}", "--set", f"algorithm.n_walkers={args.walkers}",
           "--set", "optimizer.name=adam", "--set", f"optimizer.lr={args.lr}",
           "--set", "train.batch_size=128", "--set", f"train.n_updates={args.updates}",
           "--set", f"train.seed={seed}", "--set", "train.threads=1",
           "--set", "train.log_every=50", "--set", "train.progress=false",
           "--set", f"tracking.uri=sqlite:///{(args.out / 'mlflow.db').resolve()}",
           "--set", "tracking.experiment=mnist236", "--set", f"tracking.run_name={name}"]
    if args.reuse and (run_dir / "summary.json").is_file():  # read again, not retrained
        return {"method": method, "seed": seed, "run_dir": run_dir, "seconds": float("nan")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=args.out)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"method": method, "seed": seed, "run_dir": run_dir,
            "seconds": time.perf_counter() - t0}


@torch.no_grad()
def shares(run_dir: Path, clf: torch.nn.Module, grid: Path) -> tuple[torch.Tensor, float]:
    """Class shares of the last checkpoint's walkers (weighted by their Jarzynski weights)
    and the weights' effective sample size over N; a grid of 100 walkers drawn by weight is
    written to ``grid``."""
    from raybm.checkpoint import load_checkpoint
    from raybm.metrics.plots import sample_grid

    walkers = load_checkpoint(run_dir).walkers
    w = torch.softmax(walkers.log_weight.double(), 0)
    pred = clf(walkers.x.reshape(len(w), -1)).argmax(1)
    out = torch.zeros(len(DIGITS), dtype=torch.float64).index_add_(0, pred, w)
    pick = torch.multinomial(w, 100, replacement=True, generator=torch.Generator())
    sample_grid(walkers.x[pick].reshape(100, -1), (28, 28), grid, value_range=(-1.0, 1.0))
    return out, float(1 / (w * w).sum()) / len(w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["jarzynski", "pcd"])
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--walkers", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--box", action=argparse.BooleanOptionalAction, default=True,
                        help="keep walkers in [-1, 1] (proposals reflected at its faces)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/mnist236"))
    parser.add_argument("--reuse", action="store_true",
                        help="read finished runs under --out again instead of retraining")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    clf, acc = classifier(gen)
    print(f"classifier (softmax regression on real 2/3/6): held-out accuracy {acc:.3f}")
    with torch.no_grad():  # what it reads from walkers that learned nothing: the start
        noise = 2 * torch.rand((4096, 784), generator=gen) - 1
        start = torch.bincount(clf(noise).argmax(1), minlength=len(DIGITS)).double() / 4096
    print("classifier's shares of uniform noise in the box (PCD's start): "
          + ", ".join(f"{d}: {v:.3f}" for d, v in zip(DIGITS, start.tolist())))
    print(f"budget: {args.updates} updates, {args.walkers} walkers, k = {args.k} ULA steps of "
          f"{args.step} ({'box [-1, 1]' if args.box else 'no box'}), Adam lr {args.lr}, "
          "batch 128")
    print("| method | seed | share of 2 | share of 3 | share of 6 | TV from 4:2:1 | ESS / N "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|")
    todo = [(m, s) for m in args.methods for s in args.seeds]
    tv: dict[str, list[float]] = {}
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        for r in pool.map(lambda t: run_one(*t, args), todo):
            p, ess = shares(r["run_dir"], clf,
                            args.out / f"walkers_{r['method']}_s{r['seed']}.png")
            d = 0.5 * float((p - TARGET).abs().sum())
            tv.setdefault(r["method"], []).append(d)
            print(f"| {r['method']} | {r['seed']} | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | "
                  f"{d:.3f} | {ess:.3f} | {r['seconds']:.0f} |", flush=True)
    for method, values in tv.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"{method}: TV distance from 4:2:1, mean {statistics.mean(values):.3f} "
              f"+- {sd:.3f} over {len(values)} seeds (target 4/7 = 0.571, 2/7 = 0.286, "
              f"1/7 = 0.143)")


if __name__ == "__main__":
    main()

"""Seconds per PCD-10 update on MNIST (784 x 512 Bernoulli RBM, 2,000 walkers), for checking
that a refactor leaves the RBM path as fast as it was.

Builds a trainer exactly as ``raybm train`` does (``make_trainer``: estimator, kernel, optimizer,
centring) and times ``Trainer.update`` (Gibbs sweeps, free energies, backward, optimizer
step). It uses only interfaces that older versions have too, so the *same script* times two
source trees in one session, one after the other (the fair comparison on a shared machine):

    python benchmarks/update_time.py                              # this tree
    git worktree add /tmp/old <rev>
    PYTHONPATH=/tmp/old python benchmarks/update_time.py          # the old tree
    python benchmarks/update_time.py --compare /tmp/old           # both, interleaved

``--compare`` alternates rounds of the two trees in fresh processes (A B A B ...), so that
load on the machine hits both alike, and prints the median of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def time_updates(updates: int, warmup: int, algorithm: str, precision: str) -> dict:
    import torch

    import raybm
    from raybm.config import parse_config
    try:
        from raybm.data.load import load_data
    except ImportError:  # a tree from before the loaders left raybm.train
        from raybm.train import load_data
    from raybm.train import make_trainer

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    config = parse_config({
        "data": {"path": str(MNIST / "t10k-images-idx3-ubyte.gz"),
                 "labels_path": str(MNIST / "t10k-labels-idx1-ubyte.gz")},
        "model": {"n_hidden": 512, "labels": False},
        "algorithm": {"name": algorithm, "k": 10, "n_walkers": 2000, "precision": precision},
        "train": {"batch_size": 100, "progress": False},
        "tracking": {"enabled": False},
    })
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    for _ in range(warmup):
        trainer.update()
    times = []
    for _ in range(updates):
        t0 = time.perf_counter()
        trainer.update()
        times.append(time.perf_counter() - t0)
    return {"source": str(Path(raybm.__file__).parent.parent), "median_s": statistics.median(times),
            "min_s": min(times), "updates": updates}


def compare(other: Path, rounds: int, args: argparse.Namespace) -> None:
    here = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, __file__, "--updates", str(args.updates), "--warmup",
           str(args.warmup), "--algorithm", args.algorithm, "--precision", args.precision,
           "--json"]
    results: dict[str, list[float]] = {"this tree": [], "other tree": []}
    for _ in range(rounds):
        for name, tree in (("this tree", here), ("other tree", other)):
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert Path(r["source"]).resolve() == tree.resolve(), r["source"]
            results[name].append(r["median_s"])
    a, b = (statistics.median(results[k]) for k in ("this tree", "other tree"))
    print(f"{args.algorithm}-10 {args.precision}, 784 x 512, 2000 walkers, batch 100; "
          f"median of {rounds} rounds x {args.updates} updates")
    print(f"  this tree  ({here}): {a * 1e3:.1f} ms/update  rounds {[round(x * 1e3, 1) for x in results['this tree']]}")
    print(f"  other tree ({other}): {b * 1e3:.1f} ms/update  rounds {[round(x * 1e3, 1) for x in results['other tree']]}")
    print(f"  ratio this/other: {a / b:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--algorithm", default="pcd")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--compare", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.compare is not None:
        compare(args.compare, args.rounds, args)
        return
    r = time_updates(args.updates, args.warmup, args.algorithm, args.precision)
    print(json.dumps(r) if args.json else
          f"{args.algorithm}-10: {r['median_s'] * 1e3:.1f} ms/update (median of {r['updates']}), "
          f"source {r['source']}")


if __name__ == "__main__":
    main()

"""DCD-VE's time per update against CD-k, in the same process (issue 19, acceptance 2).

The issue's setting: an MLP energy 2-128-128-128-1 on a 2-D set (8 Gaussians), batch 1,000,
Adam; each method is ``raybm``'s own trainer (``train.make_trainer`` then ``update``: the
minibatch draw, the estimator, the backward pass and the optimizer step), one thread. CD-k
takes k ULA steps from the batch (each a forward and a backward pass through the energy).
DCD-VE's heat-equation route takes one forward pass at the data and at the noised data, the
energy's gradient with its graph kept, the Laplacian (2 more backward passes in 2-D, exact;
or 1 per Hutchinson probe) and the backward pass through all of it; the posterior route takes
k Langevin steps on the posterior, then CD's loss.

Methods run round-robin, ``--rounds`` times ``--updates`` updates each (after a warm-up
round), so a load that comes and goes falls on all of them; the median time per update is
reported with the ratios the issue asks for:

- one-step DCD-VE (the taylor route, and the posterior route with 1 step) against CD-5;
- the posterior route with at most 5 steps against CD-20.

    python benchmarks/dcd_speed.py [--rounds 5] [--updates 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from raybm.config import load_config
from raybm.data.load import load_data
from raybm.train import make_trainer

COMMON = ["data.format=toy2d", "data.toy.name=8gaussians", "model.kind=mlp",
          "model.widths=[128, 128, 128]", "sampler.name=ula", "sampler.step_size=0.005",
          "optimizer.name=adam", "optimizer.lr=0.001", "train.batch_size=1000",
          "train.threads=1", "train.progress=false", "tracking.enabled=false",
          "distributed.workers=0"]
METHODS = {
    "cd-5": ["algorithm.name=cd", "algorithm.k=5"],
    "cd-20": ["algorithm.name=cd", "algorithm.k=20"],
    "dcd taylor (exact Laplacian)": ["algorithm.name=dcd_ve", "algorithm.route=taylor"],
    "dcd taylor (1 probe)": ["algorithm.name=dcd_ve", "algorithm.route=taylor",
                             "algorithm.probes=1"],
    "dcd posterior k=1": ["algorithm.name=dcd_ve", "algorithm.route=posterior",
                          "algorithm.k=1"],
    "dcd posterior k=5": ["algorithm.name=dcd_ve", "algorithm.route=posterior",
                          "algorithm.k=5"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    trainers = {}
    for name, sets in METHODS.items():
        config = load_config(None, COMMON + sets)
        train, _ = load_data(config)
        trainers[name] = make_trainer(config, train)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    for round_ in range(args.rounds + 1):
        for name, trainer in trainers.items():
            t0 = time.perf_counter()
            for _ in range(args.updates):
                trainer.update(diagnostics=False)
            if round_:  # the first round warms up
                times[name].append((time.perf_counter() - t0) / args.updates)
    print(f"CPU: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"1 thread; {args.rounds} rounds x {args.updates} updates, batch 1,000, MLP "
          "2-128-128-128-1")
    median = {name: statistics.median(t) for name, t in times.items()}
    print("| method | ms per update (median) | spread over rounds |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {1e3 * median[name]:.1f} | {1e3 * min(t):.1f}-{1e3 * max(t):.1f} |")
    print()
    for fast, slow in (("dcd taylor (exact Laplacian)", "cd-5"), ("dcd taylor (1 probe)", "cd-5"),
                       ("dcd posterior k=1", "cd-5"), ("dcd posterior k=5", "cd-20")):
        print(f"{slow} / {fast}: {median[slow] / median[fast]:.2f}x")


if __name__ == "__main__":
    main()

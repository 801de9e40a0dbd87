"""Ten Gibbs sweeps in ``sampler.precision`` digits against fp32, by model size.

What ``AUTO_DIGITS_MIN_WIDTH`` (``raybm.samplers.gibbs``) is set from: the digits' int8
products save time in proportion to ``N M`` (the matmuls), while splitting the couplings into
digits at every parameter change and combining the int32 sums cost in proportion to
``N + M`` per walker, so the ratio turns with ``N M / (N + M)`` (``bf16_width``). Each size
runs in a process of its own (compiled draws: torch recompiles a kernel per shape, and stops
compiling past 8 shapes in one process), fp32 and digits in turn, 9 rounds, each round after
a parameter change (so the digits are rebuilt, as at every training update).

    python benchmarks/digits_width.py                 # 500 and 2,000 walkers, ~3 min
    python benchmarks/digits_width.py --walkers 2000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(12, 8, 0), (64, 32, 0), (64, 200, 10), (100, 100, 0), (200, 100, 0), (784, 128, 0),
         (256, 256, 0), (784, 512, 0)]


def one(n: int, nv: int, nh: int, labels: int, rounds: int = 9) -> str:
    """One size in this process: the medians and the per-round ratio's quartiles."""
    import torch

    from raybm.models.rbm import build_rbm
    from raybm.samplers import gibbs
    from raybm.samplers.random_bits import COMPILED_STREAM

    torch.set_num_threads(2)
    model = build_rbm(nv, nh, n_labels=labels)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    state = gibbs.init_uniform(torch.Generator().manual_seed(0), model, n)
    times: dict[str, list[float]] = {"fp32": [], "digits": []}
    for precision in times:  # compiled kernels first
        gibbs.step(torch.Generator().manual_seed(1), state, model, 2, precision=precision,
                   stream=COMPILED_STREAM, compiled=True)
    for r in range(rounds):
        for precision in times:
            with torch.no_grad():
                model.hbias.add_(0.0)  # a parameter change: the layout is rebuilt
            t0 = time.perf_counter()
            gibbs.step(torch.Generator().manual_seed(r), state, model, 10, precision=precision,
                       stream=COMPILED_STREAM, compiled=True)
            times[precision].append(time.perf_counter() - t0)
    a, b = statistics.median(times["fp32"]), statistics.median(times["digits"])
    ratios = [y / x for x, y in zip(times["fp32"], times["digits"])]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (f"| {n} | {nv} x {nh}{f' + {labels} labels' if labels else ''} | "
            f"{(nv + labels) * nh / (nv + labels + nh):.0f} | {a * 1e3:.2f} | {b * 1e3:.2f} | "
            f"{statistics.median(ratios):.2f} ({q1:.2f}-{q3:.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--walkers", default="500,2000")
    parser.add_argument("--one", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one(*args.one), flush=True)
        return
    from raybm.samplers import digits
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import cpu_line

    print(f"CPU: {cpu_line()}; exact int8 sums: {digits.available(torch.device('cpu'))}")
    print("| walkers | model | N M / (N + M) | fp32 ms | digits ms | digits / fp32 per round, "
          "median (quartiles) |")
    print("|---|---|---|---|---|---|")
    for n in (int(w) for w in args.walkers.split(",")):
        for nv, nh, labels in SIZES:
            out = subprocess.run([sys.executable, __file__, "--one", str(n), str(nv), str(nh),
                                  str(labels)], capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

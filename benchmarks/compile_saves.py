"""What compiling the Gibbs draws saves per walker coordinate and sweep, by precision.

``sampler.compile: auto`` turns compilation on for a run whose draws save at least twice
what compiling costs (``raybm.samplers.gibbs.COMPILE_SAVES_S`` and ``COMPILE_COST_S``). This
times ten sweeps of the MNIST-sized RBM (784 x 512, 2,000 walkers, the throughput
benchmark's model) both ways, in turn in this process: eager draws from stored SFC64 words
(what a run without compilation gets) against the compiled draws a run with it gets
(SplitMix64 words), and prints the time saved per walker x visible unit x sweep.

    python benchmarks/compile_saves.py --precisions fp32,digits --rounds 7

Each precision compiles once before its rounds (not counted: that is ``COMPILE_COST_S``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raybm.models.rbm import BernoulliRBM
from raybm.samplers import gibbs
from raybm.samplers.random_bits import COMPILED_STREAM, EAGER_STREAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precisions", default="fp32,digits")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--walkers", type=int, default=2000)
    parser.add_argument("--sweeps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    model = BernoulliRBM(784, 512)
    model.init_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():  # couplings of a trained size, so the states are not all noise
        model.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    state = gibbs.init_uniform(gen, model, args.walkers)
    units = args.walkers * model.n_visible * args.sweeps
    for precision in args.precisions.split(","):
        def sweeps(compiled: bool) -> float:
            stream = COMPILED_STREAM if compiled else EAGER_STREAM
            t0 = time.perf_counter()
            gibbs.step(gen, state, model, args.sweeps, precision=precision, stream=stream,
                       compiled=compiled)
            return time.perf_counter() - t0

        sweeps(True), sweeps(False)  # compile, and warm both
        eager, compiled = [], []
        for _ in range(args.rounds):
            eager.append(sweeps(False))
            compiled.append(sweeps(True))
        e, c = statistics.median(eager), statistics.median(compiled)
        saved = [a - b for a, b in zip(eager, compiled)]
        print(f"{precision}: {args.sweeps} sweeps eager {e * 1e3:.1f} ms, compiled "
              f"{c * 1e3:.1f} ms (medians of {args.rounds}); saved per unit and sweep "
              f"{statistics.median(saved) / units * 1e9:.2f} ns (rounds "
              f"{min(saved) / units * 1e9:.2f}-{max(saved) / units * 1e9:.2f})")


if __name__ == "__main__":
    main()

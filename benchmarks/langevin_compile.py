"""Does ``torch.compile`` make a Langevin step's energy and gradient cheaper? (issue #20)

One Langevin step of raybm's kernels costs one ``energy_and_grad`` of the model: a forward and
a backward pass by autograd (``EnergyModel.energy_and_grad``). This times it on the Jarzynski
research's MNIST conv energy (``raybm.models.neural.ConvEnergy``, arXiv 2305.19414) at
``--walkers`` walkers, eagerly and with the energy compiled (``torch.compile(model.energy)``,
so that AOTAutograd compiles its backward too), interleaved in pairs in one process (this
project's 2-core VMs drift by 1.5x within minutes, so only adjacent pairs compare), and
prints the median time of each and the median ratio of the pairs with its quartiles, with the
largest relative difference of the two gradients.

    python benchmarks/langevin_compile.py [--walkers 1024] [--pairs 20] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from raybm.models.neural import ConvEnergy


def energy_and_grad(energy):
    """The kernels' ``energy_and_grad`` around ``energy`` (eager or compiled)."""
    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            e = energy(xg)
            (grad,) = torch.autograd.grad(e.sum(), xg)
        return e.detach(), grad
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--walkers", type=int, default=1024)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ConvEnergy()
    x = torch.rand(args.walkers, 784) * 2 - 1
    eager = energy_and_grad(model.energy)
    compiled = energy_and_grad(torch.compile(model.energy))
    t0 = time.perf_counter()
    compiled(x)
    print(f"torch {torch.__version__}; conv energy, {args.walkers} walkers; compiling took "
          f"{time.perf_counter() - t0:.1f} s")
    g_eager, g_compiled = eager(x)[1], compiled(x)[1]
    rel = float((g_eager - g_compiled).abs().max() / g_eager.abs().max())
    print(f"largest gradient difference, relative to the largest entry: {rel:.1e}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        eager(x), compiled(x)
        e_times, c_times, ratios = [], [], []
        for _ in range(args.pairs):
            t0 = time.perf_counter()
            eager(x)
            t1 = time.perf_counter()
            compiled(x)
            t2 = time.perf_counter()
            e_times.append(t1 - t0)
            c_times.append(t2 - t1)
            ratios.append((t1 - t0) / (t2 - t1))
        q = statistics.quantiles(ratios)
        print(f"{threads} thread(s): eager {1000 * statistics.median(e_times):.1f} ms, compiled "
              f"{1000 * statistics.median(c_times):.1f} ms per energy and gradient; eager / "
              f"compiled {statistics.median(ratios):.2f} (quartiles {q[0]:.2f}-{q[2]:.2f})")


if __name__ == "__main__":
    main()

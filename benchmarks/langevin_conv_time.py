"""Seconds per ULA and MALA step of the conv energy at 1,024 walkers: raybm's kernels against
the plain PyTorch loop a user would write (research reproduction 3 of issue 8).

The energy is the Jarzynski research's MNIST network (``raybm.models.neural.ConvEnergy``,
arXiv 2305.19414) on 1 x 28 x 28 walkers in [-1, 1]. The peer is written the obvious way:

    x.requires_grad_(True); e = model.energy(x); g = autograd.grad(e.sum(), x)
    x = x - h g + sqrt(2h) randn_like(x)

and for MALA the same with the energy and gradient at the proposal, the Metropolis-Hastings
ratio and ``torch.where`` on the accepted rows. With a box the obvious loop clamps the
proposal into it (``clamp(-1, 1)``, which is not exact: it puts mass on the faces that no
density accounts for); raybm's kernels (``samplers.langevin``) reflect it and evaluate the
reflected proposal's density both ways, report the acceptance or the Jarzynski increment, and
draw from a named generator. ULA runs as PCD runs it (``weighs_moves=False``: no estimator
reads its increment) and as Jarzynski runs it (the increment in float64). The second peer is
``torchebm`` 0.8.9's ``LangevinDynamics`` (ULA only: it has no Metropolis correction) on the
same energy. All run the same model in the
same process, alternated, ``--repeats`` times; the median seconds per step and the ratios are
printed.

    python benchmarks/langevin_conv_time.py [--walkers 1024] [--steps 10] [--repeats 5]
        [--threads 1 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial

import torch

from raybm.models.neural import ConvEnergy
from raybm.samplers.langevin import MALA, ULA
from raybm.walkers import WalkerState

STEP = 1e-4  # small enough that MALA accepts most moves in d = 784
BOX = (-1.0, 1.0)


def plain_ula(model: ConvEnergy, x: torch.Tensor, steps: int, h: float,
              box: bool = False) -> torch.Tensor:
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model.energy(x).sum(), x)
        x = x.detach() - h * g + math.sqrt(2 * h) * torch.randn_like(x)
        if box:
            x = x.clamp(-1, 1)
    return x.detach()


def plain_mala(model: ConvEnergy, x: torch.Tensor, steps: int, h: float,
               box: bool = False) -> torch.Tensor:
    def energy_grad(z):
        z = z.detach().requires_grad_(True)
        e = model.energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g

    e_x, g_x = energy_grad(x)
    for _ in range(steps):
        y = x - h * g_x + math.sqrt(2 * h) * torch.randn_like(x)
        if box:
            y = y.clamp(-1, 1)
        e_y, g_y = energy_grad(y)
        fwd = ((y - x + h * g_x) ** 2).flatten(1).sum(1) / (4 * h)
        back = ((x - y + h * g_y) ** 2).flatten(1).sum(1) / (4 * h)
        accept = torch.rand_like(e_x).log() < (e_x - e_y + fwd - back)
        keep = accept.view(-1, 1, 1, 1)
        x, e_x, g_x = (torch.where(keep, y, x), torch.where(accept, e_y, e_x),
                       torch.where(keep, g_y, g_x))
    return x


def torchebm_ula(model: ConvEnergy, x: torch.Tensor, steps: int, h: float,
                 box: bool = False) -> torch.Tensor:
    """``torchebm`` 0.8.9's Langevin sampler (Euler-Maruyama, noise ``sqrt(2h)``, the box
    as a clamp after each step) on the same energy: the second peer (issue 20)."""
    from torchebm.samplers import LangevinDynamics

    sampler = LangevinDynamics(_torchebm_energy(model), step_size=h, noise_scale=1.0,
                               clamp=BOX if box else None)
    return sampler.sample(x=x, n_steps=steps)


_WRAPPED: dict[int, object] = {}


def _torchebm_energy(model: ConvEnergy):
    """The conv energy as a torchebm model (its ``forward`` is the energy)."""
    if id(model) not in _WRAPPED:
        from torchebm.core import BaseModel

        class Conv(BaseModel):
            def __init__(self, inner: ConvEnergy) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.inner.energy(x)

        _WRAPPED[id(model)] = Conv(model)
    return _WRAPPED[id(model)]


def has_torchebm() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchebm") is not None


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walkers", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    model = ConvEnergy(1, 28, base_scale=1.0, gen=torch.Generator().manual_seed(0))
    for p in model.parameters():
        p.requires_grad_(False)  # sampling only: no parameter gradients, for both sides
    start = torch.rand((args.walkers, 1, 28, 28), generator=torch.Generator().manual_seed(1))
    start = 2 * start - 1
    print(f"conv energy ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"{args.walkers} walkers, {args.steps} steps per call, median of {args.repeats}")
    peer = has_torchebm()
    if not peer:
        print("torchebm is not installed (pip install torchebm==0.8.9 --no-deps): its column "
              "is left out")
    print("| threads | kernel | raybm s/step | plain PyTorch s/step | raybm / plain "
          "| torchebm s/step | raybm / torchebm |")
    print("|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, ours, plain, other in [
            # ULA as PCD runs it (no estimator reads the log-weight increment: for_run)
            ("ULA", ULA(STEP, weighs_moves=False), plain_ula, torchebm_ula),
            ("ULA + Jarzynski increment", ULA(STEP), plain_ula, None),
            ("MALA", MALA(STEP), plain_mala, None),
            ("ULA, box [-1, 1]", ULA(STEP, box=BOX, weighs_moves=False),
             partial(plain_ula, box=True), partial(torchebm_ula, box=True)),
            ("ULA + increment, box [-1, 1]", ULA(STEP, box=BOX), partial(plain_ula, box=True),
             None),
            ("MALA, box [-1, 1]", MALA(STEP, box=BOX), partial(plain_mala, box=True), None),
        ]:
            other = other if peer else None
            gen = torch.Generator().manual_seed(2)
            state = WalkerState.unweighted(start.clone())
            ours_t, plain_t, other_t = [], [], []
            ours.step(gen, state, model, 1)  # warm-up of each
            plain(model, start.clone(), 1, STEP)
            if other is not None:
                other(model, start.clone(), 1, STEP)
            for _ in range(args.repeats):  # interleaved: load hits each alike
                ours_t.append(seconds(lambda: ours.step(gen, state, model, args.steps)))
                plain_t.append(seconds(lambda: plain(model, start.clone(), args.steps, STEP)))
                if other is not None:
                    other_t.append(seconds(lambda: other(model, start.clone(), args.steps,
                                                         STEP)))
            a = statistics.median(ours_t) / args.steps
            b = statistics.median(plain_t) / args.steps
            c = f"{statistics.median(other_t) / args.steps:.4f}" if other_t else "-"
            r = f"{a / (statistics.median(other_t) / args.steps):.2f}" if other_t else "-"
            print(f"| {threads} | {name} | {a:.4f} | {b:.4f} | {a / b:.2f} | {c} | {r} |",
                  flush=True)


if __name__ == "__main__":
    main()

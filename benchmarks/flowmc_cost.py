"""Where a FlowMC-EBM update's time goes (issue 18, acceptance 5), and why the flow is an
affine MAF.

The update of ``configs/flowmc_gmm4_d64.yaml`` (d = 64, 512 walkers, 1 flow-IMH + 10 MALA
steps, 2 flow steps) and of ``configs/flowmc_gmm4_d64_mlp.yaml`` (the same with an MLP
energy), timed part by part on the trainer itself, in this process, one thread:

- ``flow sampling``: ``Flow.sample`` (an autoregressive flow inverts one coordinate at a time:
  d passes of its conditioner per draw);
- ``flow density``: ``Flow.log_prob`` of the walkers inside the IMH step (one pass);
- ``IMH rest``: the two energies of the IMH ratio and the accept step;
- ``MALA``: the 10 MALA steps (energy and gradient of each proposal);
- ``EBM gradient``: the contrastive loss and its backward pass (the joint phase less its
  kernel);
- ``flow fit``: the flow's two maximum-likelihood phases (loss, backward);
- ``optimizers``: the rest (optimizer steps, bookkeeping).

Each with a MAF of 3 layers (the research's flow) and a RealNVP of 6 (the shipped configs').
Then the flow families zuko offers at d = 64: ``Flow.sample`` of 512 draws for an affine MAF,
a rational-quadratic spline NSF of the same depth and width, and RealNVP of twice the depth.

    python benchmarks/flowmc_cost.py [--updates 100] [--energy mixture mlp]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"mixture": "configs/flowmc_gmm4_d64.yaml", "mlp": "configs/flowmc_gmm4_d64_mlp.yaml"}


class Clock:
    """Seconds per named part, summed; ``wrap`` times a method of a class."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, cls, name: str, part, restore: list) -> None:
        original = getattr(cls, name)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = part(*args, **kwargs) if callable(part) else part
                self.seconds[key] += time.perf_counter() - t0

        setattr(cls, name, timed)
        restore.append((cls, name, original))


# The flows compared: zuko's family and its layers (coupling layers are each less flexible
# than an autoregressive one: twice as many)
FLOWS = {"maf": ["algorithm.flow_family=maf", "algorithm.flow_transforms=3"],
         "realnvp": ["algorithm.flow_family=realnvp", "algorithm.flow_transforms=6"]}


def time_updates(energy: str, updates: int, flow: str) -> tuple[dict[str, float], float]:
    from raybm.algorithms.flowmc import FlowMCEBM
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.models.flow import Flow
    from raybm.samplers.flowmc import FlowMC
    from raybm.samplers.langevin import MALA
    from raybm.train import Trainer, make_trainer

    config = load_config(str(ROOT / CONFIGS[energy]), ["train.threads=1",
                                                       "distributed.workers=0", *FLOWS[flow]])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    for _ in range(5):  # warm caches and the adaptive step
        trainer.update(diagnostics=False)
    clock, restore = Clock(), []
    clock.wrap(Flow, "sample", "flow sampling", restore)
    clock.wrap(Flow, "log_prob", lambda self, x: "flow log_prob", restore)
    clock.wrap(FlowMC, "imh", "IMH", restore)
    clock.wrap(MALA, "step", "MALA", restore)
    clock.wrap(FlowMCEBM, "estimate", lambda self, *a, **k: f"estimate {a[-1]}", restore)
    clock.wrap(Trainer, "_gradients", lambda self, phase, est: f"backward {phase.name}",
               restore)
    t0 = time.perf_counter()
    try:
        for _ in range(updates):
            trainer.update(diagnostics=False)
    finally:
        for cls, name, original in restore:
            setattr(cls, name, original)
    total = time.perf_counter() - t0
    s = clock.seconds
    # log_prob runs in the IMH step (the walkers' density) and in the fit (the loss): the
    # IMH's share is its call inside imh, the rest belongs to the fit.
    fit = s["estimate fit"] + s["backward fit"]
    imh_density = max(0.0, s["flow log_prob"] - s["estimate fit"])
    parts = {
        "flow sampling": s["flow sampling"],
        "flow density (IMH)": imh_density,
        "IMH rest (energies, accept)": s["IMH"] - s["flow sampling"] - imh_density,
        "MALA": s["MALA"],
        "EBM gradient": s["estimate joint"] - s["IMH"] - s["MALA"] + s["backward joint"],
        "flow fit": fit,
    }
    parts["optimizers, other"] = total - sum(parts.values())
    return {k: v / updates for k, v in parts.items()}, total / updates


def time_families(dim: int = 64, n: int = 512, repeats: int = 5) -> dict[str, float]:
    from raybm.models.flow import Flow

    out = {}
    for family, layers in (("maf", 3), ("nsf", 3), ("realnvp", 6)):
        flow = Flow(dim, family, layers, (64, 64), gen=torch.Generator().manual_seed(0),
                    identity=False)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            flow.sample(gen, n)
            t0 = time.perf_counter()
            for _ in range(repeats):
                flow.sample(gen, n)
        out[family] = (time.perf_counter() - t0) / repeats
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--energy", nargs="+", default=["mixture", "mlp"],
                        choices=sorted(CONFIGS))
    parser.add_argument("--flows", nargs="+", default=["maf", "realnvp"], choices=sorted(FLOWS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"CPU capability: {torch.backends.cpu.get_cpu_capability()}, 1 thread")
    for energy in args.energy:
        for flow in args.flows:
            parts, per_update = time_updates(energy, args.updates, flow)
            print(f"\n{CONFIGS[energy]} with {' '.join(FLOWS[flow])}: "
                  f"{per_update * 1e3:.1f} ms per update ({args.updates} updates)")
            print("| part | ms / update | share |")
            print("|---|---|---|")
            for name, seconds in parts.items():
                print(f"| {name} | {seconds * 1e3:.1f} | {seconds / per_update:.0%} |")
            share = parts["flow sampling"] + parts["flow density (IMH)"] + parts["flow fit"]
            print(f"the flow's share (sampling, density, fit): {share / per_update:.0%}")
    families = time_families()
    print("\nFlow.sample of 512 draws at d = 64, hidden [64, 64] (MAF, NSF 3 layers; "
          "RealNVP 6):")
    for family, seconds in families.items():
        print(f"  {family}: {seconds * 1e3:.1f} ms ({seconds / families['maf']:.2f} x maf)")


if __name__ == "__main__":
    main()

"""Mode weights on a bimodal target: Jarzynski-weighted walkers against PCD-k.

Target (issue 3, after Carbone et al. 2023, arXiv 2305.19414): two complementary prototypes in
20 visible units, each bit flipped with probability 0.03, weights 0.75 / 0.25, a landscape
where persistent chains cannot cross between the modes. After training, the weight of the
minor mode is computed *exactly* by enumerating all 2^20 visible states of the trained RBM
and giving each state to its nearer prototype (Hamming distance; ties split evenly).

    python benchmarks/bimodal_modes.py [--seeds 0 1 2] [--updates 1500] [--walkers 2000]
"""

from __future__ import annotations

import argparse
import time

import torch

from raybm.config import load_config
from raybm.data.synthetic import bimodal_prototypes, prototype_mixture
from raybm.metrics.exact import all_binary_states, as_float64
from raybm.train import make_trainer, run_updates

N_VISIBLE, FLIP, WEIGHTS = 20, 0.03, (0.75, 0.25)


@torch.no_grad()
def minor_mode_weight(model, prototypes: torch.Tensor) -> float:
    """Exact probability mass of the states nearer the second prototype."""
    m = as_float64(model)
    states = all_binary_states(N_VISIBLE)
    logp = -m.free_energy(states)
    p = torch.softmax(logp, 0)
    d0 = (states != prototypes[0]).sum(1)
    d1 = (states != prototypes[1]).sum(1)
    share = (d1 < d0).double() + 0.5 * (d1 == d0).double()
    return float((p * share).sum())


def train(algorithm: str, seed: int, n_updates: int, n_walkers: int, k: int = 10,
          lr: float = 0.05):
    gen = torch.Generator().manual_seed(seed)
    prototypes = bimodal_prototypes(N_VISIBLE)
    data = prototype_mixture(gen, 6000, prototypes, torch.tensor(WEIGHTS), FLIP)
    data.labels, data.label_names = None, None
    config = load_config(None, [
        f"algorithm.name={algorithm}", f"algorithm.k={k}", f"algorithm.n_walkers={n_walkers}",
        "model.n_hidden=10", "model.labels=false", "optimizer.name=sgd", f"optimizer.lr={lr}",
        "train.batch_size=200", f"train.seed={seed}", "train.progress=false",
        "train.log_every=100", "train.threads=1",
    ])
    trainer = make_trainer(config, data)
    run_updates(trainer, n_updates)
    return minor_mode_weight(trainer.model, prototypes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--walkers", type=int, default=2000)
    args = parser.parse_args()
    print(f"minor-mode weight (target {WEIGHTS[1]}), {args.updates} updates, k = 10, "
          f"{args.walkers} walkers, workers: 0")
    print("| seed | Jarzynski | error | PCD-10 | error |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        t0 = time.perf_counter()
        jz = train("jarzynski", seed, args.updates, args.walkers)
        pcd = train("pcd", seed, args.updates, args.walkers)
        print(f"| {seed} | {jz:.3f} | {jz - WEIGHTS[1]:+.3f} | {pcd:.3f} | "
              f"{pcd - WEIGHTS[1]:+.3f} | ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Acceptance: PCD-10 and F&F-10 students recover a strong random teacher RBM.

A teacher RBM with 12 visible and 4 hidden units generates 5,000 training samples (exactly, by
enumeration). Its couplings are ``W ~ N(0, sigma^2)`` with *balancing* biases
``a = -W 1 / 2`` and ``b = -W^T 1 / 2`` (so every unit is near 50/50 and the structure lives in
the correlations); we require the independent-site model fitted to the training set to be at
least 0.3 nats per sample worse than the teacher on held-out samples (a weak teacher proves
nothing). Students are trained through raybm's own ``Trainer`` and scored by their *exact*
held-out log-likelihood (enumeration): the target is within 0.1 nats of the teacher's.

    python benchmarks/teacher_rbm.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from raybm.config import load_config
from raybm.data.synthetic import teacher_logprob, teacher_rbm_samples
from raybm.metrics.exact import log_likelihood
from raybm.train import make_trainer, run_updates

N_VISIBLE, N_HIDDEN, SIGMA = 12, 4, 1.5
N_TRAIN, N_TEST = 5000, 20000


def make_teacher(seed: int):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(N_VISIBLE, N_HIDDEN, generator=gen, dtype=torch.float64) * SIGMA
    vbias, hbias = -W.sum(1) / 2, -W.sum(0) / 2
    train = teacher_rbm_samples(gen, W, vbias, hbias, N_TRAIN)
    test = teacher_rbm_samples(gen, W, vbias, hbias, N_TEST)
    teacher_ll = float(teacher_logprob(test.x, W, vbias, hbias).mean())
    p = train.x.double().mean(0).clamp(1e-4, 1 - 1e-4)
    xt = test.x.double()
    independent_ll = float((xt * p.log() + (1 - xt) * (1 - p).log()).sum(1).mean())
    return train, test, teacher_ll, independent_ll


STUDENT = {
    "pcd": ["algorithm.name=pcd", "algorithm.n_walkers=1000"],
    "kstep": ["algorithm.name=kstep"],
}


def train_student(algorithm: str, train, seed: int, n_updates: int = 4000):
    overrides = STUDENT[algorithm] + [
        "algorithm.k=10", "model.n_hidden=8", "model.labels=false",
        "optimizer.name=adam", "optimizer.lr=0.005", "train.batch_size=500",
        f"train.n_updates={n_updates}", f"train.seed={seed}", "train.progress=false",
        "train.log_every=1000", "train.threads=1",
    ]
    config = load_config(None, overrides)
    trainer = make_trainer(config, train)
    run_updates(trainer, n_updates)
    return trainer.model


def run(seed: int, algorithms=("pcd", "kstep"), n_updates: int = 4000) -> dict[str, float]:
    train, test, teacher_ll, independent_ll = make_teacher(seed)
    out = {"teacher": teacher_ll, "independent": independent_ll}
    for algorithm in algorithms:
        t0 = time.perf_counter()
        model = train_student(algorithm, train, seed, n_updates)
        out[algorithm] = float(log_likelihood(model, test.x).mean())
        out[f"{algorithm}_seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, default=4000)
    args = parser.parse_args()
    print("| seed | teacher LL | independent-site gap | PCD-10 gap to teacher | F&F-10 gap to teacher |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        r = run(seed, n_updates=args.updates)
        print(f"| {seed} | {r['teacher']:.4f} | {r['teacher'] - r['independent']:.3f} | "
              f"{r['teacher'] - r['pcd']:.4f} ({r['pcd_seconds']:.0f} s) | "
              f"{r['teacher'] - r['kstep']:.4f} ({r['kstep_seconds']:.0f} s) |", flush=True)


if __name__ == "__main__":
    main()

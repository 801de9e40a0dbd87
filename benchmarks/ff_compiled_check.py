"""Does F&F train the same with this tree's compiled kernels as with another tree's?

``same_as_before.py`` asks for bit-identical runs, which a change of the random draws rules
out. This asks the statistical question for the path such a change touches: F&F-10 with
labels on MNIST (784 x 512, batch 2,000, ``sampler.compile=true``, the sizes of
``train_throughput.py``) is trained ``--updates`` updates in each tree from the same seed, in
fresh processes, and scored on the held-out 10%: the exact accuracy ``argmax p(l | v)``, the
label-sampling accuracy after k = 10 label sweeps (the compiled label chain, 5 repeats), and
the sampled train accuracy the run logged over its last 100 updates.

    git worktree add /tmp/before <rev>
    python benchmarks/ff_compiled_check.py --other /tmp/before --precisions fp32 auto

One line per tree and precision. The two trees' figures differ by the run-to-run noise of a
400-update run when the draws are right (the sampled accuracies carry ~0.01 of Monte-Carlo
error over 1,000 test images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_one(precision: str, updates: int) -> dict[str, float]:
    """In this process (whichever tree PYTHONPATH gives): train and score."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import raybm_sets  # noqa: E402

    import raybm
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    torch.set_num_threads(2)
    # A higher rate than train_throughput's 0.01, so that 400 updates reach ~0.8 accuracy.
    sets = [s for s in raybm_sets("ff", precision, 10**6, "cpu", "true")
            if not s.startswith("optimizer.lr=")] + ["optimizer.lr=0.05"]
    config = load_config(None, sets)
    train, test = load_data(config)
    trainer = make_trainer(config, train)
    start = time.perf_counter()
    logged = []
    for i in range(updates):
        info = trainer.update(diagnostics=(i % 20 == 19))
        if info and i >= updates - 100:
            logged.append(info["train_label_accuracy"])
    seconds = time.perf_counter() - start
    model, kernel = trainer.model, trainer.estimator.kernel
    with torch.no_grad():
        exact = float((model.label_prob_v(test.x).argmax(1) == test.labels).float().mean())
    gen = torch.Generator().manual_seed(1)
    sampled = []
    for _ in range(5):
        begin = torch.randint(0, model.n_labels, (len(test.x),), generator=gen)
        labels, _ = kernel.label_chain(gen, model, test.x, begin, 10)
        sampled.append(float((labels == test.labels).float().mean()))
    return {"tree": str(Path(raybm.__file__).parents[1]), "precision": precision,
            "seconds": seconds, "exact": exact, "sampled": sum(sampled) / len(sampled),
            "sampled_spread": (max(sampled) - min(sampled)) / 2,
            "train_sampled": sum(logged) / len(logged) if logged else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--other", help="the other tree (a git worktree)")
    p.add_argument("--updates", type=int, default=400)
    p.add_argument("--precisions", nargs="+", default=["fp32", "auto"])
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]))))
        return
    if not args.other:
        p.error("--other is required (the tree to compare with)")
    for precision in args.precisions:
        for tree in (ROOT, Path(args.other).resolve()):
            env = dict(os.environ, PYTHONPATH=str(tree))
            done = subprocess.run([sys.executable, __file__, "--one", precision,
                                   str(args.updates)], env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{tree} ({precision}) failed:\n{done.stderr[-3000:]}")
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{r['precision']:>5} {r['tree']}: exact test accuracy {r['exact']:.4f}, "
                  f"sampled (k = 10) {r['sampled']:.4f} +- {r['sampled_spread']:.4f}, "
                  f"train sampled (last 100 updates) {r['train_sampled']:.4f}, "
                  f"{args.updates} updates in {r['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()

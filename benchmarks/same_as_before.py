"""Are training runs of this tree bit-identical to those of another tree (the one before a
refactor)? Six configs, one per estimator / kernel / model family, are run to ``--updates``
updates in each tree (fresh processes, one thread, tracking off), and every parameter, walker
state and log-weight of the final checkpoints is compared byte for byte.

    git worktree add /tmp/before <rev>
    python benchmarks/same_as_before.py --other /tmp/before

Prints one line per config: ``bit-identical`` or which arrays differ (and by how much).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES: dict[str, list[str]] = {
    "F&F k=5 with labels, digits": [
        "model.n_hidden=32", "algorithm.name=kstep", "algorithm.k=5"],
    "PCD-3 with Adam, digits": [
        "model.n_hidden=32", "algorithm.name=pcd", "algorithm.k=3", "optimizer.name=adam",
        "optimizer.lr=0.01"],
    "Jarzynski RBM, digits": [
        "model.n_hidden=32", "algorithm.name=jarzynski", "algorithm.k=3",
        "algorithm.n_walkers=200", "algorithm.ess_threshold=0.7"],
    "Jarzynski + ULA, 5-d mixture": [
        "data.format=gaussian_mixture", "data.mixture.dim=5", "data.mixture.n_samples=500",
        "model.kind=gaussian_mixture", "model.init_means=[[-0.1], [0.1]]", "sampler.name=ula",
        "sampler.step_size=0.1", "algorithm.name=jarzynski", "algorithm.k=2",
        "algorithm.n_walkers=300", "optimizer.lr=0.01",
        "optimizer.param_lr={log_weights: 0.05}"],
    "PCD + adaptive MALA, walkers from data": [
        "data.format=gaussian_mixture", "data.mixture.dim=5", "data.mixture.n_samples=500",
        "model.kind=gaussian_mixture", "sampler.name=mala", "sampler.step_size=0.5",
        "sampler.target_acceptance=0.5", "algorithm.name=pcd", "algorithm.walker_init=data",
        "algorithm.k=2", "algorithm.n_walkers=300"],
    "CD-2 of an MLP, 2-D two modes": [
        "data.format=toy2d", "data.toy.name=two_modes", "data.toy.n_samples=1000",
        "model.kind=mlp", "model.widths=[16, 16]", "sampler.name=ula",
        "sampler.step_size=0.05", "algorithm.name=cd", "algorithm.k=2"],
}


def run_one(overrides: list[str], updates: int, out: str) -> None:
    """In this process (whichever tree PYTHONPATH gives): train, save the arrays."""
    import numpy as np

    from raybm.checkpoint import load_checkpoint
    from raybm.config import load_config
    from raybm.run import train_run

    common = ["train.progress=false", "tracking.enabled=false", f"train.n_updates={updates}",
              f"train.checkpoint_every={updates}", "train.threads=1"]
    summary = train_run(load_config(None, overrides + common), out=Path(out) / "run",
                        evaluate_at_end=False)
    ckpt = load_checkpoint(summary.run_dir)
    arrays = {f"param.{k}": v.numpy() for k, v in ckpt.model.state_dict().items()}
    if ckpt.walkers is not None:
        arrays["walkers.x"] = ckpt.walkers.x.numpy()
        arrays["walkers.log_weight"] = ckpt.walkers.log_weight.numpy()
    np.savez(Path(out) / "arrays.npz", **arrays)
    # Which tree wrote it: its raybm's checkpoint format (3 since issue #16, 2 before).
    (Path(out) / "format").write_text(str(ckpt.meta["format_version"]))


def compare(a: Path, b: Path) -> str:
    import numpy as np

    with np.load(a) as x, np.load(b) as y:
        if set(x.files) != set(y.files):
            return f"different arrays: {sorted(set(x.files) ^ set(y.files))}"
        diff = [f"{k} (max |d| {float(np.abs(x[k].astype('f8') - y[k].astype('f8')).max()):.3g})"
                for k in x.files if x[k].tobytes() != y[k].tobytes()]
    return "bit-identical" if not diff else "DIFFERENT: " + ", ".join(diff)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--other", required=True, help="the other tree (a git worktree)")
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(json.loads(args.one[0]), int(args.one[1]), args.one[2])
        return 0
    print(f"{args.updates} updates per config; this tree {ROOT} against {args.other}")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(CASES.items()):
            outs = []
            for tree in (ROOT, Path(args.other).resolve()):
                out = Path(tmp) / f"{i}-{tree.name}"
                out.mkdir()
                subprocess.run([sys.executable, __file__, "--other", str(tree), "--one",
                                json.dumps(overrides), str(args.updates), str(out)],
                               check=True, capture_output=True, text=True, cwd=tmp,
                               env={**os.environ, "PYTHONPATH": str(tree),
                                    "OMP_NUM_THREADS": "1"})
                outs.append(out / "arrays.npz")
            formats = " / ".join((o.parent / "format").read_text() for o in outs)
            print(f"{name:42s} {compare(*outs)} (checkpoint formats {formats})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

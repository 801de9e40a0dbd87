"""Seconds per update with 1 and with 2 torch threads, in-process, for the shipped configs:
the measurement behind ``train.threads: auto`` (docs/config.md, "train.threads").

Each case builds its trainer as ``raybm train`` does (``make_trainer``) and times
``Trainer.update`` after a warm-up, in a fresh process per measurement, alternating the
thread counts (1 2 1 2 ...) so that load on the machine hits both alike; the median of the
rounds is printed. ``--load N`` keeps N busy-looping processes running meanwhile: a machine
that other work shares, where OpenMP threads spin-wait for a core.

    python benchmarks/threads.py                 # quiet machine
    python benchmarks/threads.py --load 1        # one core taken by other work
    python benchmarks/threads.py --cases gmm50_jarzynski mnist_pcd10

Prints the CPU, then per case: the work estimate ``auto`` reads (multiply-adds per update),
seconds per update at 1 and 2 threads, their ratio, and the count ``auto`` chooses.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
IMAGES = str(MNIST / "t10k-images-idx3-ubyte.gz")
LABELS = str(MNIST / "t10k-labels-idx1-ubyte.gz")

# name -> (config file or None, overrides, updates timed)
CASES: dict[str, tuple[str | None, list[str], int]] = {
    "gmm50_jarzynski": ("configs/gmm50_jarzynski.yaml", [], 60),
    "gmm50_pcd": ("configs/gmm50_pcd.yaml", [], 60),
    "toy2d_mlp_jarzynski": ("configs/toy2d_mlp_jarzynski.yaml", [], 20),
    "ff10_digits": ("configs/ff10_digits.yaml", [], 40),
    "mnist_pcd10": (None, ["data.path=" + IMAGES, "data.labels_path=" + LABELS,
                           "model.labels=false", "model.n_hidden=512", "algorithm.name=pcd",
                           "algorithm.k=10", "algorithm.n_walkers=2000",
                           "train.batch_size=2000"], 6),
    "mnist236_conv_pcd": ("configs/mnist236_conv_pcd.yaml",
                          ["data.path=" + IMAGES, "data.labels_path=" + LABELS,
                           "algorithm.k=5"], 4),
}


def measure(case: str, threads: int) -> dict:
    """One measurement in this process: seconds per update at ``threads``."""
    import torch

    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.models.build import energy_work
    from raybm.threads import auto_threads
    from raybm.train import make_trainer

    path, overrides, updates = CASES[case]
    config = load_config(ROOT / path if path else None, overrides + [
        f"train.threads={threads}", "train.progress=false", "tracking.enabled=false"])
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    assert torch.get_num_threads() == threads
    trainer.update()  # warm-up: first-touch allocations, oneDNN plans
    t0 = time.perf_counter()
    for _ in range(updates):
        trainer.update(diagnostics=False)
    seconds = (time.perf_counter() - t0) / updates
    cores = os.cpu_count() or 1
    return {"seconds": seconds, "auto": auto_threads(config, train, cores),
            "work": energy_work(config, train)}


def _spin() -> None:  # pragma: no cover - a background load
    while True:
        pass


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--load", type=int, default=0, help="busy-looping processes meanwhile")
    p.add_argument("--one", nargs=2, metavar=("CASE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]))))
        return 0
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = ("avx512f" if " avx512f" in flags else "avx2" if " avx2" in flags else "older")
    print(f"CPU: {cpu_model()} ({isa}), {os.cpu_count()} cores; background load: "
          f"{args.load} busy process(es); medians of {args.rounds} rounds")
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for s in spinners:
        s.start()
    try:
        print(f"{'case':22s} {'work/update':>12s} {'1 thread s':>11s} {'2 threads s':>12s} "
              f"{'2t/1t':>6s} {'auto':>5s}")
        for case in args.cases:
            if CASES[case][0] is None or "mnist" in case:
                if not MNIST.is_dir():
                    print(f"{case:22s} skipped: {MNIST} not found")
                    continue
            times: dict[int, list[float]] = {1: [], 2: []}
            result = {}
            for _ in range(args.rounds):
                for threads in (1, 2):
                    out = subprocess.run(
                        [sys.executable, __file__, "--one", case, str(threads)],
                        capture_output=True, text=True, cwd=ROOT, check=True,
                        env={**os.environ, "PYTHONPATH": str(ROOT)})
                    result = json.loads(out.stdout.strip().splitlines()[-1])
                    times[threads].append(result["seconds"])
            one, two = (statistics.median(times[t]) for t in (1, 2))
            print(f"{case:22s} {result['work']:12.3g} {one:11.4f} {two:12.4f} "
                  f"{two / one:6.2f} {result['auto']:5d}", flush=True)
    finally:
        for s in spinners:
            s.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the compiled bf16 draws' random words come from, A/B in one process: numpy's SFC64
in one thread (stored, before 2026-12-07) against SplitMix64 words stored by a compiled loop
over both cores (``fused.splitmix_words``, what a compiled bf16 run now takes).

Two trainers of the same method and seed are built side by side with ``sampler.precision:
auto`` (bf16 where native) and the draws compiled; they differ only in their kernel's
``stream``. One update of each in turn, so both see the same machine within a second; the
ratio after / before is taken round by round (median and quartiles).

    python benchmarks/random_words_ab.py --methods pcd,ff,jarzynski --rounds 24

The two trainers draw different random numbers, so their walkers and parameters part after
the first update; both are the same training at this size (MNIST t10k, 784 x 512, 2,000
walkers, k 10, from initialisation). Both start from walkers drawn on the splitmix64 stream
(the stream is swapped after the trainer is built); only the updates' words differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput  # noqa: E402

from raybm.config import load_config  # noqa: E402
from raybm.data.load import load_data  # noqa: E402
from raybm.train import make_trainer  # noqa: E402

STREAMS = ("sfc64", "splitmix64")  # before, after


def trainers(method: str) -> dict[str, object]:
    """The method's trainer once per stream, otherwise identical."""
    out = {}
    for stream in STREAMS:
        config = load_config(None, train_throughput.raybm_sets(method, "auto", 10**6, "cpu"))
        train, _ = load_data(config)
        trainer = make_trainer(config, train)
        kernel = trainer.estimator.kernel
        if kernel.precision != "bf16" or kernel.compile is not True:
            raise SystemExit(f"this CPU runs {kernel.precision}, compile {kernel.compile}: "
                             "the comparison is of compiled bf16 draws")
        trainer.estimator.kernel = dataclasses.replace(kernel, stream=stream)
        out[stream] = trainer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="pcd,ff,jarzynski")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"CPU: {train_throughput.cpu_line()}; torch {torch.__version__}, 2 threads")
    for method in args.methods.split(","):
        pair = trainers(method)
        for trainer in pair.values():  # compilation and first-touch pages out of the timing
            for _ in range(args.warmup):
                trainer.update(diagnostics=False)
        times = train_throughput.in_turn(pair, args.rounds)
        ratios = [a / b for a, b in zip(times[STREAMS[1]], times[STREAMS[0]])]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        ms = {s: 1000 * statistics.median(v) for s, v in times.items()}
        print(f"{method} auto: SFC64 words {ms['sfc64']:.1f} ms, SplitMix64 stored by a "
              f"compiled loop {ms['splitmix64']:.1f} ms per update; after / before "
              f"{statistics.median(ratios):.3f} (quartiles {q1:.3f}-{q3:.3f}), "
              f"{args.rounds} rounds", flush=True)


if __name__ == "__main__":
    main()

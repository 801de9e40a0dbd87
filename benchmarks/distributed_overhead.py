"""Where the time of a distributed Jarzynski update goes, and what the shards send each other.

A 784 x 512 Bernoulli RBM (MNIST shape) with 8,192 walkers trained by Jarzynski-weighted
PCD-k (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414) on 1 and 2 local gloo ranks
(the process group Ray Train gives its workers; Ray itself only adds its start-up). Each update
is split into

    sampling     the k Gibbs sweeps of the shard (and the forward free energies of the loss)
    gradient     backward pass, optimizer step, Jarzynski work update
    collectives  all-gathers of the log-weights (softmax normaliser, ESS, log Z) and the
                 all-reduce of the flat gradient
    resampling   the ancestor draw's exchange of walker rows (uneven all-to-all)

with the bytes each rank sends per update. The projection to 8 and 64 shards keeps 4,096
walkers per shard (a population that grows with the hardware) and charges the measured byte
counts, scaled by the collectives' algorithms (ring all-reduce 2(S-1)/S of the buffer,
all-gather (S-1)/S of the population's log-weights), to a stated link bandwidth and latency.

    python benchmarks/distributed_overhead.py [--updates 60] [--k 10] [--walkers 8192] [--ess 1.0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from raybm.config import load_config
from raybm.data.dataset import Dataset
from raybm.distributed.spawn import run_ranks

LINKS = {"10 GbE": (1.25e9, 50e-6), "100 Gb/s InfiniBand": (12.5e9, 5e-6)}  # bytes/s, latency


def mnist_or_random(data_root: Path, n: int = 10_000) -> tuple[Dataset, str]:
    """MNIST images (binarised) when ../shared/data has them, else random bits: the cost of
    an update depends on the shapes, not on the pixels."""
    images = data_root / "mnist" / "t10k-images-idx3-ubyte.gz"
    if images.exists():
        from raybm.data.idx import load_idx

        return load_idx(images, None, threshold=0.5), "MNIST"
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 784, generator=g) < 0.13).to(torch.uint8)
    return Dataset(x=x, n_states=2), "random bits (MNIST not found)"


def one_rank(rank: int, world: int, args: dict) -> dict:
    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.train import make_trainer, run_updates

    data, _ = mnist_or_random(Path(args["data_root"]))
    config = load_config(None, [
        "algorithm.name=jarzynski", f"algorithm.k={args['k']}",
        f"algorithm.n_walkers={args['walkers']}", f"algorithm.ess_threshold={args['ess']}",
        "sampler.precision=bf16", "model.n_hidden=512", "model.labels=false",
        "optimizer.name=sgd", "optimizer.lr=0.01", "train.batch_size=1000",
        "train.progress=false", f"train.threads={args['threads']}", "train.log_every=100000"])
    comm = TorchComm() if world > 1 else LOCAL
    trainer = make_trainer(config, data, population=comm)
    run_updates(trainer, args["warmup"])  # first updates pay for allocation and caches
    trainer.timings.clear()
    if world > 1:
        comm.seconds.clear(), comm.bytes_sent.clear()
    resamplings = trainer.estimator.n_resamplings
    t0 = time.perf_counter()
    run_updates(trainer, args["warmup"] + args["updates"])
    wall = time.perf_counter() - t0
    seconds = dict(getattr(comm, "seconds", {}))
    nbytes = dict(getattr(comm, "bytes_sent", {}))
    return {"wall": wall, "timings": dict(trainer.timings), "seconds": seconds,
            "bytes": nbytes, "resamplings": trainer.estimator.n_resamplings - resamplings}


def split(result: dict, updates: int) -> dict[str, float]:
    """Milliseconds per update in the four parts (see the module docstring)."""
    t, c = result["timings"], result["seconds"]
    gather, exchange = c.get("gather", 0.0), c.get("exchange", 0.0)
    parts = {
        "sampling": t["estimate"] - gather - exchange,
        "gradient": t["gradient"] + t["optimizer"],
        "collectives": gather + t.get("all_reduce", 0.0),
        "resampling": exchange,
    }
    return {k: 1e3 * v / updates for k, v in parts.items()} | {
        "update": 1e3 * result["wall"] / updates}


def project(bytes_per_update: dict[str, float], world: int, compute_ms: float,
            n_params: int, walkers_per_shard: int, resample_rows: float) -> list[str]:
    """Communication time per update at ``S`` shards on each link, against the compute time
    of one shard (walkers per shard held fixed)."""
    rows = []
    for shards in (2, 8, 64):
        reduce_b = 2 * (shards - 1) / shards * (n_params + 1) * 8
        n_total = walkers_per_shard * shards
        gather_b = 2 * (shards - 1) / shards * n_total * 8  # two gathers per update
        exchange_b = resample_rows * (784 + 8)  # moved rows per update per rank, measured
        total = reduce_b + gather_b + exchange_b
        for link, (bandwidth, latency) in LINKS.items():
            steps = 2 * (shards - 1) + 2 * (shards - 1) + 1  # ring reduce, gathers, a2a
            ms = 1e3 * (total / bandwidth + steps * latency)
            rows.append(f"| {shards} | {link} | {total / 1e6:.2f} | {ms:.2f} | "
                        f"{100 * ms / (ms + compute_ms):.1f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--walkers", type=int, default=8192)
    parser.add_argument("--ess", type=float, default=1.0,
                        help="resampling threshold (default 1.0: every update resamples, the "
                             "upper bound of the resampling cost)")
    parser.add_argument("--data-root", default="../shared/data")
    args = parser.parse_args()
    _, source = mnist_or_random(Path(args.data_root), 10)
    print(f"784 x 512 Bernoulli RBM, {args.walkers} walkers, Jarzynski k = {args.k}, bf16 "
          f"sweeps, batch 1000 ({source}), {args.updates} timed updates, "
          f"{torch.get_num_threads()} cores\n")
    print("| workers | threads each | update ms | sampling | gradient | collectives | "
          "resampling | comm share | resamplings | bytes sent / update / rank |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {"k": args.k, "walkers": args.walkers, "ess": args.ess, "warmup": args.warmup,
            "updates": args.updates, "data_root": args.data_root}
    measured = {}
    for world, threads in ((1, 2), (2, 1)):
        results = run_ranks(world, one_rank, base | {"threads": threads}, threads=threads)
        ms = split(results[0], args.updates)  # rank 0; the ranks wait for each other
        sent = sum(results[0]["bytes"].values()) / args.updates
        share = (ms["collectives"] + ms["resampling"]) / ms["update"]
        measured[world] = (ms, results[0])
        print(f"| {world} | {threads} | {ms['update']:.1f} | {ms['sampling']:.1f} | "
              f"{ms['gradient']:.1f} | {ms['collectives']:.2f} | {ms['resampling']:.2f} | "
              f"{100 * share:.1f}% | {results[0]['resamplings']} | {sent / 1e3:.0f} kB |",
              flush=True)
    ms, r = measured[2]
    per_update = {k: v / args.updates for k, v in r["bytes"].items()}
    rows_moved = per_update.get("exchange", 0.0) / (784 + 8)
    compute = ms["sampling"] + ms["gradient"]
    n_params = 784 * 512 + 784 + 512
    print(f"\nmeasured at 2 workers: {per_update.get('all_reduce', 0) / 1e3:.0f} kB all-reduce, "
          f"{per_update.get('gather', 0) / 1e3:.0f} kB gathers, "
          f"{per_update.get('exchange', 0) / 1e3:.1f} kB exchange per update per rank; "
          f"target (collectives + resampling <= 5% of the update): "
          f"{'met' if (ms['collectives'] + ms['resampling']) <= 0.05 * ms['update'] else 'NOT met'}")
    print(f"\nprojection, {args.walkers // 2} walkers per shard, per-shard compute "
          f"{compute:.1f} ms/update (measured at 2 workers):\n")
    print("| shards | link | MB sent / update / rank | comm ms / update | comm share |")
    print("|---|---|---|---|---|")
    for row in project(per_update, 2, compute, n_params, args.walkers // 2, rows_moved):
        print(row)


if __name__ == "__main__":
    main()

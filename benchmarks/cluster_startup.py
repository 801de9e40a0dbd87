"""Time from ``raybm train`` to its first update: joining a 2-node local Ray cluster
(``--address``) against starting a local single-node Ray (acceptance 3 of issue 9).

Both cases run the same command in a fresh process (the 2-worker Jarzynski job on digits,
``distributed.workers: 2``); the cluster case first starts a head (0 CPUs) and two worker
nodes with ``ray start`` (separate raylets and object stores, as on real machines) and joins
it, placing the shards with ``distributed.placement: spread``. Each run's own
``timings.json`` splits the time:

    process + imports + data   from the command's launch until it starts / joins Ray
    Ray start or join          ``ray.init`` (a local Ray starts its GCS, raylet, workers)
    workers up                 Ray Train's controller, the placement group, two worker
                               processes started and importing torch + raybm
    shard set-up               each worker loads the data and builds its shard (the gloo
                               process group is up by then)
    first update               rank 0's first update (Gibbs sweeps, gradient all-reduce)

    python benchmarks/cluster_startup.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = ["--set", "train.n_updates=3", "--set", "train.log_every=1", "--set",
       "train.progress=false", "--set", "distributed.workers=2", "--set", "train.threads=1",
       "--set", "algorithm.name=jarzynski", "--set", "model.labels=false"]


def ray_cli(*args: str, env: dict[str, str]) -> None:
    subprocess.run(["ray", *args], check=True, capture_output=True, env=env)


def start_cluster(tmp: Path, env: dict[str, str]) -> str:
    """A head without CPUs and two 1-CPU worker nodes, each its own ``ray start``."""
    port = "6391"
    ray_cli("start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false",
            f"--temp-dir={tmp / 'ray'}", "--object-store-memory=100000000", env=env)
    for _ in range(2):
        ray_cli("start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                "--object-store-memory=100000000", env=env)
    return f"127.0.0.1:{port}"


def one_run(tmp: Path, name: str, extra: list[str], env: dict[str, str]) -> dict[str, float]:
    out = tmp / name
    launched = time.time()
    subprocess.run([sys.executable, "-m", "raybm.cli", "train", "--out", str(out), *JOB,
                    "--set", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", *extra],
                   check=True, capture_output=True, env=env, cwd=tmp)
    timings = json.loads((out / "timings.json").read_text())
    fit = timings["fits"][0]
    return {"before Ray": timings["ray_started"] - launched,
            "Ray start / join": timings["ray_start_s"],
            "workers up": fit["workers_up_s"],
            "shard set-up": fit["group_start_s"] - fit["workers_up_s"],
            "first update": fit["first_update_s"],
            "total": fit["called"] + fit["group_start_s"] + fit["first_update_s"] - launched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"local single-node": [],
                                                   "2-node cluster (--address)": []}
    with tempfile.TemporaryDirectory(prefix="raybm-startup-") as name:
        tmp = Path(name)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        for i in range(args.repeats):
            results["local single-node"].append(one_run(tmp, f"local{i}", [], env))
        # Ray 2.60's `ray start --head` turns token authentication on (the token in
        # ~/.ray/auth_token): the nodes and the driver that join it must use it too.
        env_cluster = env | {"RAY_AUTH_MODE": "token"}
        address = start_cluster(tmp, env_cluster)
        try:
            for i in range(args.repeats):
                results["2-node cluster (--address)"].append(one_run(
                    tmp, f"cluster{i}", ["--address", address, "--set",
                                         "distributed.placement=spread"], env_cluster))
        finally:
            ray_cli("stop", "--force", env=env_cluster)
    parts = list(next(iter(results.values()))[0])
    print(f"median of {args.repeats} runs, seconds")
    print("| start | " + " | ".join(parts) + " |")
    print("|---" * (len(parts) + 1) + "|")
    for case, rows in results.items():
        print(f"| {case} | " + " | ".join(f"{statistics.median(r[p] for r in rows):.2f}"
                                         for p in parts) + " |")


if __name__ == "__main__":
    main()

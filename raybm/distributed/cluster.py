"""The Ray cluster a run trains on: joining one, saying which, and checking what its nodes see.

A run joins an existing cluster with ``--address`` (or ``RAY_ADDRESS``, which Ray reads
itself) and otherwise starts a local Ray. On a cluster every worker reads ``data.path`` and
writes its shard of each checkpoint into the run directory, so both must be on storage every
node mounts: :func:`check_shared_paths` asks every alive node, with a task pinned to it, before
any worker starts, and turns a missing path into one line naming the node. Each worker also
records the node it runs on (:func:`record_node`); the driver logs them as MLflow tags.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raybm.checkpoint import atomic_write_text
from raybm.errors import InputError

NODES_DIR = "nodes"  # <fit>/nodes/rank-NNN.json, one per worker start
SHARED_STORAGE_HINT = ("on a Ray cluster, data and run directories must be on storage every "
                       "node mounts (docs/cluster.md)")


@dataclass(frozen=True)
class ClusterInfo:
    address: str
    joined: bool  # an existing cluster (--address / RAY_ADDRESS), not one started here
    nodes: int
    cpus: float
    gpus: float
    node_cpus: float  # the largest alive node's CPUs: no bundle can be bigger

    def line(self) -> str:
        where = (f"joined the Ray cluster at {self.address}" if self.joined
                 else f"started a local Ray at {self.address}")
        return (f"{where}: {self.nodes} node{'s' if self.nodes != 1 else ''}, "
                f"{self.cpus:g} CPUs, {self.gpus:g} GPUs")


def requested_address() -> str | None:
    """The cluster the user asked to join (``--address`` sets ``RAY_ADDRESS``), if any."""
    return os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` to join must answer: Ray itself retries an address where nothing
    listens for about a minute, then fails with a page of log lines."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():  # auto, ray://..., Ray decides
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise InputError(address, "--address", f"cannot join this Ray cluster (nothing "
                         f"answers there: {err.strerror or err}); is its head running "
                         f"(ray start --head)?") from None


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def cluster_info(joined: bool) -> ClusterInfo:
    import ray

    nodes = alive_nodes()
    resources = ray.cluster_resources()
    return ClusterInfo(
        address=ray.get_runtime_context().gcs_address, joined=joined, nodes=len(nodes),
        cpus=float(resources.get("CPU", 0)), gpus=float(resources.get("GPU", 0)),
        node_cpus=max((float(n["Resources"].get("CPU", 0)) for n in nodes), default=0.0))


def _unreadable(paths: dict[str, str], probe: str | None) -> dict[str, Any]:
    """On one node: the fields whose paths it cannot read, and where it is."""
    import ray

    missing = [field for field, path in paths.items() if not os.access(path, os.R_OK)]
    if probe is not None and not os.path.isfile(probe):
        missing.append("run directory")
    return {"missing": missing, "ip": ray.util.get_node_ip_address(),
            "node_id": ray.get_runtime_context().get_node_id()}


def check_shared_paths(paths: dict[str, Path], run_dir: Path | None,
                       timeout_s: float = 120.0) -> int:
    """Ask every alive node whether it can read ``paths`` (config field -> file) and see
    ``run_dir``; the number of nodes asked.

    The run directory may not exist yet: a probe file is written into its nearest existing
    folder (and removed), and every node must see it. One zero-CPU task per node, pinned to it
    (a busy node still answers). A node that does not answer within ``timeout_s`` is not
    judged: its workers check again when they start.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = None
    if run_dir is not None:
        folder = next(p for p in (Path(run_dir), *Path(run_dir).parents) if p.is_dir())
        probe = folder / f".raybm-probe-{uuid.uuid4().hex[:8]}"
        atomic_write_text(probe, "raybm: every node must see this run directory\n")
    remote = ray.remote(num_cpus=0, max_retries=0)(_unreadable)
    try:
        nodes = alive_nodes()
        asked = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
                     n["NodeID"], soft=False)).remote({k: str(v) for k, v in paths.items()},
                                                      None if probe is None else str(probe))
                 for n in nodes]
        ready, _ = ray.wait(asked, num_returns=len(asked), timeout=timeout_s)
        for answer in ray.get(ready):
            if answer["missing"]:
                field = answer["missing"][0]
                where = run_dir if field == "run directory" else paths[field]
                raise InputError(where, "" if field == "run directory" else field,
                                 f"not readable on node {answer['ip']} "
                                 f"({answer['node_id'][:8]}): {SHARED_STORAGE_HINT}")
        return len(nodes)
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)


def this_node() -> dict[str, Any] | None:
    """The Ray node this process runs on, or None outside Ray (an in-process run)."""
    if "ray" not in sys.modules:  # never import Ray for a run that does not use it
        return None
    import ray

    if not ray.is_initialized():
        return None
    return {"node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(), "started": time.time()}


def record_node(fit_dir: Path, rank: int) -> None:
    """Worker side: the node this rank runs on, written into the fit's folder at start (the
    run directory is shared storage, so the driver reads it wherever this node is)."""
    folder = Path(fit_dir) / NODES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"rank-{rank:03d}-{os.getpid()}.json",
                      json.dumps({"rank": rank, **this_node()}))


def worker_nodes(fit_dir: Path) -> dict[int, dict[str, Any]]:
    """Rank -> the node of its latest start in this fit (a restarted group replaces the
    earlier group's records)."""
    latest: dict[int, dict[str, Any]] = {}
    for path in sorted((Path(fit_dir) / NODES_DIR).glob("rank-*.json")):
        record = json.loads(path.read_text())
        if record["rank"] not in latest or record["started"] >= latest[record["rank"]]["started"]:
            latest[record["rank"]] = record
    return latest


def node_tags(nodes: dict[int, dict[str, Any]]) -> dict[str, str]:
    """MLflow tags: each rank's node id and IP, and how many distinct nodes held shards."""
    tags = {f"raybm.node.rank{r}": n["node_id"] for r, n in sorted(nodes.items())}
    tags |= {f"raybm.node_ip.rank{r}": n["ip"] for r, n in sorted(nodes.items())}
    tags["raybm.nodes"] = str(len({n["node_id"] for n in nodes.values()}))
    return tags

"""Checkpoints: written atomically, read without pickle.

A checkpoint is a directory::

    meta.json         step, model spec, config, RNG bookkeeping, tracking run id (JSON)
    state.pt          parameters, optimizer state, centring offsets, generator state
                      (tensors and plain containers only: read with ``weights_only=True``)
    walkers.parquet   one row per walker: ``x`` (its visible state, bytes), ``log_weight``,
                      ``label`` (absent column when the model has no label unit)

A run with N > 1 workers writes one Parquet file per shard instead,
``walkers-RRR-of-NNN.parquet``, each carrying its rank's generator state in the file's schema
metadata; ``meta.json`` lists them (``shard_files``), and a checkpoint missing any of them is
incomplete and never loaded. Every rank writes its own files into its own directory and Ray
Train merges the directories reported at one step (``raybm.distributed``).

It is first written to ``<name>.tmp-<pid>`` and renamed into place, then the run's ``latest``
pointer is replaced atomically, so a crash at any moment leaves the previous checkpoint
usable and never a half-written one under a checkpoint's name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raybm.errors import InputError
from raybm.models.rbm import RBM, build_rbm
from raybm.walkers import WalkerState, concat_walkers, shard_slice

FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def model_spec(model: RBM) -> dict[str, int | str]:
    return {
        "kind": type(model).__name__,
        "n_visible": model.n_visible,
        "n_hidden": model.n_hidden,
        "n_states": model.n_states,
        "n_labels": model.n_labels,
    }


def model_from_spec(spec: dict[str, Any]) -> RBM:
    return build_rbm(spec["n_visible"], spec["n_hidden"], spec["n_states"], spec["n_labels"])


def walkers_to_table(walkers: WalkerState) -> pa.Table:
    x = walkers.x.contiguous().numpy()
    n, width = x.shape
    cols = {
        "x": pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(width), n, [None, pa.py_buffer(x.tobytes())]
        ),
        "log_weight": pa.array(walkers.log_weight.double().numpy()),
    }
    if walkers.label is not None:
        cols["label"] = pa.array(walkers.label.long().numpy())
    return pa.table(cols)


def walkers_from_table(table: pa.Table, where: str) -> WalkerState:
    for col in ("x", "log_weight"):
        if col not in table.column_names:
            raise InputError(where, col, "missing column in walker file")
    xcol = table.column("x").combine_chunks()
    width = xcol.type.byte_width
    raw = np.frombuffer(xcol.buffers()[1], dtype=np.uint8)[: len(xcol) * width]
    x = torch.from_numpy(raw.reshape(len(xcol), width).copy())
    logw = torch.from_numpy(table.column("log_weight").to_numpy().astype(np.float64))
    label = None
    if "label" in table.column_names:
        label = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    return WalkerState(x=x, log_weight=logw, label=label)


GENERATOR_KEY = b"raybm.generator"


def shard_file(rank: int, world_size: int) -> str:
    return f"walkers-{rank:03d}-of-{world_size:03d}.parquet"


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    model: RBM
    meta: dict[str, Any]
    state: dict[str, Any]
    walkers: WalkerState | None  # the whole population, shards concatenated in rank order
    shards: list[WalkerState | None] | None = None
    shard_generators: list[torch.Tensor | None] | None = None

    def shard(self, rank: int, world_size: int
              ) -> tuple[WalkerState | None, torch.Tensor | None, bool]:
        """Rank ``rank``'s walkers and generator state, and whether the split is the saved one.

        With the saved number of shards each rank gets its own rows and generator back;
        otherwise the population is re-split evenly (generator None: seed afresh).
        """
        saved = len(self.shards) if self.shards is not None else 1
        if self.walkers is None:  # no persistent walkers: only the generators to restore
            if self.shards is not None and saved == world_size:
                return None, self.shard_generators[rank], True
            return None, None, saved == world_size
        if saved == world_size:
            if self.shards is None:
                return self.walkers, None, True
            return self.shards[rank], self.shard_generators[rank], True
        return self.walkers.take(
            torch.arange(self.walkers.n_walkers)[shard_slice(self.walkers.n_walkers,
                                                             world_size, rank)]), None, False


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    model: RBM,
    state: dict[str, Any],
    walkers: WalkerState | None,
    meta: dict[str, Any],
) -> Path:
    """Write a checkpoint directory atomically and return its path."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    full_state = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, **state}
    torch.save(full_state, tmp / "state.pt")
    if walkers is not None:
        pq.write_table(walkers_to_table(walkers), tmp / "walkers.parquet")
    full_meta = {"format_version": FORMAT_VERSION, "step": step, "model": model_spec(model), **meta}
    (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, default=str))
    if directory.exists():  # re-saving the same step: swap, never leave it missing
        old = directory.with_name(f"{directory.name}.old-{os.getpid()}")
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old)
    else:
        os.replace(tmp, directory)
    return directory


def write_shard(directory: Path, rank: int, world_size: int, walkers: WalkerState | None,
                generator_state: torch.Tensor) -> Path:
    """Write one rank's walkers (and its generator state) into ``directory``, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Algorithms without persistent walkers (CD, F&F) still keep each rank's generator here.
    table = (walkers_to_table(walkers) if walkers is not None
             else pa.table({"log_weight": pa.array([], pa.float64())}))
    table = table.replace_schema_metadata({GENERATOR_KEY: generator_state.numpy().tobytes()})
    path = directory / shard_file(rank, world_size)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_common(directory: Path, *, step: int, model: RBM, state: dict[str, Any],
                 meta: dict[str, Any], world_size: int) -> None:
    """Rank 0's part of a sharded checkpoint: parameters and state, then ``meta.json`` last
    (its presence, with every shard it lists, is what makes the checkpoint complete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    full_state = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()}, **state}
    tmp = directory / f".state.pt.tmp-{os.getpid()}"
    torch.save(full_state, tmp)
    os.replace(tmp, directory / "state.pt")
    full_meta = {"format_version": FORMAT_VERSION, "step": step, "model": model_spec(model),
                 "shard_files": [shard_file(r, world_size) for r in range(world_size)], **meta}
    atomic_write_text(directory / "meta.json", json.dumps(full_meta, indent=2, default=str))


def is_complete(checkpoint: Path) -> bool:
    """A checkpoint directory with its ``meta.json``, ``state.pt`` and every listed shard."""
    try:
        meta = json.loads((checkpoint / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    files = ["state.pt"] + list(meta.get("shard_files", []))
    return all((checkpoint / f).is_file() for f in files)


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints Ray Train persisted anywhere under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [d for d in root.glob("**/checkpoint_*") if d.is_dir() and is_complete(d)]


def ray_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of every distributed fit of a run (under ``<run>/ray``)."""
    return complete_checkpoints(Path(run_dir) / "ray")


def checkpoint_step(checkpoint: Path) -> int:
    return int(json.loads((checkpoint / "meta.json").read_text())["step"])


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory from itself or a run directory (its ``latest`` pointer)."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    # A distributed run whose driver stopped early has newer checkpoints in Ray's storage.
    newest_ray = max(ray_checkpoints(path), key=checkpoint_step, default=None)
    pointer = path / "checkpoints" / "latest"
    if pointer.is_file():
        target = path / "checkpoints" / pointer.read_text().strip()
        if (target / "meta.json").is_file():
            if newest_ray is not None and checkpoint_step(newest_ray) > checkpoint_step(target):
                return newest_ray
            return target
        raise InputError(pointer, "", f"points at a missing checkpoint {target.name}")
    if newest_ray is not None:
        return newest_ray
    if not path.exists():
        raise InputError(path, "", "no such run or checkpoint directory")
    raise InputError(path, "", "not a run directory or checkpoint (no meta.json, no checkpoints/latest)")


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:  # truncated by a kill mid-copy, or not Parquet
        why = str(err).splitlines()[0][:120]
        raise InputError(path, "", f"cannot read Parquet ({why})") from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint (or a run's latest) without unpickling arbitrary objects."""
    ckpt = find_checkpoint(path)
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
    except json.JSONDecodeError as err:
        raise InputError(ckpt / "meta.json", f"line {err.lineno}", "not valid JSON") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(ckpt / "meta.json", "format_version",
                         f"expected {FORMAT_VERSION}, got {meta.get('format_version')!r}")
    try:
        state = torch.load(ckpt / "state.pt", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt / unsafe files
        raise InputError(ckpt / "state.pt", "", f"cannot load ({type(err).__name__})") from None
    model = model_from_spec(meta["model"])
    model.load_state_dict(state.pop("model"))
    walkers, shards, generators = None, None, None
    wpath = ckpt / "walkers.parquet"
    if wpath.is_file():
        walkers = walkers_from_table(_read_parquet(wpath), str(wpath))
    elif meta.get("shard_files"):
        shards, generators = [], []
        for name in meta["shard_files"]:
            spath = ckpt / name
            if not spath.is_file():
                raise InputError(ckpt / "meta.json", "shard_files",
                                 f"checkpoint incomplete: {name} is missing")
            table = _read_parquet(spath)
            walker_less = "x" not in table.column_names and table.num_rows == 0
            shards.append(None if walker_less else walkers_from_table(table, str(spath)))
            raw = (table.schema.metadata or {}).get(GENERATOR_KEY)
            generators.append(None if raw is None
                              else torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        walkers = None if all(w is None for w in shards) else concat_walkers(shards)
    return Checkpoint(step=int(meta["step"]), model=model, meta=meta, state=state,
                      walkers=walkers, shards=shards, shard_generators=generators)


def set_latest(run_dir: Path, checkpoint: Path) -> None:
    """Point the run's ``checkpoints/latest`` at ``checkpoint`` (atomic)."""
    atomic_write_text(Path(run_dir) / "checkpoints" / "latest", checkpoint.name + "\n")


def load(path: str | Path) -> RBM:
    """The model of a run directory or a checkpoint: ``raybm.load("runs/my-run")``."""
    return load_checkpoint(path).model


def _sha(*tensors: torch.Tensor | None) -> str:
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def state_digest(model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                 estimator_state: dict[str, Any], walkers: WalkerState | None,
                 generator: torch.Tensor | None) -> dict[str, str]:
    """SHA-256 of each part of one shard's training state, for bit-for-bit comparisons (a PBT
    exploit must continue from exactly the donor's checkpoint). The optimizer's
    hyperparameters are left out: an exploit changes them on purpose."""
    opt = optimizer_state.get("state", {})
    opt_tensors = [v for i in sorted(opt) for _, v in sorted(opt[i].items())
                   if isinstance(v, torch.Tensor)]
    return {
        "parameters": _sha(*(model_state[k] for k in sorted(model_state))),
        "optimizer": _sha(*opt_tensors),
        "estimator": json.dumps(estimator_state, sort_keys=True, default=str),
        "walkers": _sha(*([] if walkers is None else [walkers.x, walkers.label])),
        "log_weight": _sha(*([] if walkers is None else [walkers.log_weight])),
        "generator": _sha(generator),
    }


def checkpoint_digest(path: str | Path, rank: int = 0, world_size: int = 1) -> dict[str, str]:
    """:func:`state_digest` of shard ``rank`` of a checkpoint, as a trainer restores it."""
    ckpt = load_checkpoint(path)
    walkers, generator, _ = ckpt.shard(rank, world_size)
    if generator is None:
        generator = ckpt.state["generator"]
    return state_digest(ckpt.model.state_dict(), ckpt.state["optimizer"],
                        ckpt.state.get("estimator") or {}, walkers, generator)

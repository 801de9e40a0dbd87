"""Checkpoints: written atomically, read without pickle.

A checkpoint is a directory::

    meta.json         step, model spec, config, RNG bookkeeping, tracking run id (JSON)
    state.pt          the energy's parameters; per trained module its optimizer state, the
                      parameters of the modules beside the energy, the schedules'
                      positions; estimator and kernel state, centring offsets, generator
                      state (tensors and plain containers only: ``weights_only=True``)
    walkers.parquet   one row per walker: ``x`` (its state's raw native bytes, fixed-size
                      binary), ``log_weight``, ``label`` (absent column when the model has no
                      label unit); the schema metadata records the state's dtype
                      (``raybm.x_dtype``, e.g. "float32") and per-walker shape
                      (``raybm.x_shape``, a JSON list, e.g. [1, 28, 28]), so walkers of any
                      dtype and shape come back bit-exactly (format 2; format 1 had neither
                      key and was uint8 ``(n, width)`` only, and is still read)

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
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raybm.errors import InputError
from raybm.models.base import EnergyModel
from raybm.models.registry import model_from_spec
from raybm.walkers import (
    X_DTYPES,
    WalkerState,
    concat_walkers,
    dtype_name,
    row_bytes,
    rows_from_bytes,
    rows_to_bytes,
    shard_slice,
)

FORMAT_VERSION = 3
# Version 1 stored only uint8 (n, width) walker states, without the dtype/shape metadata;
# versions 1 and 2 kept one optimizer (state.pt's "optimizer") where 3 keeps one per trained
# module ("optimizers", with "modules" and "schedules"): the trainer reads both layouts.
READABLE_VERSIONS = (1, 2, FORMAT_VERSION)
X_DTYPE_KEY = b"raybm.x_dtype"
X_SHAPE_KEY = b"raybm.x_shape"
COND_DTYPE_KEY = b"raybm.cond_dtype"
COND_SHAPE_KEY = b"raybm.cond_shape"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


TIMINGS = "timings.json"


def update_timings(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Read ``<directory>/timings.json`` (a run's or a trial's record of where its time went;
    empty if absent or unreadable), let ``change`` edit it in place, write it back atomically.

    Several writers add to one record over a run's life (Ray's start, each fit, each trial
    start), one at a time from the driver or the trial's process."""
    path = Path(directory) / TIMINGS
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    change(record)
    atomic_write_text(path, json.dumps(record, indent=2))


def model_spec(model: EnergyModel) -> dict[str, Any]:
    """What ``meta.json`` records to rebuild ``model`` (``models.registry``)."""
    return model.spec()


def _raw_column(t: torch.Tensor) -> pa.FixedSizeBinaryArray:
    """Each row of ``t`` as its raw bytes (bit-exact whatever the dtype and shape)."""
    raw = rows_to_bytes(t.detach().cpu())
    n, width = raw.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n,
                                                [None, pa.py_buffer(raw.numpy().tobytes())])


def walkers_to_table(walkers: WalkerState) -> pa.Table:
    """One row per walker; ``x`` (and a float condition ``cond``) as each row's raw bytes,
    their dtypes and shapes in the metadata."""
    metadata = {X_DTYPE_KEY: dtype_name(walkers.x.dtype).encode(),
                X_SHAPE_KEY: json.dumps(list(walkers.x.shape[1:])).encode()}
    cols = {"x": _raw_column(walkers.x),
            "log_weight": pa.array(walkers.log_weight.double().cpu().numpy())}
    if walkers.label is not None:
        cols["label"] = pa.array(walkers.label.long().cpu().numpy())
    if walkers.cond is not None:
        cols["cond"] = _raw_column(walkers.cond)
        metadata |= {COND_DTYPE_KEY: dtype_name(walkers.cond.dtype).encode(),
                     COND_SHAPE_KEY: json.dumps(list(walkers.cond.shape[1:])).encode()}
    return pa.table(cols).replace_schema_metadata(metadata)


def _x_layout(metadata: dict[bytes, bytes], where: str, format_version: int,
              keys: tuple[bytes, bytes] = (X_DTYPE_KEY, X_SHAPE_KEY)
              ) -> tuple[torch.dtype, tuple[int, ...] | None]:
    """The walker states' (or, with the ``cond`` keys, their conditions') dtype and
    per-walker shape a walker file records (shape None: one flat row of the column's width,
    as format 1 stored every state)."""
    if format_version == 1:
        return torch.uint8, None
    dtype_key, shape_key = keys
    for key in keys:
        if key not in metadata:
            raise InputError(where, key.decode(), "missing from the walker file's metadata")
    name = metadata[dtype_key].decode(errors="replace")
    if name not in X_DTYPES:
        raise InputError(where, dtype_key.decode(),
                         f"unknown walker dtype {name!r} (one of {', '.join(X_DTYPES)})")
    try:
        shape = json.loads(metadata[shape_key])
    except (json.JSONDecodeError, UnicodeDecodeError):
        shape = None
    if not (isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)):  # bool is an int: refused
        raise InputError(where, shape_key.decode(), "not a JSON list of non-negative sizes")
    return X_DTYPES[name], tuple(shape)


def _raw_rows(table: pa.Table, column: str, dtype: torch.dtype,
              shape: tuple[int, ...] | None, where: str, shape_key: bytes) -> torch.Tensor:
    """The rows of a raw-bytes column (:func:`_raw_column`) as ``(n, *shape)`` of ``dtype``."""
    col = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_binary(col.type):
        raise InputError(where, column, f"expected fixed-size binary, got {col.type}")
    width = col.type.byte_width
    shape = (width,) if shape is None else shape
    if width != row_bytes(shape, dtype):
        raise InputError(where, shape_key.decode(),
                         f"{list(shape)} of {dtype_name(dtype)} is {row_bytes(shape, dtype)} "
                         f"bytes a walker, but {column} holds {width}")
    # The array may be a slice of its buffer: skip ``offset`` rows.
    raw = np.frombuffer(col.buffers()[1], dtype=np.uint8)[
        col.offset * width:(col.offset + len(col)) * width]
    return rows_from_bytes(torch.from_numpy(raw.reshape(len(col), width).copy()), shape, dtype)


def walkers_from_table(table: pa.Table, where: str,
                       format_version: int = FORMAT_VERSION) -> WalkerState:
    """The walkers of a table :func:`walkers_to_table` wrote (or format 1's uint8 layout)."""
    for col in ("x", "log_weight"):
        if col not in table.column_names:
            raise InputError(where, col, "missing column in walker file")
    metadata = table.schema.metadata or {}
    dtype, shape = _x_layout(metadata, where, format_version)
    x = _raw_rows(table, "x", dtype, shape, where, X_SHAPE_KEY)
    logw = torch.from_numpy(table.column("log_weight").to_numpy().astype(np.float64))
    label = cond = None
    if "label" in table.column_names:
        label = torch.from_numpy(table.column("label").to_numpy().astype(np.int64))
    if "cond" in table.column_names:
        keys = (COND_DTYPE_KEY, COND_SHAPE_KEY)
        cond_dtype, cond_shape = _x_layout(metadata, where, format_version, keys)
        cond = _raw_rows(table, "cond", cond_dtype, cond_shape, where, COND_SHAPE_KEY)
    return WalkerState(x=x, log_weight=logw, label=label, cond=cond)


GENERATOR_KEY = b"raybm.generator"


def shard_file(rank: int, world_size: int) -> str:
    return f"walkers-{rank:03d}-of-{world_size:03d}.parquet"


@dataclass
class Checkpoint:
    """Everything a run needs to continue exactly where it stopped."""

    step: int
    model: EnergyModel
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
    model: EnergyModel,
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
    replace_directory(tmp, directory)
    return directory


def replace_directory(tmp: Path, target: Path) -> None:
    """Move the fully written directory ``tmp`` to ``target`` (same file system). An existing
    ``target`` (the same step saved again) is swapped out first and removed after, so that
    ``target`` is never missing and never half-written."""
    if target.exists():
        old = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)


def write_shard(directory: Path, rank: int, world_size: int, walkers: WalkerState | None,
                generator_state: torch.Tensor) -> Path:
    """Write one rank's walkers (and its generator state) into ``directory``, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Algorithms without persistent walkers (CD, F&F) still keep each rank's generator here.
    table = (walkers_to_table(walkers) if walkers is not None
             else pa.table({"log_weight": pa.array([], pa.float64())}))
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),  # keep x's layout
                                           GENERATOR_KEY: generator_state.numpy().tobytes()})
    path = directory / shard_file(rank, world_size)
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_common(directory: Path, *, step: int, model: EnergyModel, state: dict[str, Any],
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
    version = meta.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:  # true == 1 in Python
        raise InputError(ckpt / "meta.json", "format_version",
                         f"expected one of {', '.join(map(str, READABLE_VERSIONS))} (this raybm "
                         f"writes {FORMAT_VERSION}), got {version!r}")
    try:
        state = torch.load(ckpt / "state.pt", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt / unsafe files
        raise InputError(ckpt / "state.pt", "", f"cannot load ({type(err).__name__})") from None
    model = model_from_spec(meta["model"], ckpt / "meta.json")
    model.load_state_dict(state.pop("model"))
    walkers, shards, generators = None, None, None
    wpath = ckpt / "walkers.parquet"
    if wpath.is_file():
        walkers = walkers_from_table(_read_parquet(wpath), str(wpath), version)
    elif meta.get("shard_files"):
        shards, generators = [], []
        for name in meta["shard_files"]:
            spath = ckpt / name
            if not spath.is_file():
                raise InputError(ckpt / "meta.json", "shard_files",
                                 f"checkpoint incomplete: {name} is missing")
            table = _read_parquet(spath)
            walker_less = "x" not in table.column_names and table.num_rows == 0
            shards.append(None if walker_less
                          else walkers_from_table(table, str(spath), version))
            raw = (table.schema.metadata or {}).get(GENERATOR_KEY)
            generators.append(None if raw is None
                              else torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        walkers = None if all(w is None for w in shards) else concat_walkers(shards)
    return Checkpoint(step=int(meta["step"]), model=model, meta=meta, state=state,
                      walkers=walkers, shards=shards, shard_generators=generators)


def set_latest(run_dir: Path, checkpoint: Path) -> None:
    """Point the run's ``checkpoints/latest`` at ``checkpoint`` (atomic)."""
    atomic_write_text(Path(run_dir) / "checkpoints" / "latest", checkpoint.name + "\n")


def load(path: str | Path) -> EnergyModel:
    """The model of a run directory or a checkpoint: ``raybm.load("runs/my-run")``."""
    return load_checkpoint(path).model


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes (None entries skipped)."""
    import hashlib

    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def optimizer_states(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each trained module's optimizer state of a checkpoint's ``state.pt`` (formats 1 and
    2 kept the energy's alone, as ``optimizer``)."""
    return state.get("optimizers") or {"energy": state["optimizer"]}


def kernel_state(state: dict[str, Any]) -> dict[str, float]:
    """The kernel's state of a checkpoint's ``state.pt`` (format 2 kept MALA's adapted step
    size at the top level)."""
    if "kernel" in state:
        return state["kernel"]
    return {"step_size": float(state["step_size"])} if "step_size" in state else {}


def state_digest(model_state: dict[str, torch.Tensor],
                 optimizer_states: dict[str, dict[str, Any]],
                 estimator_state: dict[str, Any], walkers: WalkerState | None,
                 generator: torch.Tensor | None,
                 kernel: dict[str, float] | None = None) -> dict[str, str]:
    """SHA-256 of each part of one shard's training state, for bit-for-bit comparisons (a PBT
    exploit must continue from exactly the donor's checkpoint): ``model_state`` every trained
    module's parameters, ``optimizer_states`` each module's optimizer state by name, the
    estimator's and the kernel's state, the walkers (state, label, condition), log-weights
    and generator. The optimizers' hyperparameters are left out: an exploit changes them on
    purpose."""
    opt_tensors = []
    for name in sorted(optimizer_states):
        opt = optimizer_states[name].get("state", {})
        opt_tensors += [v for i in sorted(opt) for _, v in sorted(opt[i].items())
                        if isinstance(v, torch.Tensor)]
    return {
        "parameters": tensor_digest(*(model_state[k] for k in sorted(model_state))),
        "optimizer": tensor_digest(*opt_tensors),
        "estimator": json.dumps(estimator_state, sort_keys=True, default=str),
        "kernel": json.dumps(kernel or {}, sort_keys=True),
        "walkers": tensor_digest(*([] if walkers is None
                                   else [walkers.x, walkers.label, walkers.cond])),
        "log_weight": tensor_digest(*([] if walkers is None else [walkers.log_weight])),
        "generator": tensor_digest(generator),
    }


def checkpoint_digest(path: str | Path, rank: int = 0, world_size: int = 1) -> dict[str, str]:
    """:func:`state_digest` of shard ``rank`` of a checkpoint, as a trainer restores it."""
    ckpt = load_checkpoint(path)
    walkers, generator, _ = ckpt.shard(rank, world_size)
    if generator is None:
        generator = ckpt.state["generator"]
    params = {f"energy.{k}": v for k, v in ckpt.model.state_dict().items()}
    for name, module in (ckpt.state.get("modules") or {}).items():
        params.update({f"{name}.{k}": v for k, v in module.items()})
    return state_digest(params, optimizer_states(ckpt.state), ckpt.state.get("estimator") or {},
                        walkers, generator, kernel_state(ckpt.state))


def write_restore_record(run_dir: Path, source: Path, step: int, rank: int, world_size: int,
                         digest: dict[str, str]) -> Path:
    """Write what a (re)started shard continued from: the checkpoint and the digest of the
    state it holds right after restoring (``<run>/restores/``, one file per rank and start).
    A PBT exploit is checked against its donor's checkpoint with it, bit for bit."""
    import time

    folder = Path(run_dir) / "restores"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"step_{step:08d}-{stamp}-{os.getpid()}-rank{rank:03d}.json"
    atomic_write_text(path, json.dumps({
        "source": str(source), "step": step, "rank": rank, "world_size": world_size,
        "digest": digest}, indent=2))
    return path

"""Continuous data from ``.npy``, ``.npz`` and ``.parquet`` files, and the matching writer.

Rows are samples; each row keeps its shape as the event shape, so ``(n, d)`` vectors and
``(n, 1, 28, 28)`` images both load as a float32 :class:`Dataset` with ``n_states = 0``.

Formats (optionally gzipped: the content decides, as everywhere in raybm):

* ``.npy``: the array only (no labels or weights).
* ``.npz``: the array ``x`` (or the only array in the file); optional ``labels`` ``(n,)``
  (numbers or strings), ``label_names`` (the label order, written by
  :func:`save_float_matrix`) and ``weights`` ``(n,)``.
* ``.parquet``: one numeric column per coordinate; the reserved columns ``label``,
  ``sub_label`` and ``weight`` are not data (as in :mod:`raybm.data.matrix`). Files written by
  :func:`save_float_matrix` carry the event shape and label order in the schema metadata (key
  ``raybm``), so images and label names round-trip.

Values are converted to float32 (integers and booleans too: pixel files are often uint8);
the loader refuses NaN and inf (naming the first index), values that overflow float32, object
arrays (ragged rows, pickled Python objects: raybm always loads with ``allow_pickle=False``,
since unpickling a file runs arbitrary code), non-numeric dtypes, 1-D arrays and empty ones;
each as a one-line :class:`InputError` naming the file and the array or column.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raybm.data._io import PathLike, atomic_path, read_bytes, strip_gz
from raybm.data._labels import encode_labels
from raybm.data.dataset import Dataset
from raybm.data._parquet import (METADATA_KEY, metadata, numeric_column, read_table,
                                 reserved_texts, reserved_weights, unique_names)
from raybm.errors import InputError

SUFFIXES = (".npy", ".npz", ".parquet")
NPY_MAGIC = b"\x93NUMPY"
NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float; not complex, strings, objects, dates


def _suffix(path: PathLike) -> str:
    name = strip_gz(str(path))
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(path, "format", f"unknown float data format; expected one of {', '.join(SUFFIXES)}")


def _as_float32(path: PathLike, field: str, array: np.ndarray) -> np.ndarray:
    """``array`` as finite float32, after checking it is a non-empty ``(n, *event_shape)``
    array of numbers."""
    if array.dtype.hasobject:
        raise InputError(path, field, "object array (ragged rows or Python objects) needs pickle, "
                         "which raybm never loads; save a numeric array")
    if array.dtype.kind not in NUMERIC_KINDS:
        raise InputError(path, field, f"dtype {array.dtype} is not a real number type")
    if array.ndim < 2:
        raise InputError(path, field, f"expected (n, *event_shape) with one row per sample, got "
                         f"shape {array.shape} (a single feature is shape (n, 1))")
    if array.size == 0:
        raise InputError(path, field, f"empty array (shape {array.shape})")
    _check_finite(path, field, array, "")
    with np.errstate(over="ignore"):  # reported just below, naming the index
        x = array.astype(np.float32)
    _check_finite(path, field, x, "overflows float32: ")
    return x


def _check_finite(path: PathLike, field: str, array: np.ndarray, why: str) -> None:
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        value = array[index]
        word = "NaN" if np.isnan(value) else repr(float(value))
        raise InputError(path, field, f"{why}{word} at index {index}")


def _labels(path: PathLike, values: list[str] | None, n: int, field: str,
            order: Sequence[str] | None) -> tuple[torch.Tensor | None, list[str] | None]:
    """Encoded labels; ``order`` (from the file's own metadata) is used when it names every
    value, otherwise the values are sorted (:func:`raybm.data._labels.label_order`)."""
    if values is None:
        return None, None
    if len(values) != n:
        raise InputError(path, field, f"{len(values)} values for {n} samples")
    if order is not None and not set(values) <= set(order):
        order = None
    return encode_labels(values, order)


def _weights(path: PathLike, weights: np.ndarray | None, n: int, field: str) -> torch.Tensor | None:
    if weights is None:
        return None
    weights = np.asarray(weights)
    if weights.shape != (n,) or weights.dtype.kind not in "fiu":
        raise InputError(path, field, f"expected ({n},) numbers, got {weights.dtype} {weights.shape}")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise InputError(path, field, "negative or non-finite weights")
    return torch.from_numpy(weights.astype(np.float32))


def _load_npy(path: PathLike) -> Dataset:
    data = read_bytes(path)
    if not data.startswith(NPY_MAGIC):
        raise InputError(path, "npy", "not a .npy file (no \\x93NUMPY header)")
    try:
        x = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InputError(path, "x", "object array (ragged rows or Python objects) needs "
                             "pickle, which raybm never loads; save a numeric array") from None
        raise InputError(path, "npy", f"not a readable .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise InputError(path, "npy", f"not a readable .npy file ({err})") from None
    return Dataset(x=torch.from_numpy(_as_float32(path, "x", x)), n_states=0, source=str(path),
                   info={"format": "npy", "dtype": str(x.dtype)})


def _npz_array(path: PathLike, npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InputError(path, key, "object array (ragged rows or Python objects) needs "
                             "pickle, which raybm never loads; save a numeric array") from None
        raise InputError(path, key, f"unreadable array ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(path, key, f"unreadable array ({err})") from None


def _load_npz(path: PathLike) -> Dataset:
    try:
        npz = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(path, "npz", f"not a readable .npz archive ({err})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):  # a .npy file named .npz
        raise InputError(path, "npz", "not a .npz archive (a .npy array? name it .npy)")
    with npz:
        keys = list(npz.files)
        if "x" in keys:
            key = "x"
        elif len(keys) == 1:
            key = keys[0]
        else:
            raise InputError(path, "x", f"no array 'x' among {', '.join(keys) or 'none'}")
        raw = _npz_array(path, npz, key)
        dtype = str(raw.dtype)
        x = _as_float32(path, key, raw)
        n = x.shape[0]
        label_values = order = None
        if "labels" in keys:
            raw_labels = _npz_array(path, npz, "labels")
            if raw_labels.ndim != 1:
                raise InputError(path, "labels", f"expected shape ({n},), got {raw_labels.shape}")
            label_values = [str(v) for v in raw_labels.tolist()]
        if "label_names" in keys:
            order = unique_names([str(v) for v in _npz_array(path, npz, "label_names").ravel().tolist()])
        weights = _npz_array(path, npz, "weights") if "weights" in keys else None
    labels, label_names = _labels(path, label_values, n, "labels", order)
    return Dataset(x=torch.from_numpy(x), n_states=0, labels=labels, label_names=label_names,
                   weights=_weights(path, weights, n, "weights"), source=str(path),
                   info={"format": "npz", "array": key, "dtype": dtype})


def _parquet_meta(raw: bytes | None) -> dict:
    """The metadata :func:`save_float_matrix` writes; anything malformed is ignored field by
    field (it only refines what the columns already say)."""
    meta = metadata(raw)
    shape = meta.get("event_shape")
    ok = isinstance(shape, list) and all(type(v) is int and v > 0 for v in shape)
    return {"event_shape": tuple(shape) if ok else None,
            "label_names": unique_names(meta.get("label_names")),
            "sub_label_names": unique_names(meta.get("sub_label_names"))}


def _load_parquet(path: PathLike) -> Dataset:
    table, raw_meta, data_cols = read_table(path)
    meta = _parquet_meta(raw_meta)
    columns = []
    for j, name in enumerate(data_cols):
        values = numeric_column(path, table, name)
        bad = np.flatnonzero(~np.isfinite(values)) if values.dtype.kind == "f" else []
        if len(bad):
            word = "NaN" if np.isnan(values[bad[0]]) else repr(float(values[bad[0]]))
            raise InputError(path, f"column {name!r}", f"{word} at index ({int(bad[0])}, {j})")
        columns.append(values)
    x = _as_float32(path, "x", np.stack(columns, axis=1))
    shape = meta["event_shape"]
    if shape is not None and math.prod(shape) == x.shape[1]:
        x = x.reshape((x.shape[0], *shape))
    n = x.shape[0]
    labels, label_names = _labels(path, reserved_texts(path, table, "label"), n,
                                  "column 'label'", meta["label_names"])
    sub_labels, sub_names = _labels(path, reserved_texts(path, table, "sub_label"), n,
                                    "column 'sub_label'", meta["sub_label_names"])
    return Dataset(x=torch.from_numpy(np.ascontiguousarray(x)), n_states=0, labels=labels,
                   label_names=label_names,
                   weights=_weights(path, reserved_weights(table), n, "column 'weight'"),
                   source=str(path), info={"format": "parquet"}, sub_labels=sub_labels,
                   sub_label_names=sub_names)


def load_float_matrix(path: PathLike) -> Dataset:
    """Load continuous data; the format comes from the suffix (``.npy``, ``.npz``,
    ``.parquet``, each optionally ``.gz``)."""
    loader = {".npy": _load_npy, ".npz": _load_npz, ".parquet": _load_parquet}[_suffix(path)]
    return loader(path)


def _label_texts(labels: torch.Tensor, names: list[str] | None) -> list[str]:
    return [names[i] if names is not None else str(i) for i in labels.tolist()]


def _save_parquet(dataset: Dataset, tmp: PathLike) -> None:
    x = dataset.x.numpy().reshape(dataset.n_samples, -1)
    columns = {f"v{j}": pa.array(x[:, j]) for j in range(x.shape[1])}
    if dataset.labels is not None:
        columns["label"] = pa.array(_label_texts(dataset.labels, dataset.label_names))
    if dataset.sub_labels is not None:
        columns["sub_label"] = pa.array(_label_texts(dataset.sub_labels, dataset.sub_label_names))
    if dataset.weights is not None:
        columns["weight"] = pa.array(dataset.weights.numpy().astype(np.float32))
    meta = {"event_shape": list(dataset.event_shape), "label_names": dataset.label_names,
            "sub_label_names": dataset.sub_label_names, "source": dataset.source}
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    pq.write_table(table, tmp)


def _save_npz(dataset: Dataset, tmp: PathLike) -> None:
    arrays = {"x": dataset.x.numpy()}
    if dataset.labels is not None:
        names = dataset.label_names or [str(i) for i in range(int(dataset.labels.max()) + 1)]
        arrays["labels"] = np.array(_label_texts(dataset.labels, names), dtype=str)
        arrays["label_names"] = np.array(names, dtype=str)
    if dataset.weights is not None:
        arrays["weights"] = dataset.weights.numpy().astype(np.float32)
    # An open file, not a name: np.savez would append ".npz" to the temporary name.
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _save_npy(dataset: Dataset, tmp: PathLike) -> None:
    with open(tmp, "wb") as f:
        np.save(f, dataset.x.numpy(), allow_pickle=False)


# What each format would lose: save_float_matrix refuses rather than drop it silently.
_CANNOT_HOLD = {".npy": ("labels", "weights", "sub_labels"), ".npz": ("sub_labels",),
                ".parquet": ()}


def save_float_matrix(path: PathLike, dataset: Dataset) -> None:
    """Write continuous ``dataset`` as ``.npy`` (x only), ``.npz`` (x, labels, weights) or
    ``.parquet`` (one float32 column ``v{j}`` per coordinate of the flattened sample, plus
    ``label`` / ``sub_label`` / ``weight``, the event shape in the metadata); atomically, so a
    reader never sees half a file. :func:`load_float_matrix` reads it back bit for bit.

    ``.npy`` refuses a data set with labels, sub-labels or weights rather than drop them
    silently; ``.npz`` keeps labels and weights, not sub-labels."""
    suffix = _suffix(path)
    if strip_gz(str(path)) != str(path).lower():
        raise InputError(path, "format", "gzipped output is not written; drop the .gz")
    if not dataset.continuous:
        raise InputError(path, "x", f"{dataset.x.dtype} states are not continuous data "
                         "(use save_matrix_parquet)")
    for name in _CANNOT_HOLD[suffix]:
        if getattr(dataset, name) is not None:
            raise InputError(path, name, f"a {suffix} file cannot hold {name}; write .parquet "
                             "(or .npz for labels and weights)")
    writer = {".npy": _save_npy, ".npz": _save_npz, ".parquet": _save_parquet}[suffix]
    with atomic_path(path) as tmp:
        writer(dataset, tmp)


def check_event_shape(dataset: Dataset, shape: Sequence[int], where: PathLike,
                      what: str = "the model") -> Dataset:
    """``dataset`` with samples of ``shape``: unchanged when they already are, reshaped (row
    major, the layout of a flattened image) when the number of values per sample matches,
    else a one-line InputError, e.g. ``data of shape (5,) per sample (5 values) does not fit a
    conv model's (1, 28, 28) (784 values)``. ``what`` names the model in that message.

    Reshaping rather than refusing lets ``(n, 784)`` files feed a conv model and ``(n, 1, 28,
    28)`` files feed a dense one; discrete data keep their ``(n, n_visible)`` shape."""
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape):
        raise InputError(where, "event_shape", f"{shape} has a size below 1")
    got = dataset.event_shape
    if got == shape:
        return dataset
    if math.prod(got) != math.prod(shape):
        raise InputError(where, "event_shape", f"data of shape {got} per sample ({math.prod(got)} "
                         f"values) does not fit {what}'s {shape} ({math.prod(shape)} values)")
    if not dataset.continuous:
        raise InputError(where, "event_shape", f"discrete data of shape {got} per sample cannot "
                         f"be reshaped to {what}'s {shape}")
    x = dataset.x.reshape((dataset.n_samples, *shape))
    return dataclasses.replace(dataset, x=x, info=dict(dataset.info))

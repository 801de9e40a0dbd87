"""Integer state matrices from ``.npz``, ``.txt`` and ``.parquet`` files.

Formats (rows are samples, columns visible units, values non-negative integers <= 255):

* ``.npz``: the array ``x`` (or the only array in the file); optional ``labels`` (n,) and
  ``weights`` (n,). Arrays of more than 2 dimensions (e.g. images) are flattened per sample.
* ``.txt`` (optionally gzipped): whitespace-separated integers, one sample per line; blank
  lines and lines starting with ``#`` are skipped.
* ``.parquet``: one integer column per visible unit; the reserved columns ``label``,
  ``sub_label`` (any type) and ``weight`` (float) are not data. Files written by
  :func:`save_matrix_parquet` also carry ``n_states``, ``alphabet`` and the label order in the
  schema metadata (key ``raybm``), so a Dataset round-trips exactly.

``n_states`` is 2 when every value is 0 or 1, else ``max + 1`` (unless the metadata says more).
Labels are the distinct label values sorted (numerically when all are numbers), named by their
text (``str(value)``).
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raybm.data._io import PathLike, atomic_path, read_bytes, read_text, strip_gz
from raybm.data._labels import encode_labels
from raybm.data._parquet import (METADATA_KEY, metadata, numeric_column, read_table,
                                 reserved_texts, reserved_weights, unique_names)
from raybm.data.dataset import Dataset
from raybm.errors import InputError

SUFFIXES = (".npz", ".txt", ".parquet")


def _states(path: PathLike, field: str, array: np.ndarray) -> np.ndarray:
    """``array`` as uint8 states after checking it holds non-negative integers <= 255."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(path, field, f"non-integer value {array[where]!r} at {where}")
    elif array.dtype.kind not in "iu":
        raise InputError(path, field, f"dtype {array.dtype} is not an integer type")
    if array.size and array.min() < 0:
        where = tuple(int(i) for i in np.argwhere(array < 0)[0])
        raise InputError(path, field, f"negative value {array[where]} at {where}")
    if array.size and array.max() > 255:
        raise InputError(path, field, f"value {array.max()} above 255 does not fit a uint8 state")
    return array.astype(np.uint8)


def _dataset(
    path: PathLike,
    x: np.ndarray,
    label_values: list[str] | None,
    weights: np.ndarray | None,
    info: dict,
    meta: dict | None = None,
    sub_label_values: list[str] | None = None,
) -> Dataset:
    """Assemble the Dataset once ``x`` is a checked ``(n, n_visible)`` uint8 array."""
    meta = meta or {}
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(path, "x", f"empty matrix (shape {x.shape[0]}x{x.shape[1]})")
    n = x.shape[0]
    top = int(x.max())
    n_states = 2 if top <= 1 else top + 1
    if meta.get("n_states") is not None:
        if int(meta["n_states"]) <= top:
            raise InputError(path, "n_states", f"value {top} but the metadata says {meta['n_states']} states")
        n_states = int(meta["n_states"])

    def labels_from(values, order, field):
        if values is None:
            return None, None
        if len(values) != n:
            raise InputError(path, field, f"{len(values)} values for {n} samples")
        if order is not None and not set(values) <= set(order):
            order = None  # metadata from another file: fall back to sorting
        return encode_labels(values, order)

    labels, label_names = labels_from(label_values, meta.get("label_names"), "labels")
    sub_labels, sub_names = labels_from(sub_label_values, meta.get("sub_label_names"), "sub_labels")
    w = None
    if weights is not None:
        weights = np.asarray(weights)
        if weights.shape != (n,) or weights.dtype.kind not in "fiu":
            raise InputError(path, "weights", f"expected ({n},) numbers, got {weights.dtype} {weights.shape}")
        if not np.isfinite(weights).all() or (weights < 0).any():
            raise InputError(path, "weights", "negative or non-finite weights")
        w = torch.from_numpy(weights.astype(np.float32))
    return Dataset(
        x=torch.from_numpy(np.ascontiguousarray(x)),
        n_states=n_states,
        labels=labels,
        label_names=label_names,
        weights=w,
        # An alphabet names every state, so it is kept only when its size matches.
        alphabet=meta["alphabet"] if len(meta.get("alphabet") or "") == n_states else None,
        source=str(path),
        info=info,
        sub_labels=sub_labels,
        sub_label_names=sub_names,
    )


def _load_npz(path: PathLike) -> Dataset:
    try:
        with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise InputError(path, "npz", f"not a readable .npz archive ({err})") from None
    if "x" in arrays:
        key = "x"
    elif len(arrays) == 1:
        key = next(iter(arrays))
    else:
        raise InputError(path, "x", f"no array 'x' among {', '.join(arrays) or 'none'}")
    x = arrays[key]
    if x.ndim < 2:
        raise InputError(path, key, f"expected (n, n_visible), got shape {x.shape}")
    info: dict = {"format": "npz", "array": key}
    if x.ndim > 2:
        info["sample_shape"] = list(x.shape[1:])
        x = x.reshape(x.shape[0], math.prod(x.shape[1:]))  # not -1: fails on 0 samples
    x = _states(path, key, x)
    label_values = None
    if "labels" in arrays:
        raw = arrays["labels"]
        if raw.ndim != 1:
            raise InputError(path, "labels", f"expected shape ({x.shape[0]},), got {raw.shape}")
        label_values = [str(v) for v in raw.tolist()]
    return _dataset(path, x, label_values, arrays.get("weights"), info)


def _load_txt(path: PathLike) -> Dataset:
    rows: list[list[int]] = []
    width = first = None
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        if width is None:
            width, first = len(tokens), lineno
        elif len(tokens) != width:
            raise InputError(
                path, f"line {lineno}", f"{len(tokens)} values, but {width} on line {first} (ragged rows)"
            )
        for j, tok in enumerate(tokens):
            if not (tok.isascii() and tok.isdigit()):
                if tok.startswith("-") and tok[1:].isascii() and tok[1:].isdigit():
                    raise InputError(path, f"line {lineno}", f"negative value {tok} in column {j + 1}")
                raise InputError(path, f"line {lineno}", f"non-integer value {tok!r} in column {j + 1}")
        values = [int(t) for t in tokens]
        if max(values) > 255:
            raise InputError(
                path, f"line {lineno}", f"value {max(values)} above 255 does not fit a uint8 state"
            )
        rows.append(values)
    if not rows:
        raise InputError(path, "x", "empty matrix (no data lines)")
    x = _states(path, "x", np.array(rows, dtype=np.int64))
    return _dataset(path, x, None, None, {"format": "txt"})


def _read_metadata(raw: bytes | None) -> dict:
    """The metadata save_matrix_parquet writes; anything malformed is ignored field by field
    (it only refines what the data already say)."""
    meta = metadata(raw)
    names = unique_names
    n_states = meta.get("n_states")
    alphabet = meta.get("alphabet")
    return {
        "n_states": n_states if isinstance(n_states, int) and not isinstance(n_states, bool) else None,
        "alphabet": alphabet if isinstance(alphabet, str) else None,
        "label_names": names(meta.get("label_names")),
        "sub_label_names": names(meta.get("sub_label_names")),
    }


def _load_parquet(path: PathLike) -> Dataset:
    table, raw_meta, data_cols = read_table(path)
    meta = _read_metadata(raw_meta)
    x = np.stack([_states(path, f"column {name!r}", numeric_column(path, table, name))
                  for name in data_cols], axis=1)
    return _dataset(path, x, reserved_texts(path, table, "label"), reserved_weights(table),
                    {"format": "parquet"}, meta, reserved_texts(path, table, "sub_label"))


def load_matrix(path: PathLike) -> Dataset:
    """Load an integer state matrix; the format comes from the suffix (``.npz``, ``.txt[.gz]``,
    ``.parquet``)."""
    name = strip_gz(str(path))
    if name.endswith(".npz"):
        return _load_npz(path)
    if name.endswith(".txt"):
        return _load_txt(path)
    if name.endswith(".parquet"):
        return _load_parquet(path)
    raise InputError(path, "format", f"unknown matrix format; expected one of {', '.join(SUFFIXES)}")


def save_matrix_parquet(dataset: Dataset, path: PathLike) -> None:
    """Write ``dataset`` as Parquet (columns ``v0 .. v{n_visible-1}`` uint8, plus ``label`` /
    ``sub_label`` (names, or ints without names) and ``weight``), atomically: written to a
    temporary file beside ``path``, then moved over it."""
    x = dataset.x.numpy()
    if x.size and int(x.max()) >= dataset.n_states:
        # Written anyway, the file could never be loaded back (its metadata would contradict it).
        raise InputError(path, "n_states", f"value {int(x.max())} in a data set of {dataset.n_states} states")
    columns = {f"v{j}": pa.array(x[:, j]) for j in range(x.shape[1])}

    def named(labels, names):
        values = labels.numpy()
        return pa.array([names[i] for i in values] if names is not None else values)

    if dataset.labels is not None:
        columns["label"] = named(dataset.labels, dataset.label_names)
    if dataset.sub_labels is not None:
        columns["sub_label"] = named(dataset.sub_labels, dataset.sub_label_names)
    if dataset.weights is not None:
        columns["weight"] = pa.array(dataset.weights.numpy().astype(np.float32))
    meta = {
        "n_states": dataset.n_states,
        "alphabet": dataset.alphabet,
        "label_names": dataset.label_names,
        "sub_label_names": dataset.sub_label_names,
        "source": dataset.source,
    }
    table = pa.table(columns).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)

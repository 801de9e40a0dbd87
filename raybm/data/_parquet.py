"""Reading a samples-by-columns Parquet file: the part the integer-state loader
(:mod:`raybm.data.matrix`) and the float loader (:mod:`raybm.data.floats`) share.

One numeric column per coordinate; the reserved columns ``label``, ``sub_label`` and ``weight``
are not data; the schema metadata under ``raybm`` is the writer's (n_states, alphabet, label
order, event shape). Every problem is a one-line :class:`InputError` naming the file and the
column.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raybm.data._io import PathLike, read_bytes
from raybm.errors import InputError

RESERVED = ("label", "sub_label", "weight")
METADATA_KEY = b"raybm"


def read_table(path: PathLike) -> tuple[pa.Table, bytes | None, list[str]]:
    """The table, its raw ``raybm`` metadata, and the names of its data columns (at least one,
    with at least one row)."""
    try:
        table = pq.read_table(pa.BufferReader(read_bytes(path)))
    except (pa.ArrowException, OSError) as err:
        raise InputError(path, "parquet", f"not a readable Parquet file ({err})") from None
    data_cols = [name for name in table.column_names if name not in RESERVED]
    if not data_cols or table.num_rows == 0:
        raise InputError(path, "x", f"empty matrix ({table.num_rows} rows, "
                         f"{len(data_cols)} data columns)")
    return table, (table.schema.metadata or {}).get(METADATA_KEY), data_cols


def numeric_column(path: PathLike, table: pa.Table, name: str) -> np.ndarray:
    """Column ``name`` as numpy, refused when it has missing values or is not numeric."""
    col = table.column(name)
    if col.null_count:
        raise InputError(path, f"column {name!r}", f"{col.null_count} missing values")
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
        raise InputError(path, f"column {name!r}", f"type {t} is not a number type")
    return col.to_numpy()


def reserved_texts(path: PathLike, table: pa.Table, name: str) -> list[str] | None:
    """The reserved column ``name`` (``label``, ``sub_label``) as texts, or None when absent."""
    if name not in table.column_names:
        return None
    col = table.column(name)
    if col.null_count:
        raise InputError(path, f"column {name!r}", f"{col.null_count} missing values")
    return [str(v) for v in col.to_pylist()]


def reserved_weights(table: pa.Table) -> np.ndarray | None:
    """The ``weight`` column as numpy (checked by the loader), or None when absent."""
    return table.column("weight").to_numpy() if "weight" in table.column_names else None


def metadata(raw: bytes | None) -> dict:
    """The writer's metadata as a dict; {} when absent or malformed (it only refines what the
    columns already say, so a damaged entry is ignored rather than fatal)."""
    try:
        meta = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def unique_names(value: object) -> list[str] | None:
    """``value`` when it is a list of distinct texts (a label order), else None."""
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value if ok and len(set(value)) == len(value) else None

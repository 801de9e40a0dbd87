"""Aligned sequences in a CSV file, one per row, with an optional label column.

Format (``rna/SAM.csv``)::

    header,sequence,label
    RRYP01036351.1/1-88,-------AGAUGG...,100.0

Every sequence must have the same length (no insert removal here: a CSV alignment is taken as
already reduced to its columns; letters are matched case-insensitively). Encoding and the
non-standard policy are those of the FASTA loader (:func:`raybm.data.alphabet.encode_sequences`).
Labels: the distinct values of the label column, sorted numerically when all are numbers,
become ``label_names`` (the text as written, e.g. ``"100.0"``).
"""

from __future__ import annotations

import csv
import io

from raybm.data._alignment import alignment_dataset, check_reweight
from raybm.data._io import PathLike, read_text
from raybm.data.alphabet import Alphabet
from raybm.data.dataset import Dataset
from raybm.errors import InputError


def read_csv_header(path: PathLike) -> list[str]:
    """The column names of a CSV file (empty for an empty or malformed file, which the loader
    then reports)."""
    try:
        for row in csv.reader(io.StringIO(read_text(path), newline="")):
            return [h.strip() for h in row]
    except csv.Error:
        pass
    return []


def load_csv_alignment(
    path: PathLike,
    alphabet: str | Alphabet = "rna",
    nonstandard: str = "gap",
    reweight_identity: float | None = None,
    sequence_column: str = "sequence",
    label_column: str | None = "label",
    header_column: str | None = "header",
) -> Dataset:
    """Load a CSV alignment. ``label_column=None`` loads no labels; ``header_column`` (names the
    rows in messages) may be absent, then rows are named ``row N``. The sequence and label
    columns must be present."""
    check_reweight(path, reweight_identity)
    rows = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = next(rows)
    except StopIteration:
        raise InputError(path, "header", "empty file, expected a CSV header line") from None
    except csv.Error as err:
        raise InputError(path, "line 1", f"not valid CSV ({err})") from None
    header = [h.strip() for h in header]

    def column(name: str) -> int:
        if name not in header:
            raise InputError(path, f"column {name!r}", f"missing (the header has {', '.join(header)})")
        return header.index(name)

    seq_col = column(sequence_column)
    label_col = column(label_column) if label_column is not None else None
    name_col = header.index(header_column) if header_column in header else None

    sequences: list[str] = []
    names: list[str] = []
    labels: list[str] = []
    try:
        for row in rows:
            lineno = rows.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise InputError(
                    path, f"line {lineno}", f"{len(row)} fields, but the header has {len(header)}"
                )
            names.append(row[name_col] if name_col is not None else f"row {len(names) + 1}")
            sequences.append(row[seq_col].strip())
            if label_col is not None:
                value = row[label_col].strip()
                if not value:
                    raise InputError(path, f"line {lineno}", f"empty {label_column!r}")
                labels.append(value)
    except csv.Error as err:
        raise InputError(path, f"line {rows.line_num}", f"not valid CSV ({err})") from None
    if not sequences:
        raise InputError(path, "rows", "no sequences after the header")

    info = {"format": "csv", "n_records": len(sequences)}
    if label_col is not None:
        info["label_column"] = label_column
    return alignment_dataset(
        path,
        sequences,
        names,
        alphabet,
        nonstandard,
        reweight_identity,
        label_values=labels if label_col is not None else None,
        info=info,
    )

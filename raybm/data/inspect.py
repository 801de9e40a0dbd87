"""Picking a loader for a file, and a human-readable summary of what it holds.

Format detection (``format="auto"``), by name first (a ``.gz`` suffix is looked through), then
by content:

==========================================  ========
``.hapt``                                   hapt
``.fasta`` ``.fa`` ``.fas`` ``.a2m`` ``.afa``  fasta
``.csv``                                    csv
``.npz`` whose data array holds fractions   floats   (float images or samples, as ``.npy``)
``.npz`` ``.txt`` ``.parquet``              matrix   (integer states; ``floats`` reads them as floats)
``.npy``                                    floats   (continuous samples or images)
content starts with an IDX magic number     idx      (``t10k-images-idx3-ubyte.gz``)
content starts with ``>``                   fasta
no path at all                              digits   (the embedded default)
==========================================  ========

:func:`load_any` takes the keyword names of the ``data.*`` config keys, so the config-driven
training can call ``load_any(**cfg.data)``.

An ``.npz`` is read as integer states unless its data array (``x``, or its only array) is of a
float type and holds a value that is not a whole number: such a file was refused as states
("non-integer value"), so reading it as floats changes no file that loaded before (float 0/1
images stay binary states for an RBM).
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import torch

from raybm.data._io import PathLike, peek, read_bytes, strip_gz
from raybm.data.csvaln import load_csv_alignment, read_csv_header
from raybm.data.dataset import Dataset
from raybm.data.digits import load_digits
from raybm.data.fasta import load_fasta
from raybm.data.hapt import load_hapt
from raybm.data.idx import _TYPES, load_idx
from raybm.data.matrix import load_matrix
from raybm.errors import InputError

FORMATS = ("auto", "idx", "hapt", "fasta", "csv", "matrix", "digits", "floats", "mnist")

_BY_SUFFIX = {
    ".hapt": "hapt",
    ".fasta": "fasta",
    ".fa": "fasta",
    ".fas": "fasta",
    ".a2m": "fasta",
    ".afa": "fasta",
    ".csv": "csv",
    ".npz": "matrix",
    ".txt": "matrix",
    ".parquet": "matrix",
    ".npy": "floats",
}


def data_array(path: PathLike) -> np.ndarray | None:
    """The array raybm's loaders read from a ``.npy`` or ``.npz`` file (an ``.npz``'s ``x``, or
    its only array), or None when there is no such file or it cannot be read: detection never
    fails, the loader then names what is wrong with the file."""
    if not Path(path).is_file():
        return None
    try:
        loaded = np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return None
        with loaded:
            keys = list(loaded.files)
            key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
            return None if key is None else loaded[key]
    except Exception:  # noqa: BLE001 - any unreadable content (zip, pickle, header, gzip)
        return None


def _holds_fractions(array: np.ndarray | None) -> bool:
    """A float array with a finite value that is not a whole number (not integer states)."""
    if array is None or array.dtype.kind != "f" or array.size == 0:
        return False
    finite = array[np.isfinite(array)]
    return bool((finite != np.round(finite)).any())


def detect_format(path: PathLike) -> str:
    """The loader format of ``path`` (see the module docstring), or an InputError."""
    name = strip_gz(str(path))
    for suffix, fmt in _BY_SUFFIX.items():
        if name.endswith(suffix):
            if fmt == "matrix" and suffix == ".npz" and _holds_fractions(data_array(path)):
                return "floats"
            return fmt
    head = peek(path, 4)
    if len(head) == 4 and head[:2] == b"\x00\x00" and head[2] in _TYPES and head[3] > 0:
        return "idx"
    if head.lstrip()[:1] == b">":
        return "fasta"
    raise InputError(
        path, "format", "cannot tell the format from the name or content; set data.format"
    )


def load_any(
    path: PathLike | None = None,
    *,
    format: str = "auto",  # noqa: A002 - the config key is data.format
    labels_path: PathLike | None = None,
    panel_path: PathLike | None = None,
    threshold: float = 0.5,
    alphabet: str | None = None,
    nonstandard: str = "gap",
    reweight_identity: float | None = None,
    label: str | None = None,
) -> Dataset:
    """Load any supported data set; keyword names are the ``data.*`` config keys.

    ``alphabet=None`` means "auto" for FASTA and CSV. ``label`` is the panel column for hapt
    (default ``super_pop``) and the label column for CSV (default: ``label`` if the file has
    one). ``labels_path`` only goes with IDX images and ``panel_path`` with hapt; giving one
    for another format is an error rather than silently ignored.
    """
    if format not in FORMATS:
        raise InputError("data.format", "", f"{format!r} is not one of {', '.join(FORMATS)}")
    if path is None:
        if format not in ("auto", "digits"):
            raise InputError("data.path", "", f"format {format!r} needs a file path")
        fmt = "digits"
    else:
        fmt = detect_format(path) if format == "auto" else format
    if fmt == "digits":
        return load_digits(threshold)
    if labels_path is not None and fmt not in ("idx", "mnist"):
        raise InputError(labels_path, "data.labels_path", f"only IDX images take a labels file, not {fmt}")
    if panel_path is not None and fmt != "hapt":
        raise InputError(panel_path, "data.panel_path", f"only hapt files take a panel, not {fmt}")

    if fmt == "idx":
        return load_idx(path, labels_path, threshold)
    if fmt == "floats":
        from raybm.data.floats import load_float_matrix

        return load_float_matrix(path)
    if fmt == "mnist":
        from raybm.data.mnist_float import load_mnist_float

        return load_mnist_float(path, labels_path or idx_labels_beside(path))
    if fmt == "hapt":
        return load_hapt(path, panel_path, label or "super_pop")
    if fmt == "fasta":
        return load_fasta(path, alphabet or "auto", nonstandard, reweight_identity)
    if fmt == "csv":
        if label is None:
            label = "label" if "label" in read_csv_header(path) else None
        return load_csv_alignment(
            path, alphabet or "auto", nonstandard, reweight_identity, label_column=label
        )
    return load_matrix(path)


# ------------------------------------------------------------------------------------ summary


def _counts(labels: torch.Tensor, names: list[str]) -> str:
    """``"3 classes: a 10, b 4, c 7"``."""
    counts = torch.bincount(labels, minlength=len(names)).tolist()
    return f"{len(names)} classes: " + ", ".join(f"{name} {c}" for name, c in zip(names, counts))


def _nonstandard(report: dict) -> str:
    letters = ", ".join(f"{k} {v}" for k, v in report.get("letters", {}).items()) or "none"
    action = "mapped to gap" if report.get("policy") == "gap" else "sequences dropped"
    text = (
        f"{letters}; policy {report.get('policy')} ({action}); "
        f"sequences affected: {report.get('n_sequences_affected', 0)}, "
        f"dropped: {report.get('n_dropped', 0)}"
    )
    removed = report.get("removed_with_inserts")
    if removed:
        text += "; removed with inserts: " + ", ".join(f"{k} {v}" for k, v in removed.items())
    return text


def _wrap(head: str, body: str) -> str:
    """``head`` then ``body`` filled to 100 columns, breaking only after ", " (so "EUR 1006"
    or a path never splits)."""
    glued = body.replace(", ", ",\x00").replace(" ", "\xa0").replace("\x00", " ")
    text = textwrap.fill(
        glued,
        width=100,
        initial_indent=f"{head:<13}",
        subsequent_indent=" " * 13,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return text.replace("\xa0", " ")


def idx_labels_beside(images: PathLike) -> str:
    """MNIST's labels file next to its images file (``...-images-idx3-ubyte`` ->
    ``...-labels-idx1-ubyte``), or a one-line error asking for ``data.labels_path``."""
    name = Path(images).name
    guess = Path(images).with_name(name.replace("images-idx3", "labels-idx1"))
    if guess.name == name or not guess.exists():
        raise InputError(images, "data.labels_path", "set it: no labels file found beside "
                         "the images")
    return str(guess)


def _summarize_continuous(data: Dataset) -> list[str]:
    x = data.x.double()
    return [
        f"{'source':<13}{data.source}",
        f"{'format':<13}{data.info.get('format', '?')}",
        f"{'shape':<13}{data.n_samples} samples of shape {tuple(data.event_shape)} (float32)",
        f"{'values':<13}min {x.min():.4g}, max {x.max():.4g}, mean {x.mean():.4g}, "
        f"std {x.std():.4g}",
    ]


def reading(data: Dataset, stored: np.dtype, suffix: str, by_content: bool) -> str:
    """The ``dtype`` line of a numpy file: the dtype it stores and how raybm reads it, e.g.
    ``int64 in the file, read as floats (float32)`` or ``uint8 in the file, read as Potts
    states (255 states) by an rbm, as floats (float32) by a continuous model``.

    ``by_content``: the format was detected, not given; a continuous model then reads an
    ``.npz`` as floats whatever it holds (``data.format: auto``), an rbm as states."""
    text = f"{stored} in the file, read as "
    if data.continuous:
        text += "floats (float32)"
        if suffix == ".npy" and stored.kind in "biu":
            # .npy is floats by its name; the same array in an .npz is read as states.
            text += ", never as states (save it as .npz for an rbm)"
        return text
    text += ("binary states (0/1)" if data.n_states == 2
             else f"Potts states ({data.n_states} states)")
    if by_content and suffix == ".npz":
        text += " by an rbm, as floats (float32) by a continuous model"
    return text


def summarize(data: Dataset, dtype_line: str | None = None) -> str:
    """A multi-line human-readable description of a Dataset; ``dtype_line`` (:func:`reading`)
    goes under its shape."""
    if data.continuous:
        lines = _summarize_continuous(data)
        if dtype_line:
            lines.insert(3, _wrap("dtype", dtype_line))
        if data.labels is not None and data.label_names is not None:
            lines.append(_wrap("labels", _counts(data.labels, data.label_names)))
        return "\n".join(lines)
    lines = [
        f"{'source':<13}{data.source}",
        f"{'format':<13}{data.info.get('format', '?')}",
        f"{'shape':<13}{data.n_samples} samples x {data.n_visible} visible units (n_visible)",
    ]
    if dtype_line:
        lines.append(_wrap("dtype", dtype_line))
    states = f"{data.n_states}"
    if data.alphabet:
        states += f" (alphabet {data.alphabet!r}, state k = alphabet[k])"
    elif data.n_states == 2:
        states += f" (binary; fraction of ones {data.x.float().mean().item():.4f})"
    lines.append(f"{'n_states':<13}{states}")
    if data.labels is not None and data.label_names is not None:
        lines.append(_wrap("labels", _counts(data.labels, data.label_names)))
    else:
        lines.append(f"{'labels':<13}none")
    if data.sub_labels is not None and data.sub_label_names is not None:
        lines.append(_wrap("sub-labels", _counts(data.sub_labels, data.sub_label_names)))
    if data.weights is not None:
        n_eff = float(data.weights.double().sum())
        theta = data.info.get("reweight_identity")
        how = f" (1 / #neighbours at identity >= {theta})" if theta is not None else ""
        lines.append(f"{'weights':<13}n_eff {n_eff:.1f} of {data.n_samples}{how}")
    if "nonstandard" in data.info:
        lines.append(_wrap("non-standard", _nonstandard(data.info["nonstandard"])))
    shown = {"format", "nonstandard", "n_eff", "reweight_identity"}
    rest = ", ".join(f"{k}={v}" for k, v in data.info.items() if k not in shown)
    if rest:
        lines.append(_wrap("info", rest))
    return "\n".join(lines)


def inspect(path: PathLike | None, **loader_kwargs) -> str:
    """Load ``path`` (validating it) and return :func:`summarize` of it.

    Takes :func:`load_any`'s keywords, plus the short aliases ``panel=`` (hapt panel) and
    ``labels=`` (IDX labels file).
    """
    aliases = {"panel": "panel_path", "labels": "labels_path"}
    kwargs = {aliases.get(k, k): v for k, v in loader_kwargs.items()}
    allowed = set(load_any.__kwdefaults__)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise InputError("inspect", unknown[0], f"unknown option (known: {', '.join(sorted(allowed))})")
    data = load_any(path, **kwargs)
    # A numpy file stores a dtype of its own (int64, uint8, float64...), which the loaded data
    # no longer shows: say it, and what raybm made of it.
    suffix = Path(strip_gz(str(path))).suffix if path is not None else ""
    stored = data_array(path) if suffix in (".npy", ".npz") else None
    line = None
    if stored is not None:
        line = reading(data, stored.dtype, suffix, kwargs.get("format", "auto") == "auto")
    return summarize(data, line)

"""IDX files (the MNIST format): reading any IDX array, and loading binarised MNIST images.

Format (all integers big-endian)::

    magic   4 bytes: 0x00 0x00 <type code> <ndim>
    dims    ndim x uint32
    data    prod(dims) values of the type, row-major

Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. As a
32-bit integer the magic of MNIST images (uint8, 3 dims) is 2051 = 0x0803 and of labels
(uint8, 1 dim) 2049 = 0x0801.
"""

from __future__ import annotations

import gzip
import math
import numbers
from pathlib import Path

import numpy as np
import torch

from raybm.data._io import PathLike, atomic_path, read_bytes
from raybm.data.dataset import Dataset
from raybm.errors import InputError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type code -> big-endian numpy dtype.
_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _parse_idx(data: bytes, path: PathLike) -> tuple[int, np.ndarray]:
    """``(magic, array)`` from the bytes of an IDX file; every inconsistency is an InputError."""
    if len(data) < 4:
        raise InputError(path, "header", f"{len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _TYPES or ndim == 0:
        raise InputError(
            path, "magic number", f"0x{magic:08x} ({magic}) is not an IDX magic number"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError(path, "header", f"truncated: {ndim} dimensions need {header} header bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _TYPES[type_code]
    expected = math.prod(dims) * dtype.itemsize  # Python ints: no overflow on absurd headers
    got = len(data) - header
    if got < expected:
        raise InputError(
            path,
            "length",
            f"truncated: the header says {'x'.join(map(str, dims))} values "
            f"({expected} bytes) but only {got} bytes follow",
        )
    if got > expected:
        raise InputError(
            path, "length", f"{got - expected} bytes after the {expected} the header announces"
        )
    array = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # Native byte order and a writable copy, so torch.from_numpy works on it.
    return magic, array.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: PathLike) -> np.ndarray:
    """The array stored in any IDX file (gzipped or plain), in native byte order."""
    return _parse_idx(read_bytes(path), path)[1]


def write_idx(path: PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends in ``.gz``), atomically."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise InputError(path, "array", f"dtype {array.dtype} / ndim {array.ndim} has no IDX form")
    payload = bytes([0, 0, code, array.ndim])
    payload += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload += np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes()
    path = Path(path)
    if path.name.endswith(".gz"):
        # mtime=0 makes the output reproducible byte for byte.
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def check_threshold(where: PathLike, threshold: float) -> None:
    """Binarisation thresholds are fractions of the pixel range, strictly inside (0, 1)."""
    if not isinstance(threshold, numbers.Real) or not 0.0 < threshold < 1.0:
        raise InputError(where, "threshold", f"{threshold!r} is not a number in (0, 1)")


def load_idx(
    images_path: PathLike, labels_path: PathLike | None = None, threshold: float = 0.5
) -> Dataset:
    """Binarised IDX3 images (``x = pixel / 255 > threshold``), flattened row-major to
    ``n_visible = rows * cols``, with optional IDX1 labels.

    Labels keep their value: ``label_names = ["0", ..., str(max)]`` so that digit ``d`` is
    label ``d`` even when some digit is absent.
    """
    check_threshold(images_path, threshold)
    magic, pixels = _parse_idx(read_bytes(images_path), images_path)
    if magic != IMAGES_MAGIC:
        raise InputError(
            images_path,
            "magic number",
            f"{magic} (0x{magic:08x}) but IDX3 uint8 images have {IMAGES_MAGIC} (0x00000803)",
        )
    n, rows, cols = pixels.shape
    if n == 0:
        raise InputError(images_path, "images", "the file holds no images")
    x = torch.from_numpy(pixels.reshape(n, rows * cols).astype(np.float32) / 255.0 > threshold)
    info: dict = {"format": "idx", "image_shape": [rows, cols], "threshold": threshold}

    labels = label_names = None
    if labels_path is not None:
        magic, values = _parse_idx(read_bytes(labels_path), labels_path)
        if magic != LABELS_MAGIC:
            raise InputError(
                labels_path,
                "magic number",
                f"{magic} (0x{magic:08x}) but IDX1 uint8 labels have {LABELS_MAGIC} (0x00000801)",
            )
        if values.shape[0] != n:
            raise InputError(
                labels_path,
                "count",
                f"{values.shape[0]} labels for {n} images in {images_path}",
            )
        labels = torch.from_numpy(values.astype(np.int64))
        label_names = [str(d) for d in range(int(values.max()) + 1)]
        info["labels_path"] = str(labels_path)

    return Dataset(
        x=x.to(torch.uint8),
        n_states=2,
        labels=labels,
        label_names=label_names,
        source=str(images_path),
        info=info,
    )

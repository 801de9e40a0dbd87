"""Reading user files as bytes or text, with every failure turned into an :class:`InputError`.

All loaders read through here so that a missing file, a directory, a corrupt gzip stream or a
file that is not UTF-8 text gives the same one-line message naming the file, instead of an
``OSError`` / ``EOFError`` / ``UnicodeDecodeError`` with a traceback.

Compression: a file is gunzipped when it starts with the gzip magic bytes ``1f 8b``, whatever
its name; a ``.gz`` name on a plain file is tolerated (the content decides). The files raybm
reads are at most tens of MB, so reading them whole keeps the parsers simple.
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raybm.errors import InputError

PathLike = str | os.PathLike

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: PathLike) -> bytes:
    """The decompressed content of ``path``."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(path, "path", "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "path", "is a directory, not a file") from None
    except PermissionError:
        raise InputError(path, "path", "permission denied") from None
    except OSError as err:
        raise InputError(path, "path", f"cannot read the file ({err.strerror or err})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # EOFError is what a truncated download gives; BadGzipFile (an OSError) a corrupt one.
        raise InputError(path, "gzip", f"corrupt or truncated gzip data ({err})") from None


def peek(path: PathLike, n: int) -> bytes:
    """The first ``n`` decompressed bytes of ``path`` (to sniff a format without reading all)."""
    try:
        with open(path, "rb") as f:
            head = f.read(n)
            if head[:2] != GZIP_MAGIC:
                return head
            f.seek(0)
            with gzip.GzipFile(fileobj=f) as gz:
                return gz.read(n)
    except FileNotFoundError:
        raise InputError(path, "path", "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "path", "is a directory, not a file") from None
    except (OSError, EOFError, zlib.error) as err:
        raise InputError(path, "path", f"cannot read the file ({err})") from None


def read_text(path: PathLike) -> str:
    """The content of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped)."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        byte = data[err.start]
        raise InputError(
            path, f"line {line}", f"not UTF-8 text (byte 0x{byte:02x} at offset {err.start})"
        ) from None


def strip_gz(name: str) -> str:
    """``name`` without a trailing ``.gz`` (lower-cased), to read the real extension."""
    name = name.lower()
    return name[:-3] if name.endswith(".gz") else name


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only on success.

    Readers (another worker, a resumed run) then see the old file or the whole new one, never a
    half-written one; the temporary file is in the same directory so ``os.replace`` is atomic.
    """
    path = Path(path)
    # A fresh unique name rather than mkstemp: the writer creates the file, so it gets the usual
    # umask permissions instead of mkstemp's private 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

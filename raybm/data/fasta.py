"""Aligned FASTA / A2M alignments as categorical (Potts) data.

Format::

    >NAME optional description
    SEQUENCE LINES (wrapped over any number of lines)
    >NEXT ...

A2M convention (Pfam, HMMER, jackhmmer output): upper-case letters and ``-`` are *match*
columns, the columns a model of the family has; lower-case letters and ``.`` are *insert* states
specific to one sequence. Inserts are removed, so every record must keep the same number of
match columns (PF00014: 219 raw columns -> 53). A plain aligned FASTA (upper case and ``-`` only)
passes through unchanged.

Letters that are not in the alphabet are handled by the ``nonstandard`` policy of
:func:`raybm.data.alphabet.encode_sequences`; lower-case non-standard letters never reach it,
being inserts, but are still counted in ``info["nonstandard"]["removed_with_inserts"]`` so
that every ``X``/``x`` of the file is accounted for.
"""

from __future__ import annotations

from raybm.data._alignment import alignment_dataset, check_reweight
from raybm.data._io import PathLike, read_text
from raybm.data.alphabet import Alphabet, resolve_alphabet
from raybm.data.dataset import Dataset
from raybm.errors import InputError

_LOWER = "abcdefghijklmnopqrstuvwxyz"
# str.translate table deleting insert states and whitespace inside sequence lines.
_DROP_INSERTS = str.maketrans("", "", _LOWER + ".")


def read_fasta(path: PathLike) -> list[tuple[str, str]]:
    """``[(name, raw sequence)]``: the name is the header's first word, wrapped lines joined."""
    records: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(read_text(path).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(";"):  # ';' starts a comment in old FASTA files
            continue
        if line.startswith(">"):
            words = line[1:].split()
            records.append((words[0] if words else f"#{len(records) + 1}", []))
        elif not records:
            raise InputError(path, f"line {lineno}", "sequence data before the first '>' header")
        else:
            records[-1][1].append("".join(line.split()))
    if not records:
        raise InputError(path, "records", "no FASTA records (empty file?)")
    out = []
    for name, parts in records:
        seq = "".join(parts)
        if not seq:
            raise InputError(path, f"record {name!r}", "has a header but no sequence")
        out.append((name, seq))
    return out


def load_fasta(
    path: PathLike,
    alphabet: str | Alphabet = "protein",
    nonstandard: str = "gap",
    reweight_identity: float | None = None,
) -> Dataset:
    """Load an aligned FASTA / A2M file: insert states removed, letters encoded as states.

    ``alphabet``: "protein" (``-ACDEFGHIKLMNPQRSTVWY``), "rna" (``-ACGU``, T read as U), "dna",
    "auto" or explicit letters. ``nonstandard``: "gap" or "drop" (see module docstring).
    ``reweight_identity``: None, or theta in (0, 1] for weights 1 / #neighbours at identity
    >= theta (``info["n_eff"]`` is their sum).
    """
    check_reweight(path, reweight_identity)
    records = read_fasta(path)
    names = [name for name, _ in records]
    raw = [seq for _, seq in records]
    matches = [seq.translate(_DROP_INSERTS) for seq in raw]
    if all(not m for m in matches):
        raise InputError(
            path, "sequences", "no match columns: every letter is lower case (an A2M insert)"
        )
    alpha = resolve_alphabet(alphabet, path, matches)

    joined = "".join(raw)
    info: dict = {"format": "fasta", "n_records": len(records)}
    widths = {len(seq) for seq in raw}
    if len(widths) == 1:
        # Only meaningful when inserts are padded with '.' to a common width (Pfam A2M).
        info["raw_columns"] = widths.pop()
    info["match_columns"] = len(matches[0])
    data = alignment_dataset(
        path, matches, names, alpha, nonstandard, reweight_identity, info=info
    )
    data.info["nonstandard"]["removed_with_inserts"] = {
        ch: n for ch in _LOWER if not alpha.is_standard(ch) and (n := joined.count(ch))
    }
    return data

"""Sequence alphabets and the one function that encodes aligned sequences as Potts states.

State ``k`` of a categorical visible unit is the letter ``alphabet[k]``; the gap ``-`` comes
first (state 0) in the built-in alphabets:

=========  ==========================  ========  ==================================
name       letters                     n_states  aliases (mapped before encoding)
=========  ==========================  ========  ==================================
protein    ``-ACDEFGHIKLMNPQRSTVWY``   21
rna        ``-ACGU``                   5         ``T -> U``
dna        ``-ACGT``                   5         ``U -> T``
=========  ==========================  ========  ==================================

Any other string is an explicit alphabet: its characters, in order, are the states (letters
are upper-cased; ``-`` may appear, anywhere). ``"auto"`` picks ``rna`` (``dna`` when ``T``
outnumbers ``U``) if at least 90% of the letters are ``ACGTUN``, else ``protein``.

Characters met while encoding fall in three classes:

* alphabet letters, aliases and ``-`` (when in the alphabet): encoded;
* other letters (``X``, ``B``, ``Z``, ``J``, ``O``, ``U`` for proteins, ``N``, ``R``, ``Y``...
  for nucleic acids): *non-standard*, handled by the ``nonstandard`` policy: ``"gap"`` encodes
  them as the gap, ``"drop"`` drops the sequence. Both are counted in the returned info;
* anything else (digits, ``*``, ``.``, ``?``...): an :class:`InputError` naming the record,
  since they mean the file is not what it claims to be.

Letters are matched case-insensitively here; stripping A2M insert states (lower case) is the
FASTA reader's job, before encoding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from raybm.data._io import PathLike
from raybm.errors import InputError

GAP = "-"
PROTEIN = "-ACDEFGHIKLMNPQRSTVWY"
RNA = "-ACGU"
DNA = "-ACGT"

NONSTANDARD_POLICIES = ("gap", "drop")

_NUCLEOTIDE_LETTERS = frozenset("ACGTUN")
_ASCII_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# Sentinel codes in the byte -> state lookup table.
_INVALID = -2
_NONSTANDARD = -1


@dataclass(frozen=True)
class Alphabet:
    """The states of a categorical unit: ``letters[k]`` is state ``k``."""

    name: str
    letters: str
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def n_states(self) -> int:
        return len(self.letters)

    @property
    def gap_state(self) -> int | None:
        return self.letters.index(GAP) if GAP in self.letters else None

    def is_standard(self, letter: str) -> bool:
        """Whether a letter (any case) is encoded as itself or through an alias."""
        up = letter.upper()
        return up in self.letters or up in self.aliases

    def lookup_table(self) -> np.ndarray:
        """``table[byte]``: the state of an ASCII byte, or _NONSTANDARD / _INVALID."""
        table = np.full(256, _INVALID, dtype=np.int16)
        for ch in _ASCII_LETTERS:
            table[ord(ch)] = _NONSTANDARD
        for state, ch in enumerate(self.letters):
            table[ord(ch)] = state
            table[ord(ch.lower())] = state
        for src, dst in self.aliases.items():
            state = self.letters.index(dst)
            table[ord(src)] = state
            table[ord(src.lower())] = state
        return table


BUILTIN = {
    "protein": Alphabet("protein", PROTEIN),
    "rna": Alphabet("rna", RNA, {"T": "U"}),
    "dna": Alphabet("dna", DNA, {"U": "T"}),
}


def resolve_alphabet(
    spec: str | Alphabet, where: PathLike = "alphabet", sequences: Sequence[str] = ()
) -> Alphabet:
    """The alphabet named by ``spec`` (see the module docstring); ``sequences`` feed "auto"."""
    if isinstance(spec, Alphabet):
        return spec
    if not isinstance(spec, str) or not spec:
        raise InputError(where, "alphabet", f"{spec!r} is not an alphabet name or letters")
    key = spec.lower()
    if key in BUILTIN:
        return BUILTIN[key]
    if key == "auto":
        return _detect(sequences)
    letters = spec.upper()
    bad = [ch for ch in letters if ch != GAP and ch not in _ASCII_LETTERS]
    if bad:
        raise InputError(
            where,
            "alphabet",
            f"{spec!r} is neither protein/rna/dna/auto nor letters and '-' (bad: {bad[0]!r})",
        )
    if len(set(letters)) != len(letters):
        raise InputError(where, "alphabet", f"{spec!r} repeats a letter")
    if len(letters) < 2:
        raise InputError(where, "alphabet", f"{spec!r} has fewer than 2 states")
    return Alphabet("custom", letters)


def _detect(sequences: Sequence[str]) -> Alphabet:
    """Nucleotides when >= 90% of the letters are ACGTUN. A fraction rather than "only these
    letters", so RNA with a few IUPAC codes (R, Y, K...) is still RNA; in proteins A, C, G, T
    make up only ~20% of residues, so the two never meet near 90%."""
    counts = Counter("".join(sequences).upper())
    n_letters = sum(c for ch, c in counts.items() if ch in _ASCII_LETTERS)
    n_nucleotide = sum(counts[ch] for ch in _NUCLEOTIDE_LETTERS)
    if n_letters and n_nucleotide >= 0.9 * n_letters:
        return BUILTIN["dna"] if counts["T"] > counts["U"] else BUILTIN["rna"]
    return BUILTIN["protein"]


@dataclass
class Encoded:
    """Result of :func:`encode_sequences`: states of the kept sequences and what happened."""

    x: torch.Tensor  # (n_kept, n_columns) uint8
    keep: np.ndarray  # (n_input,) bool, which input sequences are rows of x
    alphabet: Alphabet
    nonstandard: dict  # policy, counts per letter, sequences affected / dropped


def encode_sequences(
    sequences: Sequence[str],
    names: Sequence[str],
    alphabet: str | Alphabet,
    nonstandard: str,
    where: PathLike,
) -> Encoded:
    """Encode equal-length aligned sequences as states ``0 .. n_states-1``.

    ``names[i]`` names sequence ``i`` in error messages (a FASTA header, a CSV row). The
    non-standard report is ``{"policy", "letters": {letter: count}, "n_sequences_affected",
    "n_dropped"}`` (letters as they appear in the data).
    """
    if nonstandard not in NONSTANDARD_POLICIES:
        raise InputError(
            where, "nonstandard", f"{nonstandard!r} is not one of {', '.join(NONSTANDARD_POLICIES)}"
        )
    if not sequences:
        raise InputError(where, "sequences", "no sequences (empty file?)")
    alpha = resolve_alphabet(alphabet, where, sequences)

    width = len(sequences[0])
    for seq, name in zip(sequences, names):
        if len(seq) != width:
            raise InputError(
                where,
                f"record {name!r}",
                f"{len(seq)} aligned columns, but {width} in the first record {names[0]!r}",
            )
        if not seq.isascii():
            bad = next(ch for ch in seq if not ch.isascii())
            raise InputError(where, f"record {name!r}", f"character {bad!r} is not a sequence letter")
    if width == 0:
        raise InputError(where, "sequences", "the aligned sequences have no columns")

    raw = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8)
    raw = raw.reshape(len(sequences), width)
    codes = alpha.lookup_table()[raw]

    invalid = codes == _INVALID
    if invalid.any():
        row, col = (int(i) for i in np.argwhere(invalid)[0])
        ch = chr(raw[row, col])
        what = "a gap, but the alphabet has no '-'" if ch == GAP else "not a letter"
        raise InputError(
            where, f"record {names[row]!r}", f"character {ch!r} at aligned column {col + 1} is {what}"
        )

    odd = codes == _NONSTANDARD
    affected = odd.any(axis=1)
    values, counts = np.unique(raw[odd], return_counts=True)
    letters = {chr(v): int(c) for v, c in zip(values, counts)}
    keep = np.ones(len(sequences), dtype=bool)
    if odd.any():
        if nonstandard == "gap":
            if alpha.gap_state is None:
                raise InputError(
                    where,
                    "nonstandard",
                    f"policy 'gap' needs '-' in the alphabet {alpha.letters!r}; "
                    f"use 'drop' (non-standard letters: {''.join(letters)})",
                )
            codes[odd] = alpha.gap_state
        else:
            keep = ~affected
            if not keep.any():
                raise InputError(
                    where,
                    "nonstandard",
                    "policy 'drop' dropped every sequence (all hold non-standard letters)",
                )
    report = {
        "policy": nonstandard,
        "letters": letters,
        "n_sequences_affected": int(affected.sum()),
        "n_dropped": int((~keep).sum()),
    }
    x = torch.from_numpy(codes[keep].astype(np.uint8))
    return Encoded(x=x, keep=keep, alphabet=alpha, nonstandard=report)

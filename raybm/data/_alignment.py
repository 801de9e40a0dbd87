"""Shared tail of the alignment loaders (FASTA, CSV): encode, filter labels, reweight."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from raybm.data._io import PathLike
from raybm.data._labels import encode_labels
from raybm.data.alphabet import Alphabet, encode_sequences
from raybm.data.dataset import Dataset
from raybm.data.reweight import identity_weights
from raybm.errors import InputError


def check_reweight(path: PathLike, reweight_identity: float | None) -> None:
    if reweight_identity is None:
        return
    if not isinstance(reweight_identity, numbers.Real) or not 0.0 < reweight_identity <= 1.0:
        raise InputError(path, "reweight_identity", f"{reweight_identity!r} is not a number in (0, 1]")


def alignment_dataset(
    path: PathLike,
    sequences: Sequence[str],
    names: Sequence[str],
    alphabet: str | Alphabet,
    nonstandard: str,
    reweight_identity: float | None,
    label_values: Sequence[str] | None = None,
    info: dict | None = None,
) -> Dataset:
    """A categorical Dataset from aligned match-state sequences (one per record)."""
    check_reweight(path, reweight_identity)
    enc = encode_sequences(sequences, names, alphabet, nonstandard, path)
    info = dict(info or {})
    info["alphabet"] = enc.alphabet.name
    info["nonstandard"] = enc.nonstandard

    labels = label_names = None
    if label_values is not None:
        kept = [v for v, k in zip(label_values, enc.keep) if k]
        labels, label_names = encode_labels(kept)

    weights = None
    if reweight_identity is not None:
        weights = identity_weights(enc.x, enc.alphabet.n_states, reweight_identity)
        info["reweight_identity"] = reweight_identity
        info["n_eff"] = float(weights.double().sum())

    return Dataset(
        x=enc.x,
        n_states=enc.alphabet.n_states,
        labels=labels,
        label_names=label_names,
        weights=weights,
        alphabet=enc.alphabet.letters,
        source=str(path),
        info=info,
    )

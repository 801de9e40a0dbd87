"""Turning raw label values (strings from a file) into ``labels`` + ``label_names``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def label_order(names: set[str]) -> list[str]:
    """Distinct label texts, sorted numerically when every one is a number, else as strings.

    Numeric sorting keeps ``"9"`` before ``"10"`` (and ``"53.0"`` before ``"126.0"``); the
    names keep the text exactly as written in the file, so a caller can map them back.
    """
    numbers = {name: _as_number(name) for name in names}
    if names and all(v is not None for v in numbers.values()):
        return sorted(names, key=lambda name: (numbers[name], name))
    return sorted(names)


def encode_labels(
    values: Sequence[str], order: Sequence[str] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """``(labels, label_names)``: ``labels[i]`` indexes ``label_names``, which is ``order`` if
    given (it must contain every value) or :func:`label_order` of the distinct values."""
    names = list(order) if order is not None else label_order(set(values))
    index = {name: i for i, name in enumerate(names)}
    labels = torch.tensor([index[v] for v in values], dtype=torch.int64)
    return labels, names

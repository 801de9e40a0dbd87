"""Deterministic train / test splits."""

from __future__ import annotations

import torch

from raybm.data.dataset import Dataset
from raybm.errors import InputError
from raybm.streams import generator


def train_test_split(dataset: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """``(train, test)``: ``round(test_fraction * n)`` rows drawn for the test set by a
    permutation from the ``"split"`` stream of ``seed`` (``raybm.streams``), the rest for training.

    The split depends only on ``(n, test_fraction, seed)``, never on the global RNG, so a
    resumed run or another worker gets the same split. Each part keeps the original row order
    (shuffling is the trainer's business); the two parts are disjoint and cover every row.
    """
    n = dataset.n_samples
    if not 0.0 < test_fraction < 1.0:
        raise InputError(dataset.source or "dataset", "test_fraction", f"{test_fraction} is outside (0, 1)")
    n_test = round(test_fraction * n)
    if not 0 < n_test < n:
        raise InputError(
            dataset.source or "dataset",
            "test_fraction",
            f"{test_fraction} of {n} samples leaves an empty train or test set",
        )
    perm = torch.randperm(n, generator=generator(seed, "split"))
    test_index = perm[:n_test].sort().values
    train_index = perm[n_test:].sort().values
    train, test = dataset.subset(train_index), dataset.subset(test_index)
    for part, name in ((train, "train"), (test, "test")):
        part.info["split"] = {"part": name, "test_fraction": test_fraction, "seed": seed}
    return train, test

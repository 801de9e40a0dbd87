"""Deterministic train / test splits."""

from __future__ import annotations

import pytest
import torch

from raybm.data.dataset import Dataset
from raybm.data.split import train_test_split
from raybm.errors import InputError


@pytest.fixture
def data() -> Dataset:
    n = 103
    # Row i holds i in binary, so rows identify themselves.
    x = ((torch.arange(n)[:, None] >> torch.arange(7)) & 1).to(torch.uint8)
    return Dataset(
        x=x,
        labels=torch.arange(n) % 3,
        label_names=["a", "b", "c"],
        weights=torch.rand(n, generator=torch.Generator().manual_seed(0)),
        source="toy",
    )


def row_ids(part: Dataset) -> list[int]:
    return (part.x.long() << torch.arange(7)).sum(1).tolist()


def test_same_seed_same_split(data):
    a_train, a_test = train_test_split(data, 0.2, seed=7)
    b_train, b_test = train_test_split(data, 0.2, seed=7)
    assert torch.equal(a_train.x, b_train.x) and torch.equal(a_test.x, b_test.x)
    # Independent of the global RNG state.
    torch.manual_seed(999)
    torch.rand(10)
    c_train, _ = train_test_split(data, 0.2, seed=7)
    assert torch.equal(a_train.x, c_train.x)


def test_different_seed_different_split(data):
    assert row_ids(train_test_split(data, 0.2, 1)[1]) != row_ids(train_test_split(data, 0.2, 2)[1])


def test_disjoint_covering_and_sized(data):
    train, test = train_test_split(data, 0.25, seed=3)
    ids_train, ids_test = row_ids(train), row_ids(test)
    assert len(ids_test) == round(0.25 * 103)
    assert not set(ids_train) & set(ids_test)
    assert sorted(ids_train + ids_test) == list(range(103))
    assert ids_train == sorted(ids_train)  # original order kept
    # Labels and weights travel with their rows.
    assert train.labels.tolist() == [i % 3 for i in ids_train]
    assert torch.equal(test.weights, data.weights[torch.tensor(ids_test)])
    assert test.label_names == data.label_names
    assert test.info["split"] == {"part": "test", "test_fraction": 0.25, "seed": 3}


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.001])
def test_bad_fraction(data, fraction):
    with pytest.raises(InputError) as caught:
        train_test_split(data, fraction, seed=0)
    assert "toy" in str(caught.value) and "test_fraction" in str(caught.value)

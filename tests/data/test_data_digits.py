"""The embedded default data set (scikit-learn digits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits

from raybm.data.digits import load_digits
from raybm.errors import InputError


def test_digits_binarised():
    data = load_digits()
    assert data.x.shape == (1797, 64) and data.x.dtype == torch.uint8 and data.n_states == 2
    raw = sklearn_digits()
    assert np.array_equal(data.x.numpy(), (raw.data / 16.0 > 0.5).astype(np.uint8))
    assert data.labels.tolist() == raw.target.tolist()
    assert data.label_names == [str(d) for d in range(10)]
    assert torch.bincount(data.labels).sum() == 1797
    assert load_digits(0.2).x.sum() > data.x.sum()


def test_bad_threshold():
    with pytest.raises(InputError) as caught:
        load_digits(1.0)
    assert "threshold" in str(caught.value)

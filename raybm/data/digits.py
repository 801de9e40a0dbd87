"""scikit-learn's digits (1,797 8x8 images, pixels 0..16): the embedded default data set.

It ships inside scikit-learn, so a laptop run needs no download and no data path.
Binarised as ``x = pixel / 16 > threshold``; labels are the digits, ``label_names`` "0".."9".
"""

from __future__ import annotations

import numpy as np
import torch

from raybm.data.dataset import Dataset
from raybm.data.idx import check_threshold

SOURCE = "sklearn:digits"


def load_digits(threshold: float = 0.5) -> Dataset:
    """The 1,797 binarised 8x8 digits as a ``(1797, 64)`` binary Dataset with labels 0-9."""
    check_threshold(SOURCE, threshold)
    # Imported here: scikit-learn takes ~1 s to import and only this loader needs it.
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64)
    x = torch.from_numpy((pixels / 16.0 > threshold).astype(np.uint8))
    return Dataset(
        x=x,
        n_states=2,
        labels=torch.from_numpy(np.asarray(bunch.target, dtype=np.int64)),
        label_names=[str(d) for d in range(10)],
        source=SOURCE,
        info={"format": "digits", "image_shape": [8, 8], "threshold": threshold},
    )

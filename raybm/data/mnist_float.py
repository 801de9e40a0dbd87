"""MNIST as continuous data: grey levels in ``[-1, 1]``, a chosen set of digits in chosen
proportions.

Pixels ``p in 0..255`` become ``x = p / 255 * 2 - 1`` (float32, so 0 -> -1 and 255 -> 1
exactly), the scaling of image EBMs trained with Langevin dynamics (Du & Mordatch 2019,
"Implicit generation and generalization in energy-based models"; Grathwohl et al. 2020, "Your
classifier is secretly an energy based model", ``Normalize(0.5, 0.5)``): a range symmetric
about 0 that the initial uniform noise of the sampler also covers. Samples keep the image
shape ``(1, 28, 28)`` (channel first) for convolutional energies; :func:`raybm.data.floats.
check_event_shape` flattens them for dense ones.

Proportions skew the class balance on purpose, e.g. to study how a sampler recovers the
weights of unequal modes (digits ``[2, 3, 6]`` in proportions ``4 : 2 : 1``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from raybm.data._io import PathLike
from raybm.data.dataset import Dataset
from raybm.data.idx import read_idx
from raybm.errors import InputError


def _read_images(path: PathLike) -> np.ndarray:
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(path, "images", f"expected (n, rows, cols) uint8 IDX images, got "
                         f"{images.dtype} of shape {images.shape}")
    if images.shape[0] == 0:
        raise InputError(path, "images", "the file holds no images")
    return images


def _read_labels(path: PathLike, n: int, images_path: PathLike) -> np.ndarray:
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(path, "labels", f"expected (n,) integer IDX labels, got {labels.dtype} "
                         f"of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise InputError(path, "labels", f"negative label {int(labels.min())}")
    if labels.shape[0] != n:
        raise InputError(path, "count", f"{labels.shape[0]} labels for {n} images in {images_path}")
    return labels.astype(np.int64)


def _check_digits(digits: Sequence[int] | None, present: list[int]) -> list[int]:
    """The digits to keep, in order: ``digits`` after checking each is a label the file holds
    once, or every label present (sorted) when None."""
    if digits is None:
        return present
    digits = list(digits)
    if not digits:
        raise InputError("data.digits", "", "an empty list keeps no image")
    for d in digits:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or int(d) not in present:
            raise InputError("data.digits", "", f"unknown digit {d!r} (the labels hold "
                             f"{', '.join(map(str, present))})")
    if len(set(digits)) != len(digits):
        raise InputError("data.digits", "", f"{digits} repeats a digit")
    return [int(d) for d in digits]


def _check_proportions(proportions: Sequence[float] | None, available: list[int]) -> list[float]:
    """Normalised proportions, one per kept digit; None keeps the file's own class balance."""
    if proportions is None:
        return [a / sum(available) for a in available]
    proportions = list(proportions)
    if len(proportions) != len(available):
        raise InputError("data.proportions", "", f"{len(proportions)} values for "
                         f"{len(available)} digits (one per digit)")
    for k, p in enumerate(proportions):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (math.isfinite(p) and p > 0):
            raise InputError("data.proportions", "", f"value {k} is {p!r}; each must be a finite "
                             "number > 0")
    total = float(sum(proportions))
    return [float(p) / total for p in proportions]


def _largest_remainder(target: list[float], caps: list[int], total: int) -> list[int]:
    """Integer counts ``<= caps`` summing to ``total`` (``<= sum(caps)``), each within one of
    ``target`` (Hamilton's largest-remainder apportionment)."""
    counts = [min(math.floor(t), c) for t, c in zip(target, caps)]
    order = sorted(range(len(target)), key=lambda k: (-(target[k] - math.floor(target[k])), k))
    while sum(counts) < total:
        for k in order:
            if sum(counts) < total and counts[k] < caps[k]:
                counts[k] += 1
    return counts


def class_counts(available: list[int], proportions: list[float], n_samples: int | None) -> list[int]:
    """How many images of each class to keep so that the counts follow ``proportions``
    (normalised) while using as many images as there are.

    The largest total the proportions allow is ``s = min_k available_k / p_k``: class ``k``
    then gets ``p_k s <= available_k``, the limiting class all its images. Each count is
    ``p_k s`` rounded to the nearest integer (never above ``available_k``, an integer at least
    ``p_k s``), so every count is within half an image of the exact proportion. ``n_samples``
    below that total scales it down: ``p_k n_samples`` apportioned by largest remainders,
    summing to exactly ``n_samples``.
    """
    scale = min(a / p for a, p in zip(available, proportions))
    counts = [min(math.floor(p * scale + 0.5), a) for a, p in zip(available, proportions)]
    if n_samples is None or n_samples >= sum(counts):
        return counts
    return _largest_remainder([p * n_samples for p in proportions], counts, n_samples)


def load_mnist_float(images_path: PathLike, labels_path: PathLike,
                     digits: Sequence[int] | None = None,
                     proportions: Sequence[float] | None = None,
                     n_samples: int | None = None,
                     gen: torch.Generator | None = None) -> Dataset:
    """MNIST images from IDX(.gz) files as float32 ``(n, 1, 28, 28)`` in ``[-1, 1]``.

    digits:      keep these classes only, labelled ``0 .. len(digits)-1`` in the order given
                 (``label_names`` are the digit texts); None keeps every digit, label = digit.
    proportions: one positive weight per kept digit (normalised): each class is subsampled so
                 that the counts follow them as closely as possible while keeping every image
                 of the limiting class (:func:`class_counts`); None keeps the file's balance.
    n_samples:   cap on the total, keeping the proportions; None or more than available: all.
    gen:         draws which images of a subsampled class are kept; required when a class is
                 subsampled (the file order is not random: the first 5,000 test images are
                 the easier half, so "the first k" would be a biased choice).

    Kept images stay in file order.
    """
    images = _read_images(images_path)
    labels = _read_labels(labels_path, images.shape[0], images_path)
    present = sorted(int(v) for v in np.unique(labels))
    digits = _check_digits(digits, present)
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int)
                                  or n_samples < 1):
        raise InputError("data.n_samples", "", f"must be a positive integer, got {n_samples!r}")
    members = [np.flatnonzero(labels == d) for d in digits]
    available = [len(m) for m in members]
    weights = _check_proportions(proportions, available)
    counts = class_counts(available, weights, n_samples)

    kept = []
    for m, c in zip(members, counts):
        if c < len(m):
            if gen is None:
                raise ValueError("load_mnist_float needs a generator to subsample a class")
            pick = torch.randperm(len(m), generator=gen)[:c].numpy()
            m = m[np.sort(pick)]
        kept.append(m)
    index = np.sort(np.concatenate(kept))
    new_label = np.full(max(present) + 1, -1, dtype=np.int64)
    new_label[digits] = np.arange(len(digits))
    x = images[index].astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)
    rows, cols = images.shape[1:]
    return Dataset(
        x=torch.from_numpy(np.ascontiguousarray(x.reshape(len(index), 1, rows, cols))),
        n_states=0,
        labels=torch.from_numpy(new_label[labels[index]]),
        label_names=[str(d) for d in digits],
        source=str(images_path),
        info={"format": "mnist_float", "scale": "x / 255 * 2 - 1", "image_shape": [rows, cols],
              "labels_path": str(labels_path), "digits": digits,
              "proportions": weights, "available": available, "class_counts": counts},
    )

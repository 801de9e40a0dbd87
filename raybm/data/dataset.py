"""The in-memory data set every loader returns and every algorithm consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """Samples, with optional labels and sample weights.

    x:           discrete data: ``(n, n_visible)`` uint8, 0/1 for binary data, state indices
                 ``0 .. n_states-1`` for categorical (Potts) data; continuous data:
                 ``(n, *event_shape)`` float32, finite (vectors, or ``(1, H, W)`` images).
    n_states:    2 for binary data (a Bernoulli RBM), the alphabet size for categorical data,
                 0 for continuous data.
    labels:      ``(n,)`` int64 in ``0 .. len(label_names)-1``, or None.
    label_names: the name of each label value (e.g. ``["AFR", "AMR", ...]``), or None.
    weights:     ``(n,)`` float32 per-sample weights (e.g. 1 / number of neighbours for protein
                 alignments), or None for uniform weights.
    alphabet:    for categorical data, the letter of each state (``"-ACGU"``), else None.
    source:      where the data came from (a path, or a generator's name), used in messages.
    info:        loader facts worth reporting (e.g. counts of non-standard letters and how they
                 were handled), printed by ``raybm data inspect`` and logged to MLflow.
    """

    x: torch.Tensor
    n_states: int = 2
    labels: torch.Tensor | None = None
    label_names: list[str] | None = None
    weights: torch.Tensor | None = None
    alphabet: str | None = None
    source: str = ""
    info: dict = field(default_factory=dict)
    sub_labels: torch.Tensor | None = None
    sub_label_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.x.dtype == torch.float32:
            if self.x.dim() < 2 or self.n_states != 0:
                raise ValueError("continuous Dataset.x must be (n, *event_shape) with "
                                 f"n_states 0, got {tuple(self.x.shape)}, {self.n_states}")
        else:
            if self.x.dim() != 2:
                raise ValueError(f"Dataset.x must be 2-D, got shape {tuple(self.x.shape)}")
            if self.x.dtype != torch.uint8:
                raise ValueError(f"Dataset.x must be uint8 or float32, got {self.x.dtype}")
        n = self.x.shape[0]
        for name in ("labels", "weights", "sub_labels"):
            t = getattr(self, name)
            if t is not None and t.shape != (n,):
                raise ValueError(f"Dataset.{name} must have shape ({n},), got {tuple(t.shape)}")

    @property
    def n_samples(self) -> int:
        return self.x.shape[0]

    @property
    def n_visible(self) -> int:
        return self.x.shape[1]

    @property
    def continuous(self) -> bool:
        return self.x.is_floating_point()

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""
        return tuple(self.x.shape[1:])

    def width(self) -> float:
        """The data's width: the root mean square over coordinates of each coordinate's
        standard deviation (weighted by ``weights`` when given), ``sqrt(tr Cov / d)``, in
        float64. The scale a noise level or a Langevin step of continuous data is measured
        in (DCD-VE's ``sigma_unit: width``): a sampler's step beyond about the squared width
        diverges (issue 19's calibration)."""
        if not self.continuous:
            raise ValueError("the width is defined for continuous data")
        x = self.x.reshape(self.n_samples, -1)
        w = (torch.full((self.n_samples,), 1.0 / self.n_samples, dtype=torch.float64)
             if self.weights is None else self.weights.to(torch.float64) / self.weights.sum())
        # in chunks of rows: a float64 copy of a large image set would not fit a worker
        rows = max(1, 2**22 // max(1, x.shape[1]))
        mean = sum(w[i:i + rows] @ x[i:i + rows].double() for i in range(0, len(x), rows))
        var = sum(w[i:i + rows] @ (x[i:i + rows].double() - mean).square()
                  for i in range(0, len(x), rows))
        return float(var.mean().sqrt())

    @property
    def n_labels(self) -> int:
        return 0 if self.label_names is None else len(self.label_names)

    def subset(self, index: torch.Tensor) -> "Dataset":
        """The rows ``index`` (a LongTensor or bool mask), with everything that goes with them."""

        def take(t):
            return None if t is None else t[index]

        return Dataset(
            x=self.x[index],
            n_states=self.n_states,
            labels=take(self.labels),
            label_names=self.label_names,
            weights=take(self.weights),
            alphabet=self.alphabet,
            source=self.source,
            info=dict(self.info),
            sub_labels=take(self.sub_labels),
            sub_label_names=self.sub_label_names,
        )


def grey_image_side(shape: tuple[int, ...]) -> int | None:
    """The side of a square one-channel image stored as ``(side*side,)`` or ``(1, side, side)``
    (what can be drawn as a picture and what the conv energy takes flat); None otherwise."""
    if len(shape) == 3 and shape[0] == 1 and shape[1] == shape[2]:
        return shape[1]
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return side if side * side == shape[0] else None
    return None

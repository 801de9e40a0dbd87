"""Gradient estimators: CD-k, PCD-k, F&F k-step and Jarzynski (flows and DCD follow).

Each implements :class:`~raybm.algorithms.base.Estimator`; ``registry.ESTIMATORS`` maps
``algorithm.name`` to its class.
"""

from raybm.algorithms.base import Batch, Estimate, Estimator
from raybm.algorithms.contrastive import (
    ContrastiveDivergence,
    KStep,
    PersistentContrastiveDivergence,
)

__all__ = [
    "Batch", "Estimate", "Estimator", "ContrastiveDivergence", "KStep",
    "PersistentContrastiveDivergence",
]

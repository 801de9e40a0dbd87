"""Gradient estimators: CD-k, PCD-k, F&F k-step (Jarzynski, flows and DCD follow)."""

from raybm.algorithms.base import Batch, Estimate, GradientEstimator
from raybm.algorithms.contrastive import (
    ContrastiveDivergence,
    KStep,
    PersistentContrastiveDivergence,
    build_estimator,
)

__all__ = [
    "Batch", "Estimate", "GradientEstimator", "ContrastiveDivergence", "KStep",
    "PersistentContrastiveDivergence", "build_estimator",
]

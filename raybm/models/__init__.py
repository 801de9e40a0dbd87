"""Energy models: RBMs (Bernoulli, Potts, with an optional label unit)."""

from raybm.models.base import EnergyModel
from raybm.models.rbm import RBM, BernoulliRBM, PottsRBM, build_rbm

__all__ = ["EnergyModel", "RBM", "BernoulliRBM", "PottsRBM", "build_rbm"]

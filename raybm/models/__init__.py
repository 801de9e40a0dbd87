"""Energy models: RBMs (Bernoulli, Potts, with an optional label unit)."""

from raybm.models.rbm import RBM, BernoulliRBM, PottsRBM, build_rbm

__all__ = ["RBM", "BernoulliRBM", "PottsRBM", "build_rbm"]

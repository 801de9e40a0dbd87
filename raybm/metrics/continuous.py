"""Metrics of continuous energies: the exact log-likelihood where log Z has a closed form,
the live Jarzynski log-likelihood, and the mode weights of a mixture.

``mode_weight_<k>`` is the quantity the Jarzynski research's Gaussian-mixture study follows
(Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414): CD and PCD get the minor mode's
weight wrong, Jarzynski-weighted walkers do not.
"""

from __future__ import annotations

import torch

from raybm.data.dataset import Dataset
from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianMixtureEnergy

# Mixtures with more components log only their weights' entropy, not one metric per mode.
MAX_MODE_METRICS = 16


@torch.no_grad()
def mean_log_likelihood(model: EnergyModel, data: Dataset, log_z: float) -> float:
    """``mean_b [-E(x_b)] - log Z`` over ``data`` (its weights when it has them)."""
    e = model.energy(data.x).double()
    if data.weights is None:
        return float(-e.mean() - log_z)
    w = data.weights.double()
    return float(-(w * e).sum() / w.sum() - log_z)


@torch.no_grad()
def mixture_metrics(model: EnergyModel) -> dict[str, float]:
    """``mode_weight_k`` of a Gaussian mixture (components in the order of its means)."""
    if not isinstance(model, GaussianMixtureEnergy):
        return {}
    w = model.mode_weights()
    if len(w) > MAX_MODE_METRICS:
        return {"mode_weight_entropy": float(-(w * w.clamp_min(1e-300).log()).sum())}
    return {f"mode_weight_{k}": float(v) for k, v in enumerate(w)}


def continuous_live_metrics(model: EnergyModel, test: Dataset,
                            info: dict[str, float]) -> dict[str, float]:
    """Logged every ``log_every`` updates: the closed-form log Z and exact test
    log-likelihood where the model has one, the Jarzynski one (running log Z, to be read
    against ``log_z_exact``), mode weights."""
    out = dict(info) | mixture_metrics(model)
    log_z = model.log_partition()
    if log_z is not None:
        out["log_z_exact"] = log_z
    if test.n_samples:
        if log_z is not None:
            out["test_loglik_exact"] = mean_log_likelihood(model, test, log_z)
        if "log_z" in info:
            out["test_loglik_jarzynski"] = mean_log_likelihood(model, test, info["log_z"])
    return out


def continuous_final_metrics(model: EnergyModel, train: Dataset,
                             test: Dataset) -> dict[str, float]:
    """End of run: log Z and the train / test log-likelihoods where log Z is exact, and the
    mode weights."""
    out = mixture_metrics(model)
    log_z = model.log_partition()
    if log_z is not None:
        out["log_z_exact"] = log_z
        out["train_loglik_exact"] = mean_log_likelihood(model, train, log_z)
        if test.n_samples:
            out["test_loglik_exact"] = mean_log_likelihood(model, test, log_z)
    return out


def continuous_reported(n_components: int | None, jarzynski: bool,
                        has_test: bool) -> dict[str, str]:
    """The metric names a continuous run reports (``evaluate.reported_metrics``)."""
    out: dict[str, str] = {}
    if n_components is not None:
        names = ([f"mode_weight_{k}" for k in range(n_components)]
                 if n_components <= MAX_MODE_METRICS else ["mode_weight_entropy"])
        out |= dict.fromkeys(names, "live")
        out |= {"log_z_exact": "live", "train_loglik_exact": "final"}
        if has_test:
            out["test_loglik_exact"] = "live"
    if jarzynski and has_test:
        out["test_loglik_jarzynski"] = "live"
    return out

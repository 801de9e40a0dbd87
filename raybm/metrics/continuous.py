"""Metrics of continuous energies: the exact log-likelihood where log Z has a closed form,
the live Jarzynski log-likelihood, and the mode weights of a mixture.

``mode_weight_<k>`` is the quantity the Jarzynski research's Gaussian-mixture study follows
(Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414): CD and PCD get the minor mode's
weight wrong, Jarzynski-weighted walkers do not.
"""

from __future__ import annotations

import math

import torch

from raybm.data.dataset import Dataset
from raybm.models.base import EnergyModel
from raybm.metrics.modes import Modes, mixture_mode_weights
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
def mixture_metrics(model: EnergyModel, modes: Modes | None = None) -> dict[str, float]:
    """``mode_weight_k`` of a Gaussian mixture: with the data's ``modes``, its components
    matched to them, in the data's order, and ``mode_weight_error``; else in the order of its
    own means."""
    if not isinstance(model, GaussianMixtureEnergy):
        return {}
    if modes is not None and modes.n_modes <= MAX_MODE_METRICS:
        return mixture_mode_weights(model, modes)
    w = model.mode_weights()
    if len(w) > MAX_MODE_METRICS:
        return {"mode_weight_entropy": float(-(w * w.clamp_min(1e-300).log()).sum())}
    return {f"mode_weight_{k}": float(v) for k, v in enumerate(w)}


def continuous_live_metrics(model: EnergyModel, test: Dataset,
                            info: dict[str, float]) -> dict[str, float]:
    """Logged every ``log_every`` updates: the closed-form log Z and exact test
    log-likelihood where the model has one, the Jarzynski one (running log Z, to be read
    against ``log_z_exact``), mode weights."""
    out = dict(info) | mixture_metrics(model, Modes.of(test) if test.n_samples else None)
    log_z = model.log_partition()
    if log_z is not None:
        out["log_z_exact"] = log_z
    if test.n_samples:
        if log_z is not None:
            out["test_loglik_exact"] = mean_log_likelihood(model, test, log_z)
        if "log_z" in info:
            out["test_loglik_jarzynski"] = mean_log_likelihood(model, test, info["log_z"])
    return out


# Points per side of the quadrature grid of 2-D energies: 300^2 energies, a fraction of a
# second for the MLP; the cell is < 1% of the data's range.
GRID_POINTS = 300


def grid_extent(data: Dataset, margin: float = 0.25) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)``: the box of the 2-D data widened by ``margin`` of its range on
    each side (at least 0.5)."""
    x = data.x.reshape(data.n_samples, 2).double()
    low, high = x.min(0).values, x.max(0).values
    pad = torch.clamp(margin * (high - low), min=0.5)
    low, high = low - pad, high + pad
    return float(low[0]), float(high[0]), float(low[1]), float(high[1])


@torch.no_grad()
def grid_log_density(model: EnergyModel, extent: tuple[float, float, float, float],
                     n: int = GRID_POINTS) -> tuple[torch.Tensor, float, float]:
    """The normalised log-density of a 2-D energy on an ``n x n`` grid over ``extent``
    (``(n_y, n_x)``, float64), its ``log Z`` by the midpoint rule, and the mass on the grid's
    border cells.

        log Z ~= log sum_cells exp(-E(c)) + log(cell area)

    The mass outside the box is not counted, so this ``log Z`` is a lower bound and the
    log-likelihoods from it upper bounds; the border mass says how much is likely missing
    (a density that has not decayed at the border of the box)."""
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    # Cell centres: the midpoint rule integrates over exactly the box.
    xs = x0 + dx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(n, dtype=torch.float64) + 0.5)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1).reshape(-1, 2)
    energy = torch.cat([model.energy(chunk.float()).double() for chunk in grid.split(10_000)])
    cell = dx * dy
    log_z = float(torch.logsumexp(-energy, 0)) + math.log(cell)
    log_density = (-energy - log_z).reshape(n, n)
    mass = (log_density.exp() * cell)
    border = float(mass.sum() - mass[1:-1, 1:-1].sum())
    return log_density, log_z, border


def continuous_final_metrics(model: EnergyModel, train: Dataset,
                             test: Dataset) -> dict[str, float]:
    """End of run: log Z and the train / test log-likelihoods where log Z is exact (or, for a
    2-D energy, by quadrature on a grid: ``*_grid`` with ``grid_border_mass``), and the mode
    weights."""
    out = mixture_metrics(model, Modes.of(train))
    log_z, method = model.log_partition(), "exact"
    if log_z is None and model.event_shape == (2,):
        _, log_z, border = grid_log_density(model, grid_extent(train))
        method = "grid"
        out["grid_border_mass"] = border
    if log_z is not None:
        out[f"log_z_{method}"] = log_z
        out[f"train_loglik_{method}"] = mean_log_likelihood(model, train, log_z)
        if test.n_samples:
            out[f"test_loglik_{method}"] = mean_log_likelihood(model, test, log_z)
    return out


def continuous_reported(model: EnergyModel, log_z_live: bool, has_test: bool,
                        modes: Modes | None = None, chains: bool = False,
                        flow: bool = False) -> dict[str, str]:
    """The metric names a continuous run of ``model`` (built on the meta device: shapes
    only) reports (``evaluate.reported_metrics``); ``log_z_live``: the estimator reports a
    running ``log_z`` (Jarzynski), read as a test log-likelihood; ``modes``: the data's;
    ``chains``: frozen chains are run at the end; ``flow``: the run trains a flow."""
    out: dict[str, str] = {}
    if chains:
        out |= dict.fromkeys(["rhat", "rhat_first_coordinate", "chain_rounds"], "final")
        if modes is not None:
            out |= dict.fromkeys(["rhat_mode", "chain_mode_weight_error"]
                                 + [f"chain_mode_weight_{k}" for k in range(modes.n_modes)],
                                 "final")
    if flow:
        out |= dict.fromkeys(["is_ess", "is_log_z"], "final")
        if modes is not None:
            out |= dict.fromkeys(["is_mode_weight_error"]
                                 + [f"is_mode_weight_{k}" for k in range(modes.n_modes)],
                                 "final")
    if model.event_shape == (2,) and not model.closed_form_log_z:  # quadrature at the end
        out |= dict.fromkeys(["log_z_grid", "train_loglik_grid", "grid_border_mass"], "final")
        if has_test:
            out["test_loglik_grid"] = "final"
    if isinstance(model, GaussianMixtureEnergy):
        if modes is not None and modes.n_modes <= MAX_MODE_METRICS:
            names = [f"mode_weight_{k}" for k in range(modes.n_modes)] + ["mode_weight_error"]
        else:
            n_components = model.means.shape[0]
            names = ([f"mode_weight_{k}" for k in range(n_components)]
                     if n_components <= MAX_MODE_METRICS else ["mode_weight_entropy"])
        out |= dict.fromkeys(names, "live")
    elif chains and modes is not None:  # an energy without weights of its own: the chains'
        out |= dict.fromkeys([f"mode_weight_{k}" for k in range(modes.n_modes)]
                             + ["mode_weight_error"], "final")
    if model.closed_form_log_z:
        out |= {"log_z_exact": "live", "train_loglik_exact": "final"}
        if has_test:
            out["test_loglik_exact"] = "live"
    if log_z_live and has_test:
        out["test_loglik_jarzynski"] = "live"
    return out

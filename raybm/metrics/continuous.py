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
from raybm.metrics.modes import Modes, mixture_mode_weights, weight_metrics
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
    modes = Modes.of(test) if test.n_samples else None
    out = dict(info) | mixture_metrics(model, modes)
    if grid_modes(model, modes):
        extent = grid_extent(test)
        log_density, _, _ = grid_log_density(model, extent, LIVE_GRID_POINTS)
        out |= grid_mode_weights(log_density, extent, modes)
    log_z = model.log_partition()
    if log_z is not None:
        out["log_z_exact"] = log_z
    if test.n_samples:
        if sm_live(model):
            out["sm_loss_test"] = sm_loss(model, test)
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


def grid_cells(extent: tuple[float, float, float, float],
               n: int = GRID_POINTS) -> tuple[torch.Tensor, float]:
    """The centres ``(n * n, 2)`` (float64, row-major from the lower left: ``(n_y, n_x)``
    once reshaped) of an ``n x n`` grid over ``extent = (x0, x1, y0, y1)``, and a cell's
    area."""
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) / n, (y1 - y0) / n
    # Cell centres: the midpoint rule integrates over exactly the box.
    xs = x0 + dx * (torch.arange(n, dtype=torch.float64) + 0.5)
    ys = y0 + dy * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1).reshape(-1, 2), dx * dy


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
    grid, cell = grid_cells(extent, n)
    energy = torch.cat([model.energy(chunk.float()).double() for chunk in grid.split(10_000)])
    log_z = float(torch.logsumexp(-energy, 0)) + math.log(cell)
    log_density = (-energy - log_z).reshape(n, n)
    mass = (log_density.exp() * cell)
    border = float(mass.sum() - mass[1:-1, 1:-1].sum())
    return log_density, log_z, border


def grid_modes(model: EnergyModel, modes: Modes | None) -> bool:
    """Whether ``model``'s mode weights are read by quadrature: a 2-D energy without weights
    of its own (not a mixture) on data with modes."""
    return (modes is not None and model.event_shape == (2,)
            and not isinstance(model, GaussianMixtureEnergy))


def grid_mode_weights(log_density: torch.Tensor, extent: tuple[float, float, float, float],
                      modes: Modes) -> dict[str, float]:
    """A 2-D energy's own mode weights by quadrature: the mass of the grid's cells
    (``log_density`` from :func:`grid_log_density` over ``extent``) summed over the mode
    each cell's centre belongs to (``Modes.assign``), in the data's order, with
    ``mode_weight_error``. Exact up to the grid's resolution and the mass outside it."""
    n = log_density.shape[0]
    points, _ = grid_cells(extent, n)
    return weight_metrics(modes.shares(points, log_density.reshape(-1).exp()), modes)


# Points per side of the grid the mode weights of a 2-D energy are read on at every log
# (100^2 energies: milliseconds for the MLP; the final reading uses GRID_POINTS)
LIVE_GRID_POINTS = 100


# The held-out score-matching loss: at most this many test points; the Laplacian exact up to
# SM_EXACT_DIM dimensions (one backward pass per dimension), above by Hutchinson's estimator
# with SM_PROBES Rademacher probes (unbiased; for a 784-pixel energy 2 passes, not 784).
SM_POINTS = 1000
SM_EXACT_DIM = 16
SM_PROBES = 2


def sm_loss(model: EnergyModel, data: Dataset, gen: torch.Generator | None = None,
            n: int = SM_POINTS, chunk: int = 250) -> float:
    """Hyvarinen's score-matching loss of the energy on ``data`` (its first ``n`` points):

        J(theta) = < |grad_x E(x)|^2 / 2 - Lap_x E(x) >_data

    (Hyvarinen 2005, "Estimation of non-normalized statistical models by score matching",
    eq. 4 with the score ``-grad E``): the Fisher divergence to the data up to a constant
    that does not depend on the model, so lower is better and models compare on the same
    data; ``log Z`` does not enter. The Laplacian is exact for walkers of at most
    ``SM_EXACT_DIM`` coordinates, else Hutchinson's with ``SM_PROBES`` probes from ``gen``."""
    x = data.x[:n]
    exact = math.prod(model.event_shape) <= SM_EXACT_DIM
    if gen is None:  # the probes: the same for every model read, so models compare
        from raybm.streams import generator

        gen = generator(0, "evaluate")
    total = 0.0
    for part in x.split(chunk):
        score = model.score(part)
        sq = score.reshape(part.shape[0], -1).double().square().sum(1)
        lap = (model.laplacian(part) if exact
               else model.hutchinson_laplacian(gen, part, n_probes=SM_PROBES))
        total += float((0.5 * sq - lap.double()).sum())
    return total / x.shape[0]


def denoise_rmse(model: EnergyModel, data: Dataset, sigma: float, gen: torch.Generator,
                 n: int = SM_POINTS, chunk: int = 250) -> tuple[float, float]:
    """One-step denoising by Tweedie's formula with the learned energy: for ``y = x + sigma
    eps``,

        x_hat = y + sigma^2 grad log p_sigma(y) ~= y - sigma^2 grad E(y)

    (Robbins 1956, Efron 2011, "Tweedie's formula and selection bias": the posterior mean
    ``E[x | y]`` through the score of the noisy density ``p_sigma = p * N(0, sigma^2 I)``,
    here the clean energy's, exact as sigma -> 0 or for an energy of the noisy data).
    Returns the root mean squared error per coordinate of ``x_hat`` and of ``y`` (the noisy
    input's, ``~sigma``) over the first ``n`` points of ``data``, the noise from ``gen``."""
    x = data.x[:n]
    sq_hat = sq_noisy = 0.0
    for part in x.split(chunk):
        y = part + sigma * torch.randn(part.shape, generator=gen, dtype=part.dtype)
        x_hat = y + sigma * sigma * model.score(y)
        sq_hat += float((x_hat - part).double().square().sum())
        sq_noisy += float((y - part).double().square().sum())
    count = x.numel()
    return math.sqrt(sq_hat / count), math.sqrt(sq_noisy / count)


def sm_live(model: EnergyModel) -> bool:
    """Whether the held-out score-matching loss is logged at every log step (walkers of at
    most ``SM_EXACT_DIM`` coordinates: milliseconds), not only at the end."""
    return math.prod(model.event_shape) <= SM_EXACT_DIM


def continuous_final_metrics(model: EnergyModel, train: Dataset,
                             test: Dataset) -> dict[str, float]:
    """End of run: log Z and the train / test log-likelihoods where log Z is exact (or, for a
    2-D energy, by quadrature on a grid: ``*_grid`` with ``grid_border_mass``), and the mode
    weights (of a 2-D energy without its own, by quadrature: :func:`grid_mode_weights`)."""
    modes = Modes.of(train)
    out = mixture_metrics(model, modes)
    log_z, method = model.log_partition(), "exact"
    if model.event_shape == (2,) and (log_z is None or grid_modes(model, modes)):
        extent = grid_extent(train)
        log_density, grid_log_z, border = grid_log_density(model, extent)
        if grid_modes(model, modes):
            out |= grid_mode_weights(log_density, extent, modes)
        if log_z is None:
            log_z, method = grid_log_z, "grid"
            out["grid_border_mass"] = border
    if log_z is not None:
        out[f"log_z_{method}"] = log_z
        out[f"train_loglik_{method}"] = mean_log_likelihood(model, train, log_z)
        if test.n_samples:
            out[f"test_loglik_{method}"] = mean_log_likelihood(model, test, log_z)
    if test.n_samples:
        out["sm_loss_test"] = sm_loss(model, test)
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
    elif grid_modes(model, modes):  # a 2-D energy: its own weights by quadrature
        out |= dict.fromkeys([f"mode_weight_{k}" for k in range(modes.n_modes)]
                             + ["mode_weight_error"], "live")
    elif chains and modes is not None:  # an energy without weights of its own: the chains'
        out |= dict.fromkeys([f"mode_weight_{k}" for k in range(modes.n_modes)]
                             + ["mode_weight_error"], "final")
    if model.closed_form_log_z:
        out |= {"log_z_exact": "live", "train_loglik_exact": "final"}
        if has_test:
            out["test_loglik_exact"] = "live"
    if log_z_live and has_test:
        out["test_loglik_jarzynski"] = "live"
    if has_test:
        out["sm_loss_test"] = "live" if sm_live(model) else "final"
    return out

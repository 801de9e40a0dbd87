"""Building a run's energy model from its ``model:`` config section and its data: one builder
per ``model.kind`` in :data:`BUILDERS` (a new model kind is one function and one entry here),
the meta-device shape check that runs before anything is written, and the parameter bound.

A builder takes the section, the training set, the shared ``"init"`` generator (None on the
meta device: shapes only, no draws) and whether the run's estimator starts its walkers as
exact draws of the initial model (``Estimator.starts_exact``): then the model must be built
drawable (an RBM without couplings, a neural energy whose read-out is zero).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from raybm.data.dataset import Dataset
from raybm.errors import InputError
from raybm.models.base import EnergyModel

if TYPE_CHECKING:
    from raybm.config import Config

Builder = Callable[..., EnergyModel]
BUILDERS: dict[str, Builder] = {}


def _builder(kind: str) -> Callable[[Builder], Builder]:
    def wrap(fn: Builder) -> Builder:
        BUILDERS[kind] = fn
        return fn
    return wrap


@_builder("rbm")
def _rbm(m, train: Dataset, gen: torch.Generator | None, starts_exact: bool) -> EnergyModel:
    from raybm.models.rbm import build_rbm

    n_labels = train.n_labels if (m.labels and train.labels is not None) else 0
    model = build_rbm(train.n_visible, m.n_hidden, train.n_states, n_labels)
    if gen is not None:
        # Jarzynski walkers are exact draws of the initial model: an RBM without couplings.
        model.init_parameters(gen, weight_std=0.0 if starts_exact else m.weight_std)
        model.init_visible_bias(train.x, train.weights)
    return model


@_builder("gaussian_mixture")
def _mixture(m, train: Dataset, gen: torch.Generator | None,
             starts_exact: bool) -> EnergyModel:
    from raybm.data.continuous import mixture_means
    from raybm.models.gaussian import GaussianMixtureEnergy

    d = train.event_shape[0]
    model = GaussianMixtureEnergy(torch.zeros(m.n_components, d), std=m.std,
                                  learn_std=m.learn_std)
    if gen is None:
        return model
    # Means at the given centers, at k-means centres of the data, or at distinct training
    # samples (plus noise); equal weights: the student starts unbiased between modes.
    if m.init_means == "kmeans":
        means = kmeans(gen, train.x.reshape(train.n_samples, -1).float(), m.n_components)
    elif m.init_means is not None:
        means = mixture_means(m.init_means, d, "model", "init_means")
    else:
        rows = torch.randperm(train.n_samples, generator=gen)[: m.n_components]
        means = train.x[rows].reshape(m.n_components, -1).clone()
    if m.init_noise > 0:
        means += m.init_noise * torch.randn(means.shape, generator=gen)
    with torch.no_grad():
        model.means.copy_(means)
    return model


# Lloyd iterations of the k-means start of a mixture's means; rows it clusters at most (a
# random subset beyond: the centres of well-separated modes are found from a few thousand);
# restarts, the one of least within-cluster sum of squares kept.
KMEANS_ITERATIONS = 50
KMEANS_ROWS = 20_000
KMEANS_RESTARTS = 10


def kmeans(gen: torch.Generator, x: torch.Tensor, k: int) -> torch.Tensor:
    """``(k, d)`` k-means centres of the rows of ``x``: k-means++ seeding (Arthur &
    Vassilvitskii 2007: each next seed drawn with probability proportional to the squared
    distance to the nearest seed so far) then Lloyd iterations, the best of
    :data:`KMEANS_RESTARTS` (least within-cluster sum of squares), all draws from ``gen``: the
    start of a Gaussian mixture's means that EM implementations use by default.

    Restarts are needed in high dimension: points of one wide mode lie as far apart as the
    centres of different modes (``2 sigma^2 d`` against the squared distance of the means),
    so a single seeding puts two seeds in one mode and merges two others: in 12 of 40 seeds
    on the 4-Gaussian mixture of ``configs/flowmc_gmm4_d64.yaml``, and in 0 of 40 with the
    best of ten (the merged solution's sum of squares is far larger)."""
    if x.shape[0] > KMEANS_ROWS:
        x = x[torch.randperm(x.shape[0], generator=gen)[:KMEANS_ROWS]]
    if x.shape[0] < k:
        raise InputError("model.n_components", "", f"{k} components for {x.shape[0]} samples")
    best, best_sse = None, math.inf
    for _ in range(KMEANS_RESTARTS):
        centres = _lloyd(x, _seeds(gen, x, k))
        sse = float(torch.cdist(x, centres).min(1).values.square().sum())
        if sse < best_sse:
            best, best_sse = centres, sse
    return best


def _seeds(gen: torch.Generator, x: torch.Tensor, k: int) -> torch.Tensor:
    """k-means++ seeding."""
    centres = x[torch.randint(x.shape[0], (1,), generator=gen)]
    nearest = torch.cdist(x, centres).square().min(1).values
    for _ in range(1, k):
        row = torch.multinomial(nearest.double() + 1e-300, 1, generator=gen)
        centres = torch.cat([centres, x[row]])
        nearest = torch.minimum(nearest, (x - x[row]).square().sum(1))
    return centres


def _lloyd(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Lloyd iterations from ``centres`` until they stop moving."""
    k = centres.shape[0]
    for _ in range(KMEANS_ITERATIONS):
        assign = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


@_builder("mlp")
def _mlp(m, train: Dataset, gen: torch.Generator | None, starts_exact: bool) -> EnergyModel:
    from raybm.models.neural import MLPEnergy

    # Jarzynski walkers start as exact draws: the read-out at zero leaves N(0, I/base_scale).
    return MLPEnergy(train.event_shape[0], tuple(m.widths), m.activation, m.base_scale,
                     zero_last=starts_exact, gen=gen, temperature=m.temperature)


@_builder("conv")
def _conv(m, train: Dataset, gen: torch.Generator | None, starts_exact: bool) -> EnergyModel:
    from raybm.models.neural import ConvEnergy

    channels, size, _ = train.event_shape
    return ConvEnergy(channels, size, m.activation, m.base_scale, zero_last=starts_exact,
                      gen=gen, temperature=m.temperature)


def _starts_exact(config: Config) -> bool:
    from raybm.algorithms.registry import estimator_class

    return estimator_class(config.algorithm.name).starts_exact


def build(config: Config, train: Dataset, gen: torch.Generator) -> EnergyModel:
    """The initial model of ``config.model`` on ``train`` (the same on every rank: ``gen`` is
    the shared ``"init"`` stream)."""
    return BUILDERS[config.model.kind](config.model, train, gen, _starts_exact(config))


def shaped(config: Config, train: Dataset) -> EnergyModel:
    """The model's shapes and names on the meta device: no memory, no random draws."""
    with torch.device("meta"):
        return BUILDERS[config.model.kind](config.model, train, None, _starts_exact(config))


# Parameters beyond this are refused before a run starts (~8 GiB of float32 with Adam's two
# moments), instead of an allocator error after the run directory exists.
MAX_PARAMETERS = 2**29


def check_fits(config: Config, train: Dataset) -> None:
    """The model the config builds on this data can be built (checked before a run starts):
    discrete data for an RBM, continuous for the others, initial means that fit, at most
    :data:`MAX_PARAMETERS` parameters, ``optimizer.param_lr`` naming real parameters."""
    from raybm.optim import check_param_lr

    where = train.source or "data.path"
    m = config.model
    if m.kind == "rbm":
        if train.continuous:
            raise InputError(where, "model.kind", "rbm needs binary or categorical data; this "
                             "data is continuous (model.kind: gaussian_mixture, mlp or conv)")
        if m.labels and train.labels is not None and train.n_labels < 2:
            raise InputError(where, "labels", f"only {train.n_labels} class: a label unit "
                             "needs at least 2 (set model.labels=false)")
    elif not train.continuous:
        raise InputError(where, "model.kind", f"{m.kind} needs continuous data; this "
                         "data is discrete (model.kind: rbm)")
    elif m.kind == "gaussian_mixture":
        if isinstance(m.init_means, list):
            from raybm.data.continuous import mixture_means

            mixture_means(m.init_means, train.event_shape[0], "model", "init_means")
        elif m.n_components > train.n_samples:
            raise InputError("model.n_components", "", f"{m.n_components} components for "
                             f"{train.n_samples} training samples (means start at samples)")
    from raybm.algorithms.registry import estimator_class

    modules = estimator_class(config.algorithm.name).modules
    missing = [m for m in type(config.sampler).needs_modules if m not in modules]
    if missing:
        raise InputError("sampler.name", "", f"{config.sampler.name} proposes from the run's "
                         f"trained {missing[0]}, which algorithm.name {config.algorithm.name} "
                         "does not train (algorithm.name: flowmc_ebm does)")
    unknown = sorted(set(config.optimizers) - set(modules))
    if unknown:
        raise InputError(f"optimizers.{unknown[0]}", "", "not a trained module of this run "
                         f"(its modules: {', '.join(('energy', *modules))})")
    model = shaped(config, train)
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise InputError("model", "", f"{n:,} parameters on data of shape "
                         f"{train.event_shape} is more than {MAX_PARAMETERS:,}")
    if config.optimizer.param_lr:
        check_param_lr(config.optimizer, [name for name, _ in model.named_parameters()])


def energy_work(config: Config, train: Dataset) -> float:
    """Multiply-adds of one energy evaluation over a whole population (or minibatch, when
    larger): the size of the largest single operations an update runs (Gibbs sweeps, Langevin
    steps and the gradient all work on that many rows at once). Counted by torch's FLOP
    counter on the model built on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    model = shaped(config, train)
    with torch.device("meta"):
        x = torch.zeros((1, *train.event_shape), dtype=train.x.dtype)
        label = torch.zeros(1, dtype=torch.long) if model.n_labels else None
        with FlopCounterMode(display=False) as counter:
            model.energy(x, label)
    rows = max(config.train.batch_size, config.algorithm.n_walkers or 0)
    return counter.get_total_flops() / 2 * rows


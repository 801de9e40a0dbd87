"""End-of-run evaluation: accuracy, generation scores over t_G, exact likelihood when small."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from raybm.config import Config
from raybm.data.dataset import Dataset, grey_image_side
from raybm.metrics.exact import MAX_ENUMERATED
from raybm.models.base import EnergyModel
from raybm.models.rbm import RBM, BernoulliRBM
from raybm.samplers.gibbs import generate
from raybm.samplers.registry import build_kernel
from raybm.streams import generator


def generation_labels(gen: torch.Generator, model: RBM, reference: Dataset, n: int):
    """Labels to clamp while generating: drawn from the reference set's label frequencies."""
    if not model.n_labels or reference.labels is None:
        return None
    freq = torch.bincount(reference.labels, minlength=model.n_labels).double()
    return torch.multinomial(freq / freq.sum(), n, replacement=True, generator=gen)


def can_enumerate(model: RBM) -> bool:
    small_visible = isinstance(model, BernoulliRBM) and model.n_visible <= MAX_ENUMERATED
    return small_visible or model.n_hidden <= MAX_ENUMERATED


@torch.no_grad()
def evaluate(model: RBM, train: Dataset, test: Dataset, config: Config,
             seed: int | None = None) -> dict[str, float]:
    """Every end-of-run metric as a flat ``{name: value}`` (names as logged to MLflow)."""
    from raybm.metrics.classify import accuracy_exact, accuracy_sampled
    from raybm.metrics.generation import score_curve

    if not isinstance(model, RBM):
        from raybm.metrics.continuous import continuous_final_metrics

        return continuous_final_metrics(model, train, test)
    cfg = config.train
    gen = generator(cfg.seed if seed is None else seed, "evaluate")
    out: dict[str, float] = {}
    if model.n_labels and test.n_samples:
        # Names do not carry k: a sweep over k compares one quantity across its trials; the
        # number of label sweeps each used is logged beside it.
        k = config.algorithm.k
        out["test_accuracy"] = accuracy_exact(model, test.x, test.labels)
        out["test_accuracy_sampled"] = accuracy_sampled(gen, model, test.x, test.labels, k)
        out["eval_k"] = float(k)
        out["test_accuracy_long"] = accuracy_sampled(gen, model, test.x, test.labels,
                                                     cfg.eval_k_long)
        out["eval_k_long"] = float(cfg.eval_k_long)
    n = min(cfg.eval_samples, train.n_samples)
    ref = train.subset(torch.randperm(train.n_samples, generator=gen)[:n])
    label = generation_labels(gen, model, ref, n)
    curves = score_curve(gen, model, ref.x, sorted(cfg.eval_t), n, label=label)
    for name, values in curves.items():
        for t, value in zip(sorted(cfg.eval_t), values):
            out[f"{name}_t{t}"] = float(value)
    from raybm.metrics.exact import log_likelihood, log_partition

    log_z, method = None, ""
    if can_enumerate(model):
        log_z, method = log_partition(model), "exact"
    elif cfg.ais_betas:
        from raybm.metrics.ais import ais_log_partition

        ais = ais_log_partition(gen, model, n_chains=cfg.ais_chains, n_betas=cfg.ais_betas)
        log_z, method = ais.log_z, "ais"
        out["log_z_ais_stderr"] = ais.stderr
    if log_z is not None:
        out[f"log_z_{method}"] = log_z
        out[f"train_loglik_{method}"] = float(log_likelihood(model, train.x, log_z=log_z).mean())
        if test.n_samples:
            out[f"test_loglik_{method}"] = float(
                log_likelihood(model, test.x, log_z=log_z).mean())
    return out


@torch.no_grad()
def write_artifacts(model: RBM, train: Dataset, test: Dataset, config: Config,
                    metrics: dict[str, float], directory: Path, checkpoint=None) -> Path:
    """Sample grids, the PCA plot of data vs samples and the score-vs-t_G plot, as PNGs.
    ``checkpoint``: the run's final checkpoint (its walkers and kernel state), from which a
    continuous model's pictures draw their samples."""
    from raybm.metrics.plots import pca_plot, sample_grid, score_curve_plot

    directory.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, RBM):
        continuous_artifacts(model, train, config, directory, checkpoint)
        return directory
    cfg = config.train
    gen = generator(cfg.seed, "artifacts")
    k = config.algorithm.k
    n = min(cfg.eval_samples, 1000)
    label = generation_labels(gen, model, train, n)
    if label is not None:  # one row of samples per class in the grid
        label = torch.arange(model.n_labels).repeat_interleave(10)
    samples = generate(gen, model, len(label) if label is not None else 100, k, label=label)
    side = grey_image_side((model.n_visible,))
    if side is not None and model.n_states == 2:
        sample_grid(samples, (side, side), directory / f"samples_t{k}.png", ncol=10)
        sample_grid(train.x[:100], (side, side), directory / "data.png", ncol=10)
    pca_samples = generate(gen, model, n, k, label=generation_labels(gen, model, train, n))
    pca_plot(train.x[:n], pca_samples, directory / f"pca_t{k}.png")
    t_list = sorted(cfg.eval_t)
    curves = {}
    for key, value in metrics.items():
        name, sep, t = key.rpartition("_t")
        if sep and t.isdigit() and int(t) in t_list:
            curves.setdefault(name, [math.nan] * len(t_list))[t_list.index(int(t))] = value
    if curves:
        score_curve_plot(curves, t_list, directory / "scores_vs_tG.png")
    return directory


def has_pictures(model: EnergyModel) -> bool:
    """A continuous model :func:`continuous_artifacts` draws: a 2-D energy or grey images."""
    shape = tuple(model.event_shape)
    return shape == (2,) or grey_image_side(shape) is not None


@torch.no_grad()
def continuous_artifacts(model: EnergyModel, train: Dataset, config: Config,
                         directory: Path, checkpoint=None) -> list[Path]:
    """For a 2-D energy its density and log-density on a grid with the data and model samples
    overlaid (``density.png``), and a trained flow's beside it with draws of the flow
    (``flow_density.png``); for images a grid of samples and one of data
    (``samples.png``, ``data.png``), and, when the samples are the run's persistent walkers
    (a buffer), one of fresh chains from the kernel's start (``chains.png``). Samples as
    ``raybm sample`` draws them by default (``raybm.sampling``: exact draws, the run's
    weighted walkers, or long chains). Returns the files written."""
    from raybm.metrics.continuous import GRID_POINTS, grid_cells, grid_extent, grid_log_density
    from raybm.metrics.plots import density_plot, sample_grid
    from raybm.sampling import default_chain_length, draw, run_flow, run_kernel, run_modules

    shape = model.event_shape
    side = grey_image_side(shape)
    if not has_pictures(model):
        return []
    modules = run_modules(config, checkpoint) if checkpoint is not None else None
    kernel = (run_kernel(config, checkpoint, modules) if checkpoint is not None
              else build_kernel(config.sampler))
    samples = draw(generator(config.train.seed, "artifacts"), model, kernel,
                   2000 if shape == (2,) else 100,
                   walkers=None if checkpoint is None else checkpoint.walkers,
                   default_k=default_chain_length(config))
    if shape == (2,):
        extent = grid_extent(train)
        log_density, _, _ = grid_log_density(model, extent)
        density_plot(log_density.numpy(), extent, train.x.numpy(), directory / "density.png",
                     samples.x.numpy())
        flow = None if modules is None else run_flow(config, modules)
        if flow is None:
            return [directory / "density.png"]
        # A run that trains a flow (FlowMC-EBM): the flow's own density beside the energy's,
        # with draws of the flow alone: where the two differ, IMH proposals are rejected.
        points, _ = grid_cells(extent, GRID_POINTS)
        flow_log_density = torch.cat([flow.log_prob(chunk.float()).double()
                                      for chunk in points.split(10_000)])
        drawn, _ = flow.sample(generator(config.train.seed, "artifacts", 1), 2000)
        density_plot(flow_log_density.reshape(GRID_POINTS, GRID_POINTS).numpy(), extent,
                     train.x.numpy(), directory / "flow_density.png", drawn.numpy(),
                     name="flow")
        return [directory / "density.png", directory / "flow_density.png"]
    value_range = (float(train.x.min()), float(train.x.max()))
    written = [directory / "samples.png", directory / "data.png"]
    sample_grid(samples.x.reshape(100, -1), (side, side), written[0], value_range=value_range)
    if samples.source == "walkers":
        # Beside the run's walkers (a buffer holds the class proportions it learned), fresh
        # chains from the kernel's start with the final model: the two differ where the
        # chains do not mix (raybm sample --from chains draws the same way).
        chains = draw(generator(config.train.seed, "chains"), model, kernel, 100,
                      source="chains", k=default_chain_length(config))
        written.append(directory / "chains.png")
        sample_grid(chains.x.reshape(100, -1), (side, side), written[-1],
                    value_range=value_range)
    sample_grid(train.x[:100].reshape(min(100, train.n_samples), -1), (side, side),
                written[1], value_range=value_range)
    return written


# Models whose exact log Z costs at most this many enumerated states are scored exactly at
# every log (2^16 states of a 64-visible model: a few milliseconds here).
LIVE_EXACT_STATES = 1 << 16


def enumerated_states(model: RBM) -> int:
    """How many states exact enumeration of ``model`` visits (the smaller binary layer)."""
    sides = [model.n_hidden]
    if isinstance(model, BernoulliRBM):
        sides.append(model.n_visible)
    return 2 ** min(sides) * max(model.n_labels, 1)


def live_metrics(model: RBM, test: Dataset, info: dict[str, float]) -> dict[str, float]:
    """The cheap metrics logged with every ``log_every`` update: exact test accuracy (label
    unit), the exact test log-likelihood of models small enough to enumerate quickly, and the
    test log-likelihood from the Jarzynski running log Z (free)."""
    if not isinstance(model, RBM):
        from raybm.metrics.continuous import continuous_live_metrics

        return continuous_live_metrics(model, test, info)
    out = dict(info)
    if model.n_labels and test.n_samples:
        from raybm.metrics.classify import accuracy_exact

        out["test_accuracy"] = accuracy_exact(model, test.x, test.labels)
    if test.n_samples and (can_enumerate(model)
                           and enumerated_states(model) <= LIVE_EXACT_STATES):
        from raybm.metrics.exact import log_likelihood

        out["test_loglik_exact"] = float(log_likelihood(model, test.x).mean())
    if "log_z" in info and test.n_samples:
        from raybm.metrics.exact import log_likelihood

        out["test_loglik_jarzynski"] = float(
            log_likelihood(model, test.x, log_z=info["log_z"]).mean())
    return out


# Draws of the flow for the importance-sampling read of a FlowMC-EBM run's energy
IS_DRAWS = 10_000


def frozen_chain_rounds(config: Config) -> int:
    """Rounds of frozen chains a continuous run's evaluation runs (``train.eval_chain_rounds``,
    never more than the run's updates: the evaluation's sampling costs at most what the
    training's did), 0 where there are none: an estimator without persistent walkers, a
    kernel that targets no known distribution (short-run), fewer than R-hat's 4 draws."""
    from raybm.algorithms.registry import estimator_class

    rounds = min(config.train.eval_chain_rounds, config.train.n_updates)
    if (rounds < 4 or not estimator_class(config.algorithm.name).persistent
            or not type(config.sampler).exact_weights):
        return 0
    return rounds


@torch.no_grad()
def chain_metrics(config: Config, ckpt, train: Dataset, evaluated: dict[str, float]
                  ) -> dict[str, float]:
    """The end-of-run reading of a continuous run's sampling (``metrics.modes``): frozen
    chains from its final walkers (R-hat, the chains' mode weights, the kernel's diagnostics)
    and, for a run that trains a flow, importance sampling through it. An energy without
    mode weights of its own (an MLP) takes the frozen chains' as its ``mode_weight_<k>``."""
    from raybm.metrics.modes import Modes, frozen_chain_metrics, importance_metrics
    from raybm.sampling import run_flow, run_kernel, run_modules

    rounds = frozen_chain_rounds(config)
    if isinstance(ckpt.model, RBM) or ckpt.walkers is None or rounds == 0:
        return {}
    modes = Modes.of(train)
    modules = run_modules(config, ckpt)
    kernel = run_kernel(config, ckpt, modules)
    gen = generator(config.train.seed, "chains")
    out = frozen_chain_metrics(gen, ckpt.model, kernel, ckpt.walkers, rounds,
                               config.algorithm.k, modes)
    flow = run_flow(config, modules)
    if flow is not None:
        out |= importance_metrics(gen, ckpt.model, flow, IS_DRAWS, modes)
    if modes is not None and "mode_weight_0" not in evaluated:
        out |= {k.removeprefix("chain_"): v for k, v in out.items()
                if k.startswith("chain_mode_weight")}
    return out


def reported_metrics(config: Config, train: Dataset, has_test: bool = True) -> dict[str, str]:
    """The metrics a run of ``config`` reports on ``train``: ``{name: "live"}`` for those
    logged every ``train.log_every`` updates (what ASHA and PBT compare), ``"final"`` for
    those of the end-of-run evaluation only. (A search-space file's ``metric`` is checked
    against this before a sweep starts.) Read from declarations: the estimator's losses and
    diagnostics (``Estimator.reported``), the kernel's (``info_names``), the trained modules'
    learning rates, and what the model's family of metrics gives for its shapes."""
    from raybm.algorithms.base import ENERGY
    from raybm.algorithms.registry import build_estimator
    from raybm.models.build import shaped
    from raybm.samplers.registry import build_kernel

    model = shaped(config, train)
    estimator = build_estimator(config.algorithm, build_kernel(config.sampler),
                                config.train.seed)
    out = {"step": "live", "updates_per_s": "live"}
    out |= dict.fromkeys(estimator.reported(model), "live")
    out |= dict.fromkeys(estimator.kernel.info_names, "live")
    out |= {f"lr/{name}": "live" for name in (ENERGY, *estimator.modules)}
    log_z_live = "log_z" in out  # a running log Z: read as a test log-likelihood
    if not isinstance(model, RBM):
        from raybm.metrics.continuous import continuous_reported
        from raybm.metrics.modes import Modes

        return out | continuous_reported(model, log_z_live, has_test, Modes.of(train),
                                         frozen_chain_rounds(config) > 0,
                                         estimator.proposal is not None)
    if has_test:
        if model.n_labels:
            out |= {"test_accuracy": "live", "test_accuracy_sampled": "final",
                    "test_accuracy_long": "final", "eval_k": "final", "eval_k_long": "final"}
        if log_z_live:
            out["test_loglik_jarzynski"] = "live"
    from raybm.metrics.generation import SCORE_NAMES

    for name in SCORE_NAMES:
        out |= {f"{name}_t{t}": "final" for t in config.train.eval_t}
    method = None
    if can_enumerate(model):
        method = "exact"
        if has_test and enumerated_states(model) <= LIVE_EXACT_STATES:
            out["test_loglik_exact"] = "live"
    elif config.train.ais_betas:
        method = "ais"
        out["log_z_ais_stderr"] = "final"
    if method is not None:
        out.setdefault(f"log_z_{method}", "final")
        out.setdefault(f"train_loglik_{method}", "final")
        if has_test:
            out.setdefault(f"test_loglik_{method}", "final")
    return out

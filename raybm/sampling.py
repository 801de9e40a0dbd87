"""Samples of a trained run: what ``raybm sample``, ``raybm.sample`` and the end-of-run
pictures draw, and a line saying how far to trust them.

Three sources, tried in this order by ``auto``:

- ``exact``: independent draws of the model, where the model declares an exact sampler
  (``samplers.exact``: a Gaussian mixture, an RBM without couplings, a neural energy at its
  exact start), restricted to the kernel's box when it has one;
- ``walkers``: the run's persistent walkers of its last checkpoint. Jarzynski walkers are
  resampled by their weights, ``P(ancestor = i) = softmax(log_weight)_i`` (Carbone et al. 2023,
  arXiv 2305.19414: the weighted walkers represent the current model however far the chains
  lag); PCD walkers are unweighted and represent the model as far as their chains have mixed;
- ``chains``: ``k`` steps of the run's own kernel from the kernel's start distribution, one
  chain per sample, unweighted: the model's distribution only where ``k`` steps mix (the F&F
  generation protocol when the run was trained to generate in k steps);
- ``flow`` (asked for, never chosen by ``auto``): draws of a run's trained flow alone
  (FlowMC-EBM's), fast and approximate: the flow's distribution, fitted to the energy's
  walkers, not the energy's; the description gives the effective sample size of these draws
  as importance samples of the energy, which says how far the two are apart.

A ``--k`` or a clamped label asks for chains. Nothing is silent: every draw comes with its
description (``Samples.how``).
"""

from __future__ import annotations

from dataclasses import dataclass

import math

import torch

from raybm.algorithms.resample import ess_fraction, resample
from raybm.errors import InputError
from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.samplers.exact import exact_start
from raybm.walkers import WalkerState

SOURCES = ("auto", "exact", "walkers", "chains", "flow")


@dataclass
class Samples:
    """``n`` samples, their labels (models with a label unit), and one line saying where they
    come from."""

    x: torch.Tensor
    label: torch.Tensor | None
    how: str
    source: str


def draw(gen: torch.Generator, model: EnergyModel, kernel: Kernel, n: int, *,
         source: str = "auto", walkers: WalkerState | None = None, k: int | None = None,
         default_k: int = 1000, label: int | None = None, step: int | None = None,
         flow=None) -> Samples:
    """``n`` samples of ``model`` from ``source`` (module docstring). ``walkers``: the run's
    persistent walkers (None when it keeps none); ``k``: chain length asked for (chains
    only), else ``default_k``; ``label``: a label to clamp (chains only); ``step``: the
    update the walkers belong to (said in the description)."""
    if source not in SOURCES:
        raise InputError("--from", source, f"must be one of {', '.join(SOURCES)}")
    chains = k is not None or label is not None
    if source == "auto" and not chains:
        try:  # a model without an exact sampler is refused before any draw is made
            return _exact(gen, model, kernel, n)
        except InputError:
            pass
        source = "walkers" if walkers is not None else "chains"
    elif source == "auto":
        source = "chains"
    if source != "chains":
        if k is not None:
            raise InputError("--k", "", f"sets the length of chains, not of --from {source}")
        if label is not None:
            raise InputError("--label", "", f"clamps the label of chains, not of --from {source}")
    if source == "exact":
        return _exact(gen, model, kernel, n)
    if source == "flow":
        return _flow(gen, model, flow, n)
    if source == "walkers":
        return _walkers(gen, walkers, n, step)
    return _chains(gen, model, kernel, n, default_k if k is None else k, label)


def _exact(gen: torch.Generator, model: EnergyModel, kernel: Kernel, n: int) -> Samples:
    try:
        state, _ = exact_start(gen, model, n, kernel.box)
    except ValueError as err:
        raise InputError("--from", "exact", f"{err}; use --from walkers or chains") from None
    inside = "" if kernel.box is None else f" restricted to the box {list(kernel.box)}"
    return Samples(state.x, state.label, f"exact draws of the model{inside}", "exact")


def _walkers(gen: torch.Generator, walkers: WalkerState | None, n: int,
             step: int | None) -> Samples:
    if walkers is None:
        raise InputError("--from", "walkers", "this run keeps no persistent walkers (its "
                         "chains restart every update): use --from chains")
    total = walkers.n_walkers
    at = "" if step is None else f" at update {step}"
    log_weight = walkers.log_weight.double()
    if bool((log_weight == log_weight[0]).all()):
        # Equal weights (PCD's, or Jarzynski's right after a resampling): distinct walkers
        # while there are enough, else with replacement.
        rows = (torch.randperm(total, generator=gen)[:n] if n <= total
                else torch.randint(total, (n,), generator=gen))
        how = (f"{'distinct' if n <= total else 'with replacement from'} persistent walkers "
               f"of the run's {total}{at} (equal weights: the model as far as the walkers "
               "represent it)")
    else:
        # Independent draws from the weighted walkers: systematic resampling (training's
        # default) has less variance per draw, but its draws are not independent (with
        # periodic weights every period gets the same count), which samples handed to a
        # user must be.
        rows = resample(gen, log_weight, n, "multinomial")
        how = (f"the run's {total} walkers{at} resampled by their weights (ESS "
               f"{ess_fraction(log_weight):.3f} of {total})")
    chosen = walkers.take(rows)
    return Samples(chosen.x, chosen.label, how, "walkers")


@torch.no_grad()
def _flow(gen: torch.Generator, model: EnergyModel, flow, n: int) -> Samples:
    if flow is None:
        raise InputError("--from", "flow", "this run trains no flow (algorithm.name: "
                         "flowmc_ebm does): use --from walkers or chains")
    x, log_q = flow.sample(gen, n)
    x = x.reshape(n, *model.event_shape)
    ess = ess_fraction((-model.energy(x).double() - log_q.double()).nan_to_num(nan=-math.inf))
    how = (f"draws of the run's flow alone, unweighted (fast and approximate: the flow, not "
           f"the energy; as importance samples of the energy their ESS is {ess:.3f} of {n}; "
           "--from chains for draws exact for the energy)")
    return Samples(x, None, how, "flow")


@torch.no_grad()
def _chains(gen: torch.Generator, model: EnergyModel, kernel: Kernel, n: int, k: int,
            label: int | None) -> Samples:
    """One chain per sample, ``k`` kernel steps from the kernel's start; a model with a label
    unit generates each sample of a class (``label``, or one drawn uniformly per sample),
    clamped as in the F&F generation protocol."""
    labels = None
    if model.n_labels:
        labels = (torch.full((n,), label, dtype=torch.long) if label is not None
                  else torch.randint(0, model.n_labels, (n,), generator=gen))
    state = kernel.init(gen, model, n, label=labels)
    state, _ = kernel.step(gen, state, model, k, clamp_label=labels is not None)
    bias = "" if kernel.invariant else (
        f"; {kernel.name} is biased by its step size" if kernel.exact_weights
        else f"; {kernel.name} samples no known distribution")
    how = (f"{k} {kernel.name} steps from {kernel.start} per sample, unweighted (the model "
           f"only where {k} steps mix{bias})")
    if labels is not None:
        how += f", label {label} clamped" if label is not None else ", labels clamped"
    return Samples(state.x, labels, how, "chains")


def run_modules(config, checkpoint) -> dict:
    """The run's trained modules as its checkpoint holds them: the energy, and those its
    estimator declares (rebuilt as the trainer builds them, then loaded)."""
    from raybm.algorithms.registry import build_estimator, estimator_class
    from raybm.samplers.registry import build_kernel

    modules = {"energy": checkpoint.model}
    if not estimator_class(config.algorithm.name).modules:
        return modules
    from raybm.data.load import load_data
    from raybm.streams import generator

    estimator = build_estimator(config.algorithm, build_kernel(config.sampler),
                                config.train.seed)
    train, _ = load_data(config)
    extra = estimator.build_modules(generator(config.train.seed, "modules"), checkpoint.model,
                                    train)
    for name, module in extra.items():
        module.load_state_dict(checkpoint.state["modules"][name])
    return modules | extra


def run_flow(config, modules: dict):
    """The run's trained flow: the module its estimator declares as its proposal
    (``Estimator.proposal``), among ``modules`` (:func:`run_modules`), or None."""
    from raybm.algorithms.registry import estimator_class

    name = estimator_class(config.algorithm.name).proposal
    return None if name is None else modules[name]


def run_kernel(config, checkpoint, modules: dict | None = None) -> Kernel:
    """The kernel a run trained with, built with its model and trained modules (``modules``:
    :func:`run_modules`, when already built), in the state its checkpoint left it (an
    adapted MALA step size goes on)."""
    from raybm.checkpoint import kernel_state
    from raybm.samplers.registry import build_kernel

    if modules is None:
        modules = run_modules(config, checkpoint)
    kernel = build_kernel(config.sampler, checkpoint.model, modules)
    state = kernel_state(checkpoint.state)
    return kernel.with_state(state)


def default_chain_length(config) -> int:
    """Steps per chain when none is asked for: the run's k for a model trained to generate in
    k steps (F&F) or moved by a kernel that targets no known distribution (short-run
    Langevin: its k-step runs are what training shaped, and longer ones converge to nothing
    the model defines), else ``train.eval_k_long`` (long chains: a model trained with
    persistent or data-started chains was never asked to generate in k steps from noise)."""
    from raybm.algorithms.registry import estimator_class

    if (estimator_class(config.algorithm.name).generates_in_k
            or not type(config.sampler).exact_weights):
        return config.algorithm.k
    return config.train.eval_k_long


def draw_run(config, checkpoint, n: int, *, source: str = "auto", k: int | None = None,
             label: int | None = None, seed: int = 0) -> Samples:
    """``n`` samples of a run (its config and a checkpoint), drawn as :func:`draw` says,
    with the run's own kernel, modules and walkers."""
    from raybm.streams import generator

    modules = run_modules(config, checkpoint)
    return draw(generator(seed, "sample"), checkpoint.model,
                run_kernel(config, checkpoint, modules), n, source=source,
                walkers=checkpoint.walkers, k=k, default_k=default_chain_length(config),
                label=label, step=checkpoint.step, flow=run_flow(config, modules))


def sample_run(run, n: int, *, source: str = "auto", k: int | None = None,
               label: int | None = None, seed: int = 0) -> Samples:
    """:func:`draw_run` of the run directory (or checkpoint) ``run``."""
    from raybm.run import load_run

    config, ckpt = load_run(run)
    return draw_run(config, ckpt, n, source=source, k=k, label=label, seed=seed)

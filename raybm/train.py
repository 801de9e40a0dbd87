"""The training loop: data -> model -> estimator -> updates -> checkpoints.

One :class:`Trainer` is one shard of the run: in-process it holds the whole walker population
(``population=LOCAL``); on a Ray Train worker it holds shard ``rank`` of ``world_size`` and the
same code runs with a ``TorchComm`` population (``raybm.distributed``). Every rank computes the
same global minibatch from ``(seed, epoch)`` and takes its slice of the rows, so a run sees the
same sequence of minibatches whatever the number of workers; the shard losses are normalised
globally and their gradients summed, so every rank applies the same update.

The loop is deterministic given the config: minibatch order comes from ``(seed, epoch)``, every
random draw from one generator per rank seeded from ``(seed, rank)`` whose state is
checkpointed, so ``--resume`` continues exactly as an uninterrupted run would. Every generator
is a named stream of ``raybm.streams``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from raybm.algorithms.base import Batch
from raybm.algorithms.population import LOCAL, Population
from raybm.algorithms.centering import Centering
from raybm.algorithms.registry import build_estimator, estimator_class
from raybm.checkpoint import (atomic_write_text, load_checkpoint, save_checkpoint, set_latest,
                              state_digest)
from raybm.config import (BUILT_IN_FORMATS, Config, MALASamplerConfig, PCDConfig,
                          RBMModelConfig)
from raybm.data.dataset import Dataset
from raybm.errors import DivergenceError, InputError
from raybm.models.base import EnergyModel
from raybm.models.rbm import build_rbm
from raybm.samplers.registry import build_kernel
from raybm.streams import generator
from raybm.walkers import WalkerState, shard_sizes, shard_slice


def load_data(config: Config) -> tuple[Dataset, Dataset]:
    """The train and test sets the config names (digits when ``data.path`` is unset), in the
    shape the model takes (vectors for dense energies, images for conv)."""
    from raybm.data.split import train_test_split

    dataset = _load_dataset(config)
    d = config.data
    if d.max_samples is not None and dataset.n_samples > d.max_samples:
        g = generator(d.split_seed, "subsample")
        dataset = dataset.subset(torch.randperm(dataset.n_samples, generator=g)[: d.max_samples])
    dataset = _model_shaped(config, dataset)
    if d.test_fraction == 0:
        return dataset, dataset.subset(torch.arange(0))
    return train_test_split(dataset, d.test_fraction, d.split_seed)


def _load_dataset(config: Config) -> Dataset:
    d = config.data
    if d.path is not None and d.format in BUILT_IN_FORMATS:
        raise InputError("data.path", "", f"format {d.format} is built in and takes no path")
    if d.path is None and d.format in ("floats", "mnist"):
        raise InputError("data.path", "", f"format {d.format} reads a file: set data.path")
    for key, value in (("labels_path", d.labels_path), ("panel_path", d.panel_path)):
        if value is not None and d.path is None:
            raise InputError(f"data.{key}", "", "goes with a data.path (the built-in data "
                             "sets have their own labels)")
    if d.format == "bimodal":
        from raybm.data.synthetic import bimodal_prototypes, prototype_mixture

        s = d.synthetic
        return prototype_mixture(generator(s.seed, "synthetic"), s.n_samples,
                                 bimodal_prototypes(s.n_visible),
                                 torch.tensor(s.weights, dtype=torch.float64), s.flip_prob)
    if d.format == "gaussian_mixture":
        from raybm.data.continuous import gaussian_mixture, mixture_means

        m = d.mixture
        return gaussian_mixture(generator(m.seed, "synthetic"), m.n_samples,
                                mixture_means(m.centers, m.dim), torch.tensor(m.weights), m.std)
    if d.format == "toy2d":
        from raybm.data.toy2d import toy2d

        return toy2d(d.toy.name, generator(d.toy.seed, "synthetic"), d.toy.n_samples)
    if d.path is None:
        from raybm.data.digits import load_digits

        return load_digits(threshold=d.threshold)
    if not Path(d.path).exists():
        raise InputError(d.path, "data.path", "file not found")
    if d.format == "mnist":
        from raybm.data.inspect import idx_labels_beside
        from raybm.data.mnist_float import load_mnist_float

        labels = d.labels_path or idx_labels_beside(d.path)
        return load_mnist_float(d.path, labels, d.digits, d.proportions,
                                gen=generator(d.split_seed, "subsample"))
    if d.format == "floats" or (d.format == "auto" and config.model.kind != "rbm"):
        from raybm.data.floats import load_float_matrix

        return load_float_matrix(d.path)
    from raybm.data.inspect import load_any

    return load_any(
        d.path, format=d.format, labels_path=d.labels_path, panel_path=d.panel_path,
        threshold=d.threshold, alphabet=d.alphabet, nonstandard=d.nonstandard,
        reweight_identity=d.reweight_identity, label=d.label,
    )


def _model_shaped(config: Config, dataset: Dataset) -> Dataset:
    """Continuous samples in the shape the model takes: flat vectors for a dense energy
    (``(n, 1, 28, 28)`` images become ``(n, 784)``), square images for the conv energy
    (``(n, 784)`` rows become ``(n, 1, 28, 28)``); one-line errors naming the data."""
    kind = config.model.kind
    if kind == "rbm" or not dataset.continuous:
        return dataset
    from raybm.data.dataset import grey_image_side
    from raybm.data.floats import check_event_shape

    where = dataset.source or "data.path"
    shape = dataset.event_shape
    if kind in ("mlp", "gaussian_mixture"):
        return check_event_shape(dataset, (math.prod(shape),), where, f"a {kind} model")
    if len(shape) == 3 and shape[1] == shape[2]:  # any number of channels
        return dataset
    side = grey_image_side(shape)
    if side is not None:
        return check_event_shape(dataset, (1, side, side), where, "a conv model")
    raise InputError(where, "model.kind", f"conv takes square images (channels, side, side) "
                     f"or flattened square ones, not samples of shape {shape}")


# Parameters beyond this are refused before a run starts (~8 GiB of float32 with Adam's two
# moments), instead of an allocator error after the run directory exists.
MAX_PARAMETERS = 2**29


def check_model_fits(config: Config, train: Dataset) -> None:
    """The model the config builds on this data can be built (checked before a run starts)."""
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
        if m.init_means is not None:
            from raybm.data.continuous import mixture_means

            mixture_means(m.init_means, train.event_shape[0], "model", "init_means")
        elif m.n_components > train.n_samples:
            raise InputError("model.n_components", "", f"{m.n_components} components for "
                             f"{train.n_samples} training samples (means start at samples)")
    with torch.device("meta"):  # shapes and names only: no memory, no random draws
        shaped = _new_model(config, train, None)
    n = sum(p.numel() for p in shaped.parameters())
    if n > MAX_PARAMETERS:
        raise InputError("model", "", f"{n:,} parameters on data of shape "
                         f"{train.event_shape} is more than {MAX_PARAMETERS:,}")
    if config.optimizer.param_lr:
        check_param_lr(config, [name for name, _ in shaped.named_parameters()])


def _new_model(config: Config, train: Dataset, gen: torch.Generator | None) -> EnergyModel:
    """The model of ``config.model.kind`` shaped for ``train``, before any data-dependent
    initialisation; neural weights drawn from ``gen`` (torch's default init when None, e.g.
    on the meta device)."""
    m = config.model
    starts_exact = estimator_class(config.algorithm.name).starts_exact
    if m.kind == "rbm":
        n_labels = train.n_labels if (m.labels and train.labels is not None) else 0
        return build_rbm(train.n_visible, m.n_hidden, train.n_states, n_labels)
    if m.kind == "gaussian_mixture":
        from raybm.models.gaussian import GaussianMixtureEnergy

        return GaussianMixtureEnergy(torch.zeros(m.n_components, train.event_shape[0]),
                                     std=m.std)
    from raybm.models.neural import ConvEnergy, MLPEnergy

    # Jarzynski walkers start as exact draws: the read-out at zero leaves N(0, I/base_scale).
    if m.kind == "mlp":
        return MLPEnergy(train.event_shape[0], tuple(m.widths), m.activation, m.base_scale,
                         zero_last=starts_exact, gen=gen)
    channels, size, _ = train.event_shape
    return ConvEnergy(channels, size, m.activation, m.base_scale, zero_last=starts_exact,
                      gen=gen)


def check_param_lr(config: Config, names: list[str]) -> None:
    """Every name in ``optimizer.param_lr`` is a parameter of the model (one-line error)."""
    unknown = sorted(set(config.optimizer.param_lr) - set(names))
    if unknown:
        raise InputError("optimizer.param_lr", unknown[0], f"not a parameter of this model "
                         f"(its parameters: {', '.join(names)})")


def build_model(config: Config, train: Dataset, gen: torch.Generator) -> EnergyModel:
    """The initial model of ``config.model.kind`` on ``train`` (the same on every rank: ``gen``
    is the shared ``"init"`` stream)."""
    m = config.model
    model = _new_model(config, train, gen)
    if m.kind == "gaussian_mixture":
        # Means at the given centers or at distinct training samples (plus noise), equal
        # weights: the student starts unbiased between modes.
        if m.init_means is not None:
            from raybm.data.continuous import mixture_means

            means = mixture_means(m.init_means, train.event_shape[0], "model", "init_means")
        else:
            rows = torch.randperm(train.n_samples, generator=gen)[: m.n_components]
            means = train.x[rows].reshape(m.n_components, -1).clone()
        if m.init_noise > 0:
            means += m.init_noise * torch.randn(means.shape, generator=gen)
        with torch.no_grad():
            model.means.copy_(means)
    elif m.kind == "rbm":
        # Jarzynski walkers are exact draws of the initial model: an RBM without couplings.
        zero = estimator_class(config.algorithm.name).starts_exact
        model.init_parameters(gen, weight_std=0.0 if zero else m.weight_std)
        model.init_visible_bias(train.x, train.weights)
    return model


def parameter_groups(config: Config, model: EnergyModel) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one for all parameters at ``optimizer.lr`` (the
    layout of every checkpoint written before ``param_lr``), or, with ``optimizer.param_lr``,
    one per parameter, named, at its own rate. An unknown name is a one-line error."""
    o = config.optimizer
    names = dict(model.named_parameters())
    if not o.param_lr:
        return [{"params": list(names.values())}]
    check_param_lr(config, list(names))
    return [{"params": [p], "name": n, "lr": o.param_lr.get(n, o.lr)} for n, p in names.items()]


def build_optimizer(config: Config, model: EnergyModel) -> torch.optim.Optimizer:
    o = config.optimizer
    groups = parameter_groups(config, model)
    if o.name == "adam":
        return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def sum_gradients(population: Population, model: torch.nn.Module, loss: torch.Tensor) -> float:
    """Sum the shard gradients (and losses) over all ranks in one collective; the summed loss.

    Each shard's loss is its share of the globally normalised surrogate loss, so the sum is the
    single-process gradient of the whole population; every rank receives the same sum and so
    applies the same update. (Summed in float64: the ranks' parameters must stay identical and
    the single-process gradient is matched to rounding.)
    """
    if population.world_size == 1:
        return float(loss)
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1).double() for g in grads] + [loss.double().reshape(1)])
    population.all_reduce_(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return float(flat[-1])


@dataclass
class Trainer:
    """Model, estimator, optimizer, centring, walkers and generator, stepped one update at a time."""

    config: Config
    train_set: Dataset
    model: EnergyModel
    gen: torch.Generator
    step: int = 0
    walkers: Any = None
    population: Population = LOCAL
    history: list[dict[str, float]] = field(default_factory=list)
    # Seconds spent per part of the update, summed since the start (distributed_overhead.py).
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        a = self.config.algorithm
        self.estimator = build_estimator(a, build_kernel(self.config.sampler),
                                         self.config.train.seed, self.population)
        self.optimizer = build_optimizer(self.config, self.model)
        use_labels = self.model.n_labels > 0
        self.centering = (
            Centering(self.model, self.train_set.x,
                      self.train_set.labels if use_labels else None,
                      self.train_set.weights, a.hidden_offset_momentum)
            if a.centered is not False and self.model.offers_centering else None
        )
        if self.walkers is None:
            n_walkers = a.n_walkers or self.config.train.batch_size
            local = shard_sizes(n_walkers, self.population.world_size)[self.population.rank]
            if isinstance(a, PCDConfig) and a.walker_init == "data":
                self.walkers = self._walkers_from_data(local)
            else:
                self.walkers = self.estimator.init_walkers(self.gen, self.model, local)
            # A fresh run's last change to the initial model (Jarzynski's kick): the same
            # draw on every rank, since it changes the parameters.
            m = self.config.model
            kick = m.weight_std if isinstance(m, RBMModelConfig) else 0.0
            self.walkers = self.estimator.start(generator(self.config.train.seed, "kick"),
                                                self.model, self.walkers, kick)
        n = self.train_set.n_samples
        self.batch_size = min(self.config.train.batch_size, n)
        self.batches_per_epoch = max(n // self.batch_size, 1)
        self._perm_epoch = -1

    def _walkers_from_data(self, n: int) -> WalkerState:
        """``n`` training samples drawn with replacement by this rank's generator (with their
        labels when the model has a label unit): persistent chains that start at the data."""
        ds = self.train_set
        rows = torch.randint(ds.n_samples, (n,), generator=self.gen)
        label = ds.labels[rows] if self.model.n_labels > 0 else None
        return WalkerState.unweighted(ds.x[rows].clone(), label)

    # ------------------------------------------------------------------ minibatches
    def batch_rows(self, step: int) -> torch.Tensor:
        """The rows of update ``step``'s whole minibatch: epoch permutations from
        ``(seed, epoch)``, the same on every rank."""
        epoch, index = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            g = generator(self.config.train.seed, "minibatch", epoch)
            self._perm = torch.randperm(self.train_set.n_samples, generator=g)
            self._perm_epoch = epoch
        return self._perm[index * self.batch_size : (index + 1) * self.batch_size]

    def batch(self, step: int, shard: bool = True) -> Batch:
        """Update ``step``'s minibatch, or with ``shard`` this rank's slice of its rows
        (normalised by the whole minibatch's weight)."""
        rows = self.batch_rows(step)
        ds = self.train_set
        total = float(len(rows)) if ds.weights is None else float(ds.weights[rows].double().sum())
        if shard:
            rows = rows[shard_slice(len(rows), self.population.world_size, self.population.rank)]
        use_labels = self.model.n_labels > 0
        return Batch(
            x=ds.x[rows],
            label=ds.labels[rows] if use_labels else None,
            weight=None if ds.weights is None else ds.weights[rows],
            total_weight=total,
        )

    # ------------------------------------------------------------------ one update
    def _time(self, part: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[part] = self.timings.get(part, 0.0) + now - t0
        return now

    def update(self, diagnostics: bool = True) -> dict[str, float]:
        """One update (every phase of the estimator); its info. ``diagnostics``: add what
        the estimator reports of the state the update leaves (``update_info``), on the
        updates whose info is logged."""
        batch = self.batch(self.step)
        info: dict[str, float] = {}
        if self.centering is not None:  # once per minibatch, whatever the number of phases
            # The offsets must be the same on every rank: computed from the whole minibatch.
            whole = batch if self.population.world_size == 1 else self.batch(self.step, False)
            self.centering.update_hidden_offset(self.model, whole)
        for phase in self.estimator.phases:
            t0 = time.perf_counter()
            est = self.estimator.estimate(self.gen, self.model, batch, self.walkers, phase)
            t0 = self._time("estimate", t0)
            if est.walkers is not None:
                self.walkers = est.walkers
            if not est.loss.requires_grad:
                continue
            self.optimizer.zero_grad(set_to_none=False)
            est.loss.backward()
            t0 = self._time("gradient", t0)
            loss = sum_gradients(self.population, self.model, est.loss.detach())
            t0 = self._time("all_reduce", t0)
            if self.centering is not None:
                self.centering.transform_(self.model)
            token = self.estimator.before_update(self.model, self.walkers)
            self.optimizer.step()
            self.model.post_update()
            # Jarzynski: the walkers absorb the work of this update.
            self.walkers = self.estimator.after_update(self.model, self.walkers, token)
            self._time("optimizer", t0)
            info[f"loss_{phase}"] = loss
            info.update(est.info)
        if diagnostics:
            info.update(self.estimator.update_info(self.model, self.walkers))
        if self._adapts and "acceptance" in info:
            info["step_size"] = self._adapt_step_size(info["acceptance"])
        self.step += 1
        self._check_finite(info)
        return info

    @property
    def _adapts(self) -> bool:
        return isinstance(self.config.sampler, MALASamplerConfig) and (
            self.config.sampler.target_acceptance is not None)

    def _adapt_step_size(self, acceptance: float) -> float:
        """MALA's step size moved towards ``sampler.target_acceptance`` by the acceptance of
        this update, averaged over the ranks so that every rank keeps the same kernel:

            log h <- log h + adapt_rate (acceptance - target).

        The kernel of each update is exact MALA for its own h (invariant for the current
        model), so Jarzynski weights need nothing more and PCD walkers stay targeted; h is
        kernel state, checkpointed with the trainer, never a gradient statistic."""
        s = self.config.sampler
        mean = torch.tensor([acceptance, 1.0], dtype=torch.float64)
        self.population.all_reduce_(mean)
        acceptance = float(mean[0] / mean[1])
        h = self.estimator.kernel.step_size * math.exp(s.adapt_rate
                                                       * (acceptance - s.target_acceptance))
        self.estimator.kernel = replace(self.estimator.kernel, step_size=h)
        return h

    def _check_finite(self, info: dict[str, float]) -> None:
        bad = [k for k, v in info.items() if not math.isfinite(v)]
        bad += [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise DivergenceError(
                f"training diverged at update {self.step}: non-finite {', '.join(bad)}; "
                "lower optimizer.lr or algorithm.k, or resume from the last checkpoint"
            )

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "centering": None if self.centering is None else self.centering.state_dict(),
            "generator": self.gen.get_state(),
            **({"step_size": self.estimator.kernel.step_size} if self._adapts else {}),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.estimator.load_state_dict(state["estimator"])
        if self.centering is not None and state.get("centering") is not None:
            self.centering.load_state_dict(state["centering"])
        self.gen.set_state(state["generator"])
        if self._adapts and "step_size" in state:  # the adapted step size goes on
            self.estimator.kernel = replace(self.estimator.kernel,
                                            step_size=float(state["step_size"]))

    def digest(self) -> dict[str, str]:
        """SHA-256 of each part of this shard's state (``checkpoint.state_digest``)."""
        return state_digest(self.model.state_dict(), self.optimizer.state_dict(),
                            self.state()["estimator"], self.walkers, self.gen.get_state())

    def apply_optimizer_config(self) -> None:
        """Set the config's learning rate, momentum and weight decay on every parameter group.

        ``optimizer.load_state_dict`` restores the hyperparameters saved with the state; a
        continued run (``--resume --set optimizer.lr=...``, a PBT exploit) must train with the
        config's, or the change would be recorded but never happen.
        """
        o = self.config.optimizer
        for group in self.optimizer.param_groups:
            group["lr"] = o.param_lr.get(group.get("name"), o.lr)
            group["weight_decay"] = o.weight_decay
            if "momentum" in group:
                group["momentum"] = o.momentum

    def save(self, run_dir: Path, meta: dict[str, Any]) -> Path:
        path = save_checkpoint(
            run_dir / "checkpoints" / f"step_{self.step:08d}",
            step=self.step, model=self.model, state=self.state(), walkers=self.walkers,
            meta={"config": self.config.model_dump(), **meta},
        )
        set_latest(run_dir, path)
        return path


def available_cores() -> int:
    """The CPUs this process may use: ``OMP_NUM_THREADS`` when set (Ray sets it to what a
    task or actor reserved; a user sets it to share a machine), else the CPUs it may run on."""
    try:
        return max(int(os.environ["OMP_NUM_THREADS"]), 1)
    except (KeyError, ValueError):
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)


def update_work(config: Config, train: Dataset) -> float:
    """Multiply-adds of one energy evaluation over a whole population (or minibatch, when
    larger): the size of the largest single operations an update runs (Gibbs sweeps, Langevin
    steps and the gradient all work on that many rows at once). Counted by torch's FLOP
    counter on the model built on the meta device: no memory, no draws."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        shaped = _new_model(config, train, None)
        x = torch.zeros((1, *train.event_shape), dtype=train.x.dtype)
        label = torch.zeros(1, dtype=torch.long) if shaped.n_labels else None
        with FlopCounterMode(display=False) as counter:
            shaped.energy(x, label)
    rows = max(config.train.batch_size, config.algorithm.n_walkers or 0)
    return counter.get_total_flops() / 2 * rows


# Multiply-adds per energy evaluation from which a second thread pays for itself
# (benchmarks/threads.py): below, each torch op is too short for its OpenMP threads, which
# spin-wait for one another (a 2-core machine shared with other work made small updates up
# to 5x slower than one thread); above, matmuls split well over 2 cores.
AUTO_THREADS_WORK = 1e8


def auto_threads(config: Config, train: Dataset, cores: int) -> int:
    """``train.threads: auto``: one thread for small per-update work, all ``cores`` for large
    (:data:`AUTO_THREADS_WORK`). Decided from sizes alone, never from timings, so the same
    config always runs with the same count (and the same rounding)."""
    return cores if update_work(config, train) >= AUTO_THREADS_WORK else 1


def apply_threads(config: Config, train: Dataset, cores: int | None = None) -> int:
    """Set torch's intra-op threads as ``train.threads`` says (``cores``: the CPUs this
    process holds, default :func:`available_cores`); the count in force."""
    threads = config.train.threads
    if threads == "auto":
        threads = auto_threads(config, train, cores or available_cores())
    elif threads is None:  # torch's default (configs written before "auto")
        threads = cores
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def make_trainer(config: Config, train: Dataset, resume: Path | None = None,
                 population: Population = LOCAL, cores: int | None = None) -> Trainer:
    """A fresh trainer, or one restored from ``resume`` (a run directory or checkpoint), for
    shard ``population.rank`` of ``population.world_size``.

    A checkpoint written by the same number of shards gives each rank its own walkers and
    generator back (an exact continuation). With a different number, the population is
    re-split evenly and each rank's generator is seeded afresh from ``(seed, rank, step)``.
    ``cores``: the CPUs this process holds (``train.threads``: :func:`apply_threads`).
    """
    apply_threads(config, train, cores)
    rank, world = population.rank, population.world_size
    if resume is None:
        # Every rank builds the same initial model from the shared stream, then draws from
        # its own.
        model = build_model(config, train, generator(config.train.seed, "init"))
        gen = generator(config.train.seed, "walkers", rank)
        return Trainer(config, train, model, gen, population=population)
    ckpt = load_checkpoint(resume)
    walkers, shard_gen, exact = ckpt.shard(rank, world)
    gen = torch.Generator()
    trainer = Trainer(config, train, ckpt.model, gen, step=ckpt.step, walkers=walkers,
                      population=population)
    trainer.load_state(ckpt.state)  # rank 0's generator is in the common state
    trainer.apply_optimizer_config()  # a resume or a PBT exploit may have changed lr, ...
    if shard_gen is not None:
        trainer.gen.set_state(shard_gen)
    elif not exact:  # a different number of shards: streams cannot continue, start anew
        trainer.gen.set_state(generator(config.train.seed, "resplit", rank, ckpt.step).get_state())
    return trainer


def record_restore(run_dir: Path, trainer: Trainer, source: Path) -> Path:
    """Write what a (re)started shard continued from: the checkpoint and the digest of the
    state it holds right after restoring (``<run>/restores/``, one file per rank and start).
    A PBT exploit is checked against its donor's checkpoint with it, bit for bit."""
    import json

    pop = trainer.population
    folder = Path(run_dir) / "restores"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"step_{trainer.step:08d}-{stamp}-{os.getpid()}-rank{pop.rank:03d}.json"
    atomic_write_text(path, json.dumps({
        "source": str(source), "step": trainer.step, "rank": pop.rank,
        "world_size": pop.world_size, "digest": trainer.digest()}, indent=2))
    return path


def run_updates(
    trainer: Trainer,
    n_updates: int,
    on_log: Callable[[int, dict[str, float]], dict[str, float] | None] | None = None,
    on_checkpoint: Callable[[int], Any] | None = None,
    progress: bool = False,
    on_update: Callable[[int], None] | None = None,
    on_report: Callable[[int, Any], None] | None = None,
) -> None:
    """Advance ``trainer`` to ``n_updates`` updates, logging and checkpointing on schedule.

    At a log step ``on_log(step, info)`` runs (it returns what it logged: the update's info
    with the live metrics, shown by ``progress``), at a checkpoint step ``on_checkpoint(step)``;
    then, at either, ``on_report(step, what on_checkpoint returned or None)``: one report per
    step whatever coincides (a Tune trial reports metrics and checkpoint together).
    ``progress``: show it on stderr (``raybm.console``: a bar on a terminal, one line per log
    elsewhere).
    """
    from raybm.console import Progress

    cfg = trainer.config.train
    shown = Progress(n_updates, trainer.step) if progress else None
    t0, s0 = time.perf_counter(), trainer.step
    try:
        while trainer.step < n_updates:
            step = trainer.step + 1
            info = trainer.update(diagnostics=step % cfg.log_every == 0 or step == n_updates)
            if on_update is not None:
                on_update(trainer.step)
            if shown is not None:
                shown.update(trainer.step)
            logs = trainer.step % cfg.log_every == 0 or trainer.step == n_updates
            if logs:
                elapsed = time.perf_counter() - t0
                info["updates_per_s"] = (trainer.step - s0) / max(elapsed, 1e-9)
                trainer.history.append({"step": trainer.step, **info})
                logged = on_log(trainer.step, info) if on_log is not None else None
                if shown is not None:
                    shown.log(trainer.step, info if logged is None else logged)
            saved = None
            checkpoints = trainer.step % cfg.checkpoint_every == 0
            if on_checkpoint is not None and checkpoints:
                saved = on_checkpoint(trainer.step)
            if on_report is not None and (logs or checkpoints):
                on_report(trainer.step, saved)
    finally:
        if shown is not None:
            shown.close()

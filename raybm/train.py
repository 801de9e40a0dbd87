"""The training loop: data -> estimator -> trained modules' optimizers -> checkpoints.

One :class:`Trainer` is one shard of the run: in-process it holds the whole walker population
(``population=LOCAL``); on a Ray Train worker it holds shard ``rank`` of ``world_size`` and the
same code runs with a ``TorchComm`` population (``raybm.distributed``). Every rank computes the
same global minibatch from ``(seed, epoch)`` and takes its slice of the rows, so a run sees the
same sequence of minibatches whatever the number of workers; the shard losses are normalised
globally and their gradients summed, so every rank applies the same update.

A run trains named modules: ``energy`` always, and any an estimator declares (a flow, a
control variate: ``Estimator.modules``), each with its own optimizer, schedule and clipping
(``raybm.optim``). Each phase of an update steps the modules it declares (``Phase.modules``)
and no other; its gradient is the backward pass of the estimator's surrogate loss, or the
gradients it hands over, or both, summed over the ranks in one collective
(``raybm.gradients``).

The loop is deterministic given the config: minibatch order comes from ``(seed, epoch)``, every
random draw from one generator per rank seeded from ``(seed, rank)`` whose state is
checkpointed, so ``--resume`` continues exactly as an uninterrupted run would. Every generator
is a named stream of ``raybm.streams``. What is built here is built by registries (models,
estimators, kernels, optimizers); the trainer holds the loop and its state.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from raybm.algorithms.base import ENERGY, Batch, Phase, as_phase
from raybm.algorithms.centering import Centering
from raybm.algorithms.population import LOCAL, Population
from raybm.algorithms.registry import build_estimator
from raybm.checkpoint import (kernel_state, load_checkpoint, optimizer_states, save_checkpoint,
                              set_latest, state_digest, write_restore_record)
from raybm.config import Config
from raybm.data.dataset import Dataset
from raybm.data.minibatch import Minibatches
from raybm.errors import DivergenceError
from raybm.gradients import add_gradients, finite, sum_gradients
from raybm.models.base import EnergyModel
from raybm.models.build import build as build_model
from raybm.optim import build_optimizers
from raybm.samplers.base import MatmulSupport
from raybm.samplers.gibbs import matmul_support
from raybm.samplers.registry import build_kernel
from raybm.streams import generator
from raybm.threads import apply_threads
from raybm.walkers import shard_sizes


@dataclass
class Trainer:
    """Trained modules, estimator, optimizers, centring, walkers and generator, stepped one
    update at a time."""

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
        c = self.config
        a = c.algorithm
        self.estimator = build_estimator(a, build_kernel(c.sampler), c.train.seed,
                                         self.population)
        # What the estimator scales by, read off the whole training set on every rank.
        self.estimator.read_data(self.train_set)
        # Modules the estimator declares, built the same on every rank (a resumed run loads
        # their parameters over them).
        extra = self.estimator.build_modules(generator(c.train.seed, "modules"), self.model,
                                             self.train_set)
        self.modules: dict[str, nn.Module] = {ENERGY: self.model, **extra}
        # The kernel again, now that it can see the modules (a flow proposing its moves),
        # with what its config left to the machine and the run decided for every rank alike
        # (Gibbs' precision auto: bf16 only if every rank multiplies bf16 natively; compile
        # auto: on for a run long enough to repay compiling).
        self.estimator.kernel = build_kernel(c.sampler, self.model, self.modules).for_run(
            self.model, self._every_rank_can(), self._draws(),
            weighs_moves=self.estimator.weighs_moves)
        self.optimizers = build_optimizers(c, self.modules)
        self.phases: list[Phase] = [as_phase(p) for p in self.estimator.phases]
        use_labels = self.model.n_labels > 0
        self.centering = (
            Centering(self.model, self.train_set.x,
                      self.train_set.labels if use_labels else None,
                      self.train_set.weights, a.hidden_offset_momentum)
            if a.centered is not False and self.model.offers_centering else None
        )
        if self.walkers is None:
            n_walkers = a.n_walkers or c.train.batch_size
            local = shard_sizes(n_walkers, self.population.world_size)[self.population.rank]
            self.walkers = self.estimator.init_walkers(self.gen, self.model, local,
                                                       self.train_set)
            # A fresh run's last change to the initial model (Jarzynski's kick): the same
            # draw on every rank, since it changes the parameters.
            self.walkers = self.estimator.start(generator(c.train.seed, "kick"), self.model,
                                                self.walkers, c.model.start_kick)
        self.minibatches = Minibatches(self.train_set, c.train.batch_size, c.train.seed,
                                       self.population.world_size, self.population.rank,
                                       use_labels)

    def _draws(self) -> float:
        """About how many walker-coordinate moves the run's kernel makes on this rank:
        chains x coordinates of a walker x k x phases x updates (what ``sampler.compile:
        auto`` weighs against the cost of compiling)."""
        c = self.config
        chains = (c.algorithm.n_walkers or c.train.batch_size) / self.population.world_size
        return float(chains * math.prod(self.model.event_shape) * c.algorithm.k
                     * len(self.estimator.phases) * c.train.n_updates)

    def _every_rank_can(self) -> MatmulSupport:
        """What every rank multiplies natively or exactly: each field of this rank's
        :class:`MatmulSupport` where all ranks have it (one all-reduce)."""
        device = next(self.model.parameters()).device
        can = torch.tensor([*map(float, astuple(matmul_support(device))), 1.0],
                           dtype=torch.float64, device=device)
        self.population.all_reduce_(can)  # a field is every rank's where it sums to the count
        return MatmulSupport(*(bool(v == can[-1]) for v in can[:-1]))

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The energy's optimizer."""
        return self.optimizers[ENERGY].optimizer

    def batch(self, step: int, shard: bool = True) -> Batch:
        """Update ``step``'s minibatch, or with ``shard`` this rank's slice of it."""
        return self.minibatches.batch(step, shard)

    # ------------------------------------------------------------------ one update
    def _time(self, part: str, t0: float) -> float:
        now = time.perf_counter()
        self.timings[part] = self.timings.get(part, 0.0) + now - t0
        return now

    def update(self, diagnostics: bool = True) -> dict[str, float]:
        """One update (every phase of the estimator). With ``diagnostics`` (the updates
        whose info is logged) its info, read on the host, with what the estimator reports
        of the state the update leaves (``update_info``) and the learning rates; without,
        ``{}`` (nothing is read on the host)."""
        batch = self.batch(self.step)
        if not diagnostics:  # this update's loss is not read: a closed form may skip it
            batch = replace(batch, reports_loss=False)
        noise = self.config.algorithm.data_noise
        if noise:  # the data jitter of image EBMs, drawn for this rank's rows
            jitter = torch.randn(batch.x.shape, generator=self.gen, dtype=batch.x.dtype)
            batch = replace(batch, x=batch.x + noise * jitter)
        info: dict[str, float] = {}
        if self.centering is not None:  # once per minibatch, whatever the number of phases
            # The offsets must be the same on every rank: computed from the whole minibatch.
            whole = batch if self.population.world_size == 1 else self.batch(self.step, False)
            xw = self.centering.update_hidden_offset(self.model, whole,
                                                     self.estimator.kernel.precision)
            if whole is batch:  # its x W, for the first contrast (same parameters)
                batch = replace(batch, visible_field=xw)
        for phase in self.phases:
            t0 = time.perf_counter()
            est = self.estimator.estimate(self.gen, self.model, batch, self.walkers,
                                          phase.name)
            t0 = self._time("estimate", t0)
            if est.walkers is not None:
                self.walkers = est.walkers
            loss = self._gradients(phase, est)
            if loss is None:
                continue
            t0 = self._time("gradient", t0)
            stepped = [self.optimizers[name] for name in phase.modules]
            params = [p for o in stepped for p in o.parameters()]
            summed = sum_gradients(self.population, params, loss)
            info[f"loss_{phase.name}"] = summed
            # The one read on the host per phase: the summed loss and gradients are the same
            # on every rank, so every rank stops at the same update, and a non-finite value
            # never reaches the parameters. A parameter made non-finite by a step makes the
            # next update's loss non-finite: divergence is caught within one update.
            if not bool(finite(summed, params)):
                raise DivergenceError(self._divergence(phase, summed, params))
            t0 = self._time("all_reduce", t0)
            if self.centering is not None and ENERGY in phase.modules:
                self.centering.transform_(self.model)
            token = self.estimator.before_update(self.model, self.walkers)
            for o in stepped:
                o.clip_()
                o.prepare(self.step)
                o.step()
            self.model.post_update()
            if ENERGY in phase.modules:  # the energy's parameters moved: its x W is stale
                batch = replace(batch, visible_field=None)
            # Jarzynski: the walkers absorb the work of this update.
            self.walkers = self.estimator.after_update(self.model, self.walkers, token)
            self._time("optimizer", t0)
            info.update(est.info)
        if diagnostics:
            info.update(self.estimator.update_info(self.model, self.walkers))
            info.update({f"lr/{name}": o.lr(self.step) for name, o in self.optimizers.items()})
        info.update(self._adapt_kernel(info))
        self.step += 1
        if not diagnostics:
            return {}
        info = {k: float(v) for k, v in info.items()}  # logged: read now, and checked
        self._check_finite(info)
        return info

    def check_parameters(self) -> None:
        """Every trained parameter is finite (one fused read): before a checkpoint is
        written, so that a step that overflowed is never saved as the state to resume."""
        params = [p for m in self.modules.values() for p in m.parameters()]
        if bool(torch.isfinite(torch.stack(torch._foreach_norm(params)).sum())):
            return
        bad = [f"{m}.{n}" if m != ENERGY else n for m, module in self.modules.items()
               for n, p in module.named_parameters() if not bool(torch.isfinite(p).all())]
        raise DivergenceError(f"training diverged at update {self.step}: non-finite "
                              f"{', '.join(bad)}; lower the learning rates, or resume from "
                              "the last checkpoint")

    def _divergence(self, phase: Phase, loss: torch.Tensor,
                    params: list[nn.Parameter]) -> str:
        """What went non-finite in this update's phase (read once it has)."""
        names = {id(p): (f"{m}.{n}" if m != ENERGY else n)
                 for m in phase.modules for n, p in self.modules[m].named_parameters()}
        bad = [] if bool(torch.isfinite(loss)) else [f"loss_{phase.name}"]
        bad += [f"gradient of {names[id(p)]}" for p in params
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        bad += [f"parameter {names[id(p)]}" for p in params
                if not bool(torch.isfinite(p).all())]
        if not bad:  # every gradient finite, the sum of their norms beyond float32's range
            bad = [f"norm of the {phase.name} phase's gradient (each finite, > 3e38 in all)"]
        rates = " or ".join("optimizer.lr" if m == ENERGY else f"optimizers.{m}.lr"
                            for m in phase.modules)
        return (f"training diverged at update {self.step + 1}: non-finite {', '.join(bad)}; "
                f"lower {rates} or algorithm.k, or resume from the last checkpoint")

    def _gradients(self, phase: Phase, est) -> torch.Tensor | None:
        """Fill ``.grad`` of the phase's modules from the estimate (its surrogate loss's
        backward pass, plus any gradients it hands over); the loss to report, or None when
        the estimate gives this phase nothing to step."""
        has_loss = est.loss is not None and est.loss.requires_grad
        if not has_loss and not est.grads:
            return None
        for name in phase.modules:
            self.optimizers[name].zero_grad()
        if has_loss:
            est.loss.backward()
        for name, grads in est.grads.items():
            if name not in phase.modules:
                raise ValueError(f"{type(self.estimator).__name__} handed gradients of "
                                 f"{name!r} in phase {phase.name!r}, which steps "
                                 f"{', '.join(phase.modules)}")
            add_gradients(self.modules[name], grads, f"gradients of {name}")
        if est.loss is None:  # gradients only: nothing to report but a zero, where they are
            device = next(self.modules[phase.modules[0]].parameters()).device
            return torch.zeros((), dtype=torch.float64, device=device)
        return est.loss.detach()

    def _adapt_kernel(self, info: dict[str, float]) -> dict[str, float]:
        """Let the kernel adapt itself (MALA's step size) to this update's diagnostics it
        declares (``Kernel.adapts_on``), averaged over the ranks so that every rank keeps the
        same kernel; what it reports (the new step size)."""
        kernel = self.estimator.kernel
        names = kernel.adapts_on
        if not names or not all(n in info for n in names):
            return {}
        values = torch.tensor([info[n] for n in names] + [1.0], dtype=torch.float64)
        self.population.all_reduce_(values)
        means = dict(zip(names, (values[:-1] / values[-1]).tolist()))
        self.estimator.kernel, reported = kernel.adapted(means)
        return reported

    def _check_finite(self, info: dict[str, float]) -> None:
        """A logged diagnostic that is not finite (a running log Z, an ESS) ends the run as
        a non-finite gradient does (the same values on every rank)."""
        bad = [k for k, v in info.items() if not math.isfinite(v)]
        if bad:
            raise DivergenceError(
                f"training diverged at update {self.step}: non-finite {', '.join(bad)}; "
                "lower optimizer.lr or algorithm.k, or resume from the last checkpoint"
            )

    # ------------------------------------------------------------------ checkpoint state
    def state(self) -> dict[str, Any]:
        """Everything beyond the energy's parameters and the walkers that a checkpoint keeps:
        each module's parameters and optimizer state, the schedules' positions, the
        estimator's and kernel's state, the centring offsets, the generator."""
        return {
            "estimator": self.estimator.state_dict(),
            "optimizers": {n: o.optimizer.state_dict() for n, o in self.optimizers.items()},
            "modules": {n: {k: v.detach().clone() for k, v in m.state_dict().items()}
                        for n, m in self.modules.items() if n != ENERGY},
            "schedules": {n: {"step": self.step, "lr": o.lr(self.step)}
                          for n, o in self.optimizers.items()},
            "kernel": self.estimator.kernel.state_dict(),
            "centering": None if self.centering is None else self.centering.state_dict(),
            "generator": self.gen.get_state(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (and the layouts of earlier checkpoint formats: one
        ``optimizer``, MALA's adapted ``step_size`` at the top level)."""
        optimizers, modules = optimizer_states(state), state.get("modules") or {}
        missing = [n for n in self.optimizers if n not in optimizers] + [
            n for n in self.modules if n != ENERGY and n not in modules]
        if missing:  # a module the run trains that the checkpoint does not hold
            raise ValueError(f"the checkpoint holds no state of {', '.join(missing)}")
        for name, o in self.optimizers.items():
            o.optimizer.load_state_dict(optimizers[name])
        for name, params in modules.items():
            self.modules[name].load_state_dict(params)
        self.estimator.load_state_dict(state["estimator"])
        # Always, also when empty: a kernel reads what a checkpoint without its state means
        # (Gibbs: the random stream of runs before SFC64).
        self.estimator.kernel = self.estimator.kernel.with_state(kernel_state(state))
        if self.centering is not None and state.get("centering") is not None:
            self.centering.load_state_dict(state["centering"])
        self.gen.set_state(state["generator"])

    def digest(self) -> dict[str, str]:
        """SHA-256 of each part of this shard's state (``checkpoint.state_digest``)."""
        params = {f"{n}.{k}": v for n, m in self.modules.items()
                  for k, v in m.state_dict().items()}
        return state_digest(params, {n: o.optimizer.state_dict()
                                     for n, o in self.optimizers.items()},
                            self.estimator.state_dict(), self.walkers, self.gen.get_state(),
                            self.estimator.kernel.state_dict())

    def save(self, run_dir: Path, meta: dict[str, Any]) -> Path:
        path = save_checkpoint(
            run_dir / "checkpoints" / f"step_{self.step:08d}",
            step=self.step, model=self.model, state=self.state(), walkers=self.walkers,
            meta={"config": self.config.model_dump(), **meta},
        )
        set_latest(run_dir, path)
        return path


def make_trainer(config: Config, train: Dataset, resume: Path | None = None,
                 population: Population = LOCAL, cores: int | None = None) -> Trainer:
    """A fresh trainer, or one restored from ``resume`` (a run directory or checkpoint), for
    shard ``population.rank`` of ``population.world_size``.

    A checkpoint written by the same number of shards gives each rank its own walkers and
    generator back (an exact continuation). With a different number, the population is
    re-split evenly and each rank's generator is seeded afresh from ``(seed, rank, step)``.
    ``cores``: the CPUs this process holds (``train.threads``: ``raybm.threads``).
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
    if shard_gen is not None:
        trainer.gen.set_state(shard_gen)
    elif not exact:  # a different number of shards: streams cannot continue, start anew
        trainer.gen.set_state(generator(config.train.seed, "resplit", rank, ckpt.step).get_state())
    return trainer


def record_restore(run_dir: Path, trainer: Trainer, source: Path) -> Path:
    """What a (re)started shard continued from, with the digest of the state it holds right
    after restoring (``checkpoint.write_restore_record``)."""
    pop = trainer.population
    return write_restore_record(run_dir, source, trainer.step, pop.rank, pop.world_size,
                                trainer.digest())


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
                for message in trainer.estimator.alarms(info):
                    if shown is not None:
                        shown.warn(trainer.step, message)
                    elif trainer.population.rank == 0:  # no display: the log still says it
                        print(f"update {trainer.step}/{n_updates} warning: {message}",
                              file=sys.stderr, flush=True)
            saved = None
            checkpoints = trainer.step % cfg.checkpoint_every == 0
            if checkpoints or trainer.step == n_updates:  # a state about to be saved
                trainer.check_parameters()
            if on_checkpoint is not None and checkpoints:
                saved = on_checkpoint(trainer.step)
            if on_report is not None and (logs or checkpoints):
                on_report(trainer.step, saved)
    finally:
        if shown is not None:
            shown.close()

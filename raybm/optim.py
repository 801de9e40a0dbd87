"""The optimizers of a run's trained modules: one per module, with its parameter groups,
learning-rate schedule and gradient clipping, all read from an ``optimizer:`` config section.

The energy's section is ``optimizer:``; a module an estimator declares (a flow, a control
variate) has its own under ``optimizers.<name>``. Every hyperparameter is set from the config
before every step (:meth:`ModuleOptimizer.prepare`): a continued run (``--resume --set``, a
PBT exploit) trains with the config's values, never with those a restored optimizer state
carries, and a schedule is a pure function of the update index and its horizon, so a resumed
run continues it exactly (a run records a decaying schedule's horizon when it starts:
``run.resolve_paths``).

Schedules (``optimizer.schedule``), as factors of the base rate at update ``s`` (0-based) of a
horizon ``T`` (``schedule.updates``; a run's ``train.n_updates`` when it starts):

    warm-up:   (s + 1) / W                        for s < W  (W = ``warmup``)
    decay:     p = clamp((s - s0) / (T - s0), 0, 1),  s0 = ``start`` * T
               constant  1
               linear    1 - (1 - f) p                          (f = ``final``)
               cosine    f + (1 - f) (1 + cos(pi p)) / 2

the product of the two. A module's ``lr_ratio`` ties its rate to the energy's (ratio times
``optimizer.lr``, the energy's schedule). The Jarzynski research decays its rates linearly to zero over the
run (``linear``, start 0, final 0); FlowMC-EBM over the second half (start 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from raybm.errors import InputError

if TYPE_CHECKING:
    from raybm.config import Config, OptimizerConfig


def schedule_factor(schedule: Any, step: int, horizon: int) -> float:
    """The factor of the base learning rate at update ``step`` (0-based) of ``horizon``
    (module docstring); exactly 1.0 for a constant schedule without warm-up."""
    factor = 1.0
    if schedule.warmup and step < schedule.warmup:
        factor = (step + 1) / schedule.warmup
    if schedule.name == "constant":
        return factor
    horizon = schedule.updates or horizon
    start = schedule.start * horizon
    if step < start:
        return factor
    p = min((step - start) / max(horizon - start, 1e-12), 1.0)
    final = schedule.final
    if schedule.name == "linear":
        return factor * (1.0 - (1.0 - final) * p)
    return factor * (final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p)))


def parameter_groups(config: OptimizerConfig, module: nn.Module,
                     section: str = "optimizer", owner: str = "this model"
                     ) -> list[dict[str, Any]]:
    """One group for all parameters at ``lr`` (the layout of checkpoints written before
    ``param_lr``), or, with ``param_lr``, one per parameter, named, at its own rate. An
    unknown name is a one-line error naming ``<section>.param_lr``."""
    names = dict(module.named_parameters())
    if not config.param_lr:
        return [{"params": list(names.values())}]
    check_param_lr(config, list(names), section, owner)
    return [{"params": [p], "name": n, "lr": config.param_lr.get(n, config.lr)}
            for n, p in names.items()]


def check_param_lr(config: OptimizerConfig, names: list[str],
                   section: str = "optimizer", owner: str = "this model") -> None:
    """Every name in ``param_lr`` is a parameter of the module (one-line error)."""
    unknown = sorted(set(config.param_lr) - set(names))
    if unknown:
        raise InputError(f"{section}.param_lr", unknown[0], f"not a parameter of {owner} "
                         f"(its parameters: {', '.join(names)})")


@dataclass
class ModuleOptimizer:
    """One trained module's optimizer, schedule and clipping (see the module docstring)."""

    name: str
    module: nn.Module
    config: OptimizerConfig
    optimizer: torch.optim.Optimizer
    horizon: int  # train.n_updates: a schedule's default horizon

    @classmethod
    def build(cls, name: str, module: nn.Module, config: OptimizerConfig, horizon: int,
              section: str = "optimizer") -> "ModuleOptimizer":
        owner = "this model" if section == "optimizer" else f"the module {name}"
        groups = parameter_groups(config, module, section, owner)
        if config.name == "adam":
            opt = torch.optim.Adam(groups, lr=config.lr, betas=tuple(config.betas),
                                   weight_decay=config.weight_decay)
        else:
            opt = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay)
        return cls(name, module, config, opt, horizon)

    def lr(self, step: int) -> float:
        """The base learning rate in force at update ``step``."""
        return self.config.lr * schedule_factor(self.config.schedule, step, self.horizon)

    def prepare(self, step: int) -> None:
        """Set every group's hyperparameters from the config for update ``step``."""
        c = self.config
        factor = schedule_factor(c.schedule, step, self.horizon)
        for group in self.optimizer.param_groups:
            base = c.param_lr.get(group.get("name"), c.lr)
            group["lr"] = base * factor  # exactly base when the factor is 1.0
            group["weight_decay"] = c.weight_decay
            if "momentum" in group:
                group["momentum"] = c.momentum
            if "betas" in group:
                group["betas"] = tuple(c.betas)

    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def clip_(self) -> None:
        """Scale the gradients to norm ``clip_norm`` at most (the summed gradients: every
        rank clips the same vector)."""
        if self.config.clip_norm is not None:
            grads = [p for p in self.parameters() if p.grad is not None]
            if grads:
                torch.nn.utils.clip_grad_norm_(grads, self.config.clip_norm)

    def zero_grad(self) -> None:
        # set_to_none: a parameter this phase's loss does not reach keeps no gradient, and
        # the optimizer leaves it (and its moments) alone.
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.optimizer.step()


def build_optimizers(config: Config, modules: dict[str, nn.Module]
                     ) -> dict[str, ModuleOptimizer]:
    """One optimizer per trained module: ``optimizer:`` for the energy, ``optimizers.<name>``
    for a declared module (the section's defaults when the config leaves it out)."""
    from raybm.algorithms.base import ENERGY
    from raybm.config import OptimizerConfig

    unknown = sorted(set(config.optimizers) - set(modules))
    if unknown:
        raise InputError(f"optimizers.{unknown[0]}", "", "not a trained module of this run "
                         f"(its modules: {', '.join(modules)})")
    if config.optimizer.lr_ratio is not None:
        raise InputError("optimizer.lr_ratio", "", "sets a module's rate relative to the "
                         "energy's: put it under optimizers.<module>")
    out = {}
    for name, module in modules.items():
        section = "optimizer" if name == ENERGY else f"optimizers.{name}"
        c = config.optimizer if name == ENERGY else config.optimizers.get(name,
                                                                         OptimizerConfig())
        out[name] = ModuleOptimizer.build(name, module, co_adjusted(config, c),
                                          config.train.n_updates, section)
    return out


def co_adjusted(config: Config, c: OptimizerConfig) -> OptimizerConfig:
    """A module's optimizer section with ``lr_ratio`` resolved: rate ``lr_ratio *
    optimizer.lr`` on the energy's schedule, so that a change of the energy's rate (a PBT
    exploit, ``--resume --set optimizer.lr=...``) moves the module's with it."""
    if c.lr_ratio is None:
        return c
    return c.model_copy(update={"lr": c.lr_ratio * config.optimizer.lr,
                                "schedule": config.optimizer.schedule})

"""One registry from ``sampler.name`` to kernel: the trainer builds the kernel value here and
hands it to the estimator (DESIGN.md, "Kernel")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from torch import nn

from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.samplers.gibbs import GibbsKernel
from raybm.samplers.langevin import MALA, ULA
from raybm.samplers.flowmc import FlowMC
from raybm.samplers.short_run import ShortRunLangevin

if TYPE_CHECKING:
    from raybm.config import SamplerConfig

KERNELS: dict[str, Callable[..., Kernel]] = {
    "gibbs": lambda c, model, modules: GibbsKernel(c.precision, c.compile),
    "ula": lambda c, model, modules: ULA(c.step_size, None if c.box is None else tuple(c.box),
                                         noise_std=c.noise_std, box_rule=c.box_rule),
    "mala": lambda c, model, modules: MALA(c.step_size, None if c.box is None else tuple(c.box),
                                           noise_std=c.noise_std, box_rule=c.box_rule,
                                           target_acceptance=c.target_acceptance,
                                           adapt_rate=c.adapt_rate),
    "short_run": lambda c, model, modules: ShortRunLangevin(
        c.step_size, c.noise_std, c.grad_clamp, None if c.box is None else tuple(c.box)),
    # Before the trainer has built the modules the flow is missing: the kernel then starts
    # walkers but refuses to move them (the trainer builds it again with the flow).
    "flowmc": lambda c, model, modules: FlowMC(c.step_size, c.n_mala, c.target_acceptance,
                                               c.adapt_rate, flow=modules.get("flow")),
}


def build_kernel(sampler: SamplerConfig, model: EnergyModel | None = None,
                 modules: dict[str, nn.Module] | None = None) -> Kernel:
    """The kernel a ``sampler:`` config section describes. A builder sees the run's model and
    trained modules (a flow that proposes moves is one of them): the trainer builds the kernel
    once more when the estimator has built its modules, so a builder must also accept none
    (``{}``: before then, or where a kernel is built outside a run)."""
    return KERNELS[sampler.name](sampler, model, modules or {})


def register(name: str, section: type, builder: Callable[..., Kernel]) -> None:
    """Register a new kernel: its ``sampler:`` config section (``name`` its tag) and its
    builder ``(section, model, modules) -> Kernel``. What a plugin module calls."""
    from raybm.config import SamplerSection, register_section

    if not issubclass(section, SamplerSection):
        raise TypeError(f"the config section of {name!r} must derive from "
                        "raybm.config.SamplerSection")
    if section.model_fields["name"].default != name:
        raise ValueError(f"the config section of {name!r} is named "
                         f"{section.model_fields['name'].default!r}")
    KERNELS[name] = builder
    register_section("sampler", section)

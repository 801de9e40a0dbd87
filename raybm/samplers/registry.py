"""One registry from ``sampler.name`` to kernel: the trainer builds the kernel value here and
hands it to the estimator (DESIGN.md, "Kernel")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from raybm.samplers.base import Kernel
from raybm.samplers.gibbs import GibbsKernel
from raybm.samplers.langevin import MALA, ULA

if TYPE_CHECKING:
    from raybm.config import SamplerConfig

KERNELS: dict[str, Callable[["SamplerConfig"], Kernel]] = {
    "gibbs": lambda c: GibbsKernel(c.precision),
    "ula": lambda c: ULA(c.step_size, None if c.box is None else tuple(c.box)),
    "mala": lambda c: MALA(c.step_size, None if c.box is None else tuple(c.box),
                           target_acceptance=c.target_acceptance, adapt_rate=c.adapt_rate),
}


def build_kernel(sampler: SamplerConfig) -> Kernel:
    """The kernel a ``sampler:`` config section describes."""
    return KERNELS[sampler.name](sampler)

"""One registry from ``algorithm.name`` to estimator class (DESIGN.md, "Estimator").

The trainer asks the registry, never a chain of ``if name == ...``: a new algorithm is one
class implementing :class:`~raybm.algorithms.base.Estimator` and one line here. The config's
``algorithm.name`` choices are checked against these keys in the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raybm.algorithms.base import Estimator
from raybm.algorithms.contrastive import (ContrastiveDivergence, KStep,
                                          PersistentContrastiveDivergence)
from raybm.algorithms.dcd import DiffusionCD
from raybm.algorithms.flowmc import FlowMCEBM
from raybm.algorithms.jarzynski import Jarzynski
from raybm.algorithms.population import LOCAL, Population
from raybm.samplers.base import Kernel

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (KStep, PersistentContrastiveDivergence, ContrastiveDivergence, Jarzynski,
                FlowMCEBM, DiffusionCD)
}


def register(estimator: type[Estimator], section: type) -> None:
    """Register a new algorithm: its estimator under ``estimator.name`` and its ``algorithm:``
    config section (a subclass of the config's algorithm options whose ``name`` is that
    name). What a plugin module (``raybm.plugins``) calls; nothing else changes to add one."""
    from raybm.config import register_section

    name = estimator.name
    if section.model_fields["name"].default != name:
        raise ValueError(f"the config section of {name!r} is named "
                         f"{section.model_fields['name'].default!r}")
    ESTIMATORS[name] = estimator
    register_section("algorithm", section)


def estimator_class(name: str) -> type[Estimator]:
    """The estimator class of ``algorithm.name`` (the config has already checked the name)."""
    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ESTIMATORS)}") from None


def build_estimator(algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> Estimator:
    """The estimator of an ``algorithm:`` config section, moving its walkers with ``kernel``
    (``samplers.registry.build_kernel``), over the population it shards."""
    estimator = estimator_class(algorithm.name).from_config(algorithm, kernel=kernel,
                                                            seed=seed, population=population)
    estimator.energy_penalty = algorithm.energy_penalty
    return estimator

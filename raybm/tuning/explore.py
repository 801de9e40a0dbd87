"""Coupled PBT moves: learning-rate co-adjustment with k (and other coupled keys).

A short-run sampler with fewer steps per update gives a noisier, more biased negative phase;
the step size that was stable with k sweeps may not be stable with k/2 (and the reverse: more
sweeps allow a larger step). Tune's PBT perturbs each mutated key on its own, so a trial whose
k is halved keeps a learning rate tuned for the old k until a later exploit happens to fix it.
:class:`CoupledExplore` is PBT's ``custom_explore_fn``: after Tune's own perturbations it moves
``key`` by a factor drawn from ``factors`` and, in the same step, every key of ``moves`` by the
factor at the same position (e.g. ``algorithm.k x [0.5, 2]`` with ``optimizer.lr x [0.5, 2]``).
Moves whose result the config would refuse (k below 1, an ESS threshold above 1) are not made.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from raybm.config import Config, parse_config, with_values
from raybm.errors import InputError


@dataclass
class CoupledExplore:
    moves: list[dict[str, Any]]  # CoupledMove.model_dump() of each
    base: dict[str, Any]  # the sweep's base config (model_dump), to validate moved values
    seed: int = 0
    # (low, high) of keys PBT also mutates (their hyperparam_mutations domain): a coupled
    # move keeps them inside, as Tune's own perturbations are meant to stay in the domain.
    limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = random.Random(self.seed)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for move in self.moves:
            key = move["key"]
            i = self.rng.randrange(len(move["factors"]))
            proposal = {key: self._scaled(config[key], move["factors"][i], move.get("bounds"))}
            if proposal[key] == config[key]:
                continue  # at a bound: the coupled keys stay too
            for other, factors in move.get("moves", {}).items():
                proposal[other] = self._scaled(config[other], factors[i], self.limits.get(other))
            if self._valid(config | proposal):
                config.update(proposal)
        return config

    @staticmethod
    def _scaled(value: Any, factor: float, bounds: Any) -> Any:
        new = value * factor
        if bounds is not None:
            new = min(max(new, bounds[0]), bounds[1])
        if isinstance(value, int) and not isinstance(value, bool):
            return max(int(round(new)), 1) if value > 0 else int(round(new))
        return float(new)

    def _valid(self, values: dict[str, Any]) -> bool:
        try:
            with_values(parse_config(self.base, "base"), values)
        except InputError:  # the config refuses this value
            return False
        return True

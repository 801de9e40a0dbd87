"""Model classes by the ``kind`` their ``spec()`` records: a checkpoint rebuilds its model
from ``meta.json`` through here, whatever the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raybm.errors import InputError
from raybm.models.base import EnergyModel
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.models.neural import ConvEnergy, MLPEnergy
from raybm.models.rbm import BernoulliRBM, PottsRBM

MODEL_CLASSES: dict[str, type[EnergyModel]] = {
    cls.__name__: cls for cls in (BernoulliRBM, PottsRBM, GaussianEnergy, GaussianMixtureEnergy,
                                  MLPEnergy, ConvEnergy)
}


def model_from_spec(spec: dict[str, Any], where: str | Path = "meta.json") -> EnergyModel:
    """The (uninitialised) model a recorded ``spec`` describes; a one-line error naming
    ``where`` for an unknown kind or a spec that does not fit it."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    cls = MODEL_CLASSES.get(kind)
    if cls is None:
        raise InputError(where, "model.kind", f"unknown model kind {kind!r} (known: "
                         f"{', '.join(MODEL_CLASSES)})")
    try:
        return cls.from_spec(spec)
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(where, "model", f"not a valid {kind} spec ({err})") from None

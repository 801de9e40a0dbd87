"""The energy-model contract shared by RBMs and neural energies (DESIGN.md, "Energy model").

A model is an ``nn.Module`` with

    energy(x, cond=None) -> (n,)

the energy of each walker whose density is ``exp(-energy) / Z``: for an RBM its free energy
(hiddens summed out) with the label as the condition; for a neural EBM its output; for a
noise-conditioned energy the noise level as the condition. Estimators only ever call this (and
``grad_energy`` where a kernel needs ``d energy / dx``), so a surrogate loss
``mean E(data) - sum_i w_i E(x_i)`` is the same code for every model.

Hooks a model may need are declared here with neutral defaults, so the trainer calls them
unconditionally instead of asking a model what it has:

- ``post_update()``: after every optimizer step (an RBM re-fixes its zero-sum gauge);
- ``kick_(gen, std)``: leave an exactly-sampled start that is a stationary point of training
  (an RBM without couplings gets ``N(0, std^2)`` couplings; nothing by default);
- ``offers_centering``: whether the centred gradient (Melchior et al. 2016), defined through
  an RBM's visible/hidden offsets, applies to this model.

The model never picks its sampler: sampling lives in ``raybm.samplers``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn


class EnergyModel(nn.Module, ABC):
    """An energy ``E_theta(x | cond)``; see the module docstring.

    ``event_shape``: the shape of one walker (``(n_visible,)``, ``(d,)``, ``(1, 28, 28)``),
    what a kernel's ``init`` draws.
    """

    offers_centering: ClassVar[bool] = False
    event_shape: tuple[int, ...]

    @abstractmethod
    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-walker energy, shape ``(n,)``."""

    def grad_energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``d energy / dx`` per walker (autograd; a model with a closed form may override).

        Computed on a detached copy of ``x``: a sampler's step must not build a graph into
        the parameters' gradients."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x, cond).sum(), x)
        return grad

    def post_update(self) -> None:
        """Called after every optimizer step (nothing by default)."""

    def kick_(self, gen: torch.Generator, std: float) -> None:
        """Perturb the parameters that an exact start leaves at a stationary point (nothing
        by default). ``gen`` is the same on every rank: this is a parameter change."""

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
- ``before_change`` / ``energy_change``: the change of the walkers' energies across a
  parameter change (a Jarzynski walker's work): the difference of two energies by default, in
  closed form from the parameters' change for an RBM;
- ``offers_centering``: whether the centred gradient (Melchior et al. 2016), defined through
  an RBM's visible/hidden offsets, applies to this model.

The model never picks its sampler: sampling lives in ``raybm.samplers``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn


class EnergyModel(nn.Module, ABC):
    """An energy ``E_theta(x | cond)``; see the module docstring.

    ``event_shape``: the shape of one walker (``(n_visible,)``, ``(d,)``, ``(1, 28, 28)``),
    what a kernel's ``init`` draws.
    """

    offers_centering: ClassVar[bool] = False
    # The gradient of a weighted sum of energies in closed form
    # (:meth:`weighted_energy_gradient`): an RBM's sufficient statistics as matmuls. Without
    # it estimators take autograd through ``energy``.
    closed_form_gradient: ClassVar[bool] = False
    # log Z in closed form for every value of the parameters (a Gaussian, a mixture): the
    # live and final log-likelihoods are exact; otherwise a 2-D energy gets quadrature.
    closed_form_log_z: ClassVar[bool] = False
    event_shape: tuple[int, ...]
    n_labels: int = 0  # label values the model is conditioned on (0: unconditional)

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The constructor arguments as JSON-able values, with ``kind`` (the class name):
        what a checkpoint records to rebuild the model (``models.registry``)."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> "EnergyModel":
        """The model :meth:`spec` describes (parameters to be loaded)."""

    def log_partition(self) -> float | None:
        """``log Z`` in closed form, or None when the model has none (exact enumeration and
        AIS live in ``raybm.metrics``)."""
        return None

    @abstractmethod
    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Per-walker energy, shape ``(n,)``."""

    def weighted_energy_gradient(self, x: torch.Tensor, cond: torch.Tensor | None,
                                 coef: torch.Tensor, precision: str = "fp32",
                                 visible_field: torch.Tensor | None = None,
                                 compiled: bool = False, value: bool = True
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """``sum_b coef_b energy(x_b, cond_b)`` (a 0-d float64 tensor) and its gradient with
        respect to every parameter, by name, in closed form; ``precision`` the sampler's
        matmul precision ("fp32": the parameters' dtype, "bf16", or "digits": int8 digit
        products where the model has them, else as fp32).
        ``visible_field``: the part of the model's field that depends on ``x`` alone, as a
        sampler or the centring computed it on these parameters (an RBM's ``x W``), for all
        the rows or the first
        ``len(visible_field)`` of them, reused instead of recomputed; None: computed here.
        ``compiled``: its elementwise loops through ``torch.compile``, as the sampler's
        (``Kernel.compiled``). ``value=False``: the sum is not needed (a zero stands in for
        it) and what only it needs may be skipped; the gradient is the same. None where
        these inputs have no closed form (the caller takes autograd). Only for a model that
        declares ``closed_form_gradient``."""
        raise NotImplementedError(f"{type(self).__name__} declares no closed-form gradient")

    def energy_and_grad(self, x: torch.Tensor, cond: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """``energy(x)`` (detached) and ``d energy / dx`` per walker: one forward and one
        backward pass by autograd; a model with a closed form overrides it (the Langevin
        kernels call this once per step).

        Computed on a detached copy of ``x``: a sampler's step must not build a graph into
        the parameters' gradients."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            e = self.energy(xg, cond)
            (grad,) = torch.autograd.grad(e.sum(), xg)
        return e.detach(), grad

    def grad_energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``d energy / dx`` per walker."""
        return self.energy_and_grad(x, cond)[1]

    # ---- derivatives a second-order method needs (score matching, diffusion CD) ----------
    # Autograd by default; a model with a closed form overrides them. With ``create_graph``
    # the result keeps its graph into the parameters (a loss that differentiates it again);
    # without, it is detached.

    def score(self, x: torch.Tensor, cond: torch.Tensor | None = None,
              create_graph: bool = False) -> torch.Tensor:
        """``-d energy / dx`` per walker, shaped like ``x``."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg, cond).sum(), xg,
                                          create_graph=create_graph)
        return -grad if create_graph else -grad.detach()

    def laplacian(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                  create_graph: bool = False) -> torch.Tensor:
        """``sum_i d^2 energy / dx_i^2`` per walker, ``(n,)``, exactly: one more backward
        pass per coordinate of a walker (``d`` passes; :meth:`hutchinson_laplacian` costs one
        per probe). Walkers are independent, so the sums over walkers separate."""
        n = x.shape[0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg, cond).sum(), xg, create_graph=True)
            grad = grad.reshape(n, -1)
            total = torch.zeros(n, dtype=grad.dtype, device=grad.device)
            for i in range(grad.shape[1]):
                (row,) = torch.autograd.grad(grad[:, i].sum(), xg, retain_graph=True,
                                             create_graph=create_graph)
                total = total + row.reshape(n, -1)[:, i]
        return total if create_graph else total.detach()

    def hutchinson_laplacian(self, gen: torch.Generator, x: torch.Tensor,
                             cond: torch.Tensor | None = None, n_probes: int = 1,
                             create_graph: bool = False) -> torch.Tensor:
        """Unbiased estimate of :meth:`laplacian`: the mean over ``n_probes`` Rademacher
        vectors ``v`` of ``v^T (Hessian of the energy) v`` (Hutchinson 1989), one
        Hessian-vector product per probe; the probes are drawn from ``gen``."""
        n = x.shape[0]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg, cond).sum(), xg, create_graph=True)
            total = torch.zeros(n, dtype=grad.dtype, device=grad.device)
            for _ in range(n_probes):
                v = (torch.randint(0, 2, x.shape, generator=gen) * 2 - 1).to(grad.dtype)
                (hv,) = torch.autograd.grad((grad * v).sum(), xg, retain_graph=True,
                                            create_graph=create_graph)
                total = total + (hv * v).reshape(n, -1).sum(-1)
        total = total / n_probes
        return total if create_graph else total.detach()

    def before_change(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                      precision: str = "fp32") -> Any:
        """What :meth:`energy_change` needs of the parameters about to change (an optimizer
        step, a kick), for the walkers ``x`` (``cond``): by default their energies in float64.
        ``precision``: the sampler's matmul precision ("fp32", "bf16" or "digits"), which a
        model may use where its products allow (an RBM)."""
        with torch.no_grad():
            return self.energy(x, cond).double()

    def energy_change(self, before: Any, x: torch.Tensor,
                      cond: torch.Tensor | None = None) -> torch.Tensor:
        """``E_theta'(x) - E_theta(x)`` per walker, float64 ``(n,)``: ``theta'`` the current
        parameters, ``before`` what :meth:`before_change` returned under ``theta`` for the same
        ``x`` and ``cond`` (a Jarzynski walker's work). By default the difference of the two
        energies."""
        with torch.no_grad():
            return self.energy(x, cond).double() - before

    def post_update(self) -> None:
        """Called after every optimizer step (nothing by default)."""

    def kick_(self, gen: torch.Generator, std: float) -> None:
        """Perturb the parameters that an exact start leaves at a stationary point (nothing
        by default). ``gen`` is the same on every rank: this is a parameter change."""

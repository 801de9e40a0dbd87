"""Langevin kernels for continuous walkers: ULA and MALA (``samplers.base.Kernel``).

For an energy ``E(x)`` (density ``pi(x) ~ exp(-E(x))``) and step size ``h``, one step proposes

    y = x - h grad E(x) + sqrt(2 h) xi,        xi ~ N(0, I),

a Gaussian ``q(y | x) = N(y; x - h grad E(x), 2 h I)``, i.e.
``log q(y | x) = -|y - x + h grad E(x)|^2 / (4 h) + const``.

- **ULA** (unadjusted Langevin) always moves to ``y``. It does not leave ``pi`` invariant: for a
  Gaussian of variance ``s^2`` its stationary variance is ``s^2 / (1 - h / (2 s^2))``, an O(h)
  bias (Roberts & Tweedie 1996). Its ``info.log_weight_increment`` is what a Jarzynski walker
  must add to stay unbiased (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414, with
  the ULA step as forward kernel and the same step run backwards as backward kernel):

      log [pi(y) q(x | y)] - log [pi(x) q(y | x)]
        = -E(y) + E(x) - |x - y + h grad E(y)|^2 / (4 h) + |y - x + h grad E(x)|^2 / (4 h),

  summed over the ``k`` steps. (The estimator adds the parameter change's own work,
  ``-E_new(x) + E_old(x)``, separately: the two sum to the research's update.)
- **MALA** accepts ``y`` with probability ``min(1, exp(that same log ratio))`` (Roberts &
  Tweedie 1996; Metropolis-Hastings), so it leaves ``pi`` exactly invariant and needs no
  log-weight increment; ``info.acceptance`` is the mean acceptance.

**Box constraint** (``box=(low, high)``, e.g. images in [-1, 1]): the target becomes ``pi``
restricted to the box, and a proposal that leaves the box is refused: the walker stays where it
is. For MALA this is exactly a Metropolis rejection (``pi(y) = 0`` outside), so the kernel
stays invariant for the restricted target. For ULA the step becomes "move to ``y`` if ``y`` is in
the box, else stay"; a stay has the same probability forwards and backwards and no energy
change, so its log-weight increment is 0, and an accepted move keeps the formula above: the
Jarzynski weights stay exact. (Clipping ``y`` into the box, the common alternative, would put
mass on the faces that no weight accounts for.)

Steps are taken in the walkers' dtype (float32 for data); the log-weight increments are
accumulated in float64, as the weights are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from raybm.models.base import EnergyModel
from raybm.samplers.base import KernelInfo
from raybm.walkers import WalkerState


def _sum_rows(x: torch.Tensor) -> torch.Tensor:
    """Per-walker sum over every non-batch dimension (vectors and images alike)."""
    return x.reshape(x.shape[0], -1).sum(1)


def _in_box(y: torch.Tensor, box: tuple[float, float] | None) -> torch.Tensor | None:
    if box is None:
        return None
    return _sum_rows(((y < box[0]) | (y > box[1])).to(torch.int32)) == 0


@dataclass(frozen=True)
class _Langevin:
    step_size: float
    box: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be a positive number, got {self.step_size}")
        if self.box is not None and not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {self.box}")

    def init(self, gen: torch.Generator, model: EnergyModel, n: int,
             label: torch.Tensor | None = None, shape: tuple[int, ...] | None = None
             ) -> WalkerState:
        """``n`` walkers from N(0, I) (uniform in the box when there is one), of per-walker
        ``shape`` (default: the model's ``event_shape``)."""
        shape = tuple(shape if shape is not None else model.event_shape)
        if self.box is None:
            x = torch.randn((n, *shape), generator=gen)
        else:
            low, high = self.box
            x = low + (high - low) * torch.rand((n, *shape), generator=gen)
        return WalkerState.unweighted(x, label)

    def _propose(self, gen: torch.Generator, x: torch.Tensor, g_x: torch.Tensor) -> torch.Tensor:
        """One Langevin proposal ``y = x - h grad E(x) + sqrt(2h) xi``."""
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        return x - self.step_size * g_x + math.sqrt(2 * self.step_size) * noise

    def _steps(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int,
               metropolis: bool) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """``k`` Langevin steps. A proposal is kept when it lies in the box and, with
        ``metropolis``, passes the Metropolis-Hastings test; otherwise the walker stays.
        Returns the walkers, the summed log ratio of the kept moves (ULA's log-weight
        increment; a stay adds 0), and the mean fraction of proposals kept (None for k = 0).
        ``E`` and ``grad E`` at the proposal are the next step's at the walker, so each step
        costs one ``energy_and_grad``."""
        x, cond = state.x, state.label
        shape = (-1, *[1] * (x.dim() - 1))
        increment = torch.zeros(x.shape[0], dtype=torch.float64)
        kept = 0.0
        if k:
            e_x, g_x = model.energy_and_grad(x, cond)
        for _ in range(k):
            y = self._propose(gen, x, g_x)
            e_y, g_y = model.energy_and_grad(y, cond)
            log_ratio = self._log_ratio(x, y, e_x, g_x, e_y, g_y)
            keep = _in_box(y, self.box)  # None: every proposal is kept
            if metropolis:
                u = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
                accept = torch.log(u) < log_ratio  # NaN (overflow) compares False: rejected
                keep = accept if keep is None else accept & keep
            if keep is None:
                x, e_x, g_x = y, e_y, g_y
                kept += 1.0
            else:
                x = torch.where(keep.view(shape), y, x)
                e_x = torch.where(keep, e_y, e_x)
                g_x = torch.where(keep.view(shape), g_y, g_x)
                log_ratio = torch.where(keep, log_ratio, torch.zeros_like(log_ratio))
                kept += float(keep.double().mean())
            increment += log_ratio
        return x.detach(), increment, (kept / k if k else None)

    def _log_ratio(self, x: torch.Tensor, y: torch.Tensor, e_x: torch.Tensor,
                   g_x: torch.Tensor, e_y: torch.Tensor, g_y: torch.Tensor) -> torch.Tensor:
        """``log [pi(y) q(x | y)] - log [pi(x) q(y | x)]`` per walker, in float64."""
        h = self.step_size
        fwd = _sum_rows((y - x + h * g_x).double() ** 2) / (4 * h)
        back = _sum_rows((x - y + h * g_y).double() ** 2) / (4 * h)
        return -e_y.double() + e_x.double() - back + fwd


@dataclass(frozen=True)
class ULA(_Langevin):
    """Unadjusted Langevin: always moves; reports the Jarzynski log-weight increment."""

    name: ClassVar[str] = "ula"
    invariant: ClassVar[bool] = False

    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int
             ) -> tuple[WalkerState, KernelInfo]:
        x, increment, moved = self._steps(gen, state, model, k, metropolis=False)
        extra = {"moved": moved} if (self.box is not None and k) else {}
        return state.replace(x=x), KernelInfo(log_weight_increment=increment, extra=extra)


@dataclass(frozen=True)
class MALA(_Langevin):
    """Metropolis-adjusted Langevin: exactly invariant; reports the acceptance rate."""

    name: ClassVar[str] = "mala"
    invariant: ClassVar[bool] = True

    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int
             ) -> tuple[WalkerState, KernelInfo]:
        x, _, accepted = self._steps(gen, state, model, k, metropolis=True)
        return state.replace(x=x), KernelInfo(acceptance=accepted)

"""Langevin kernels for continuous walkers: ULA and MALA (``samplers.base.Kernel``).

For an energy ``E(x)`` (density ``pi(x) ~ exp(-E(x))``), step size ``h`` and noise standard
deviation ``sigma`` (``noise_std``; by default ``sqrt(2 h)``), one step proposes

    y = x - h grad E(x) + sigma xi,        xi ~ N(0, I),

a Gaussian ``q(y | x) = N(y; x - h grad E(x), sigma^2 I)``, i.e.
``log q(y | x) = -|y - x + h grad E(x)|^2 / (2 sigma^2) + const`` (``/ (4 h)`` by default).

- **ULA** (unadjusted Langevin) always moves to ``y``. It does not leave ``pi`` invariant: for a
  Gaussian of variance ``s^2`` its stationary variance (default noise) is
  ``s^2 / (1 - h / (2 s^2))``, an O(h) bias (Roberts & Tweedie 1996). Its
  ``info.log_weight_increment`` is what a Jarzynski walker must add to stay unbiased (Carbone,
  Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414, with the ULA step as forward kernel and
  the same step run backwards as backward kernel):

      log [pi(y) q(x | y)] - log [pi(x) q(y | x)]
        = -E(y) + E(x) - |x - y + h grad E(y)|^2 / (2 sigma^2)
                       + |y - x + h grad E(x)|^2 / (2 sigma^2),

  summed over the ``k`` steps. (The estimator adds the parameter change's own work,
  ``-E_new(x) + E_old(x)``, separately: the two sum to the research's update.)
- **MALA** accepts ``y`` with probability ``min(1, exp(that same log ratio))`` (Roberts &
  Tweedie 1996; Metropolis-Hastings), so it leaves ``pi`` exactly invariant and needs no
  log-weight increment; ``info.acceptance`` is the mean acceptance.

**Noise other than sqrt(2 h)** (``noise_std``; the Jarzynski research's MNIST protocol takes
``h = 5e-5`` with ``sigma = 1e-4``). The step is then no longer the Euler-Maruyama step of the
Langevin diffusion for ``pi`` (drift ``-h grad E`` with noise ``sigma^2`` discretises the one
for ``pi^(2 h / sigma^2)``), but neither statement above needed ``sigma^2 = 2 h``. For any
forward kernel ``q`` whose backward kernel ``q(x | y)`` is positive wherever ``q(y | x)`` is
(here the same Gaussian step from ``y``), ``log [pi(y) q(x | y)] - log [pi(x) q(y | x)]`` is an
exact annealed-importance / Jarzynski log-weight increment for the target ``pi`` (Crooks 1998,
J. Stat. Phys. 90:1481; Neal 2001, "Annealed importance sampling", Stat. Comput. 11:125;
Carbone et al. 2023 above): ULA's weights stay exact, its walkers only drift towards another
law, which the weights then correct. And a Metropolis-Hastings test with any proposal density
leaves ``pi`` exactly invariant: MALA stays exact, with another acceptance. (An adapted MALA
step size moves ``h`` only; a given ``sigma`` stays.)

**Box constraint** (``box=(low, high)``, e.g. images in [-1, 1]): the target becomes ``pi``
restricted to the box, and ``box_rule`` says what becomes of a proposal that leaves it.

``box_rule="reflect"`` (the default): the Gaussian proposal is *reflected* into the box:
``z ~ q(. | x)`` is folded back at the faces, coordinate by coordinate, as often as needed
(``_reflect``). The reflected proposal has a density on the box that is known in closed form,
the sum of the Gaussian over every unfolded point that folds onto ``y``:

    q_R(y | x) = prod_i sum_{n in Z} [N(y_i + 2nW; m_i, sigma^2)
                                      + N(2 low - y_i + 2nW; m_i, sigma^2)],

with ``m = x - h grad E(x)`` and ``W = high - low`` (``_log_q`` sums every unfolded point that
weighs more than ``e^-50`` relative to the nearest, two to four at usual step sizes). Both
kernels then use ``q_R`` in place of ``q`` in the log ratio above: MALA's Metropolis test makes
it exactly invariant for the restricted target, and ULA's increment keeps the Jarzynski
weights exact. Every proposal lands in the box, so walkers move at every step in any
dimension. (Refusing proposals that leave the box is also exact, but in 784 dimensions it
refuses nearly all of them: with ``h = 0.01`` a walker with ~80 pixels within one noise
standard deviation of a face stays put with probability ~1 - e^-25, measured as "moved 0.0"
on MNIST. Clipping onto the faces would put mass there that no density accounts for.)

``box_rule="revert"`` (the rule of the Jarzynski research's MNIST code): a proposed coordinate
that leaves the box is *reverted* to the walker's current value, coordinate by coordinate.
With ``m = x - h grad E(x)`` and ``z ~ N(m, sigma^2 I)``, ``y_i = z_i`` if
``low <= z_i <= high`` and ``y_i = x_i`` otherwise. Per coordinate the kernel ``q_V`` has the
density ``N(y_i; m_i, sigma^2)`` where the coordinate moved (``y_i != x_i``) and an atom at
``y_i = x_i`` of mass

    P_out(m_i) = Phi((low - m_i) / sigma) + Phi((m_i - high) / sigma).

The backward kernel from ``y`` (mean ``m' = y - h grad E(y)``) moves the same coordinates back
(density ``N(x_i; m'_i, sigma^2)``) and keeps the same ones (mass ``P_out(m'_i)``): both are
densities against the same product of Lebesgue measure (moved) and point masses (kept), and

    log [pi(y) q_V(x | y)] - log [pi(x) q_V(y | x)]
      = -E(y) + E(x) + sum_moved [(y_i - m_i)^2 - (x_i - m'_i)^2] / (2 sigma^2)
                     + sum_kept [log P_out(m'_i) - log P_out(m_i)],

the Gaussians' normalising constants cancelling (as many coordinates move each way). Both
kernels use it in place of the reflected ratio, with the same guarantees (the walkers must
start in the box, as ``init`` draws them).

In floating point ``y_i == x_i`` also happens when ``z_i`` lands inside the box within half a
lattice spacing of ``x_i``: in float32 at ``sigma = 1e-4`` and ``|x_i|`` near 1 (spacing
``6e-8``) with probability ~2e-4 per coordinate and step, 0.05 to 0.1 per 784-pixel walker and
step. Far from a face the formula above would price it as a revert, whose mass is
``log P_out ~ -(distance / sigma)^2 / 2`` (minus millions: a revert there never happens), by
the difference of two such masses, itself rounding noise in float32 (a test measures -150
nats where the move's formula gives -0.016). The atom is therefore given the mass the lattice
really puts there, ``P_out(m_i) + N(x_i; m_i, sigma^2) delta_i`` with ``delta_i`` the width
of the cell of reals that round to ``x_i`` (``_log_q_revert``): where ``P_out`` dominates (a
coordinate at a face) it is the formula above, to a relative ~``delta / sigma``; where it is
negligible the cell widths cancel and the stay weighs as the tiny move it is, continuously
with the moves around it.

Steps are taken in the walkers' dtype (float32 for data); the log-weight increments are
accumulated in float64, as the weights are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from raybm.models.base import EnergyModel
from raybm.samplers.base import KernelBase, KernelInfo, MatmulSupport
from raybm.walkers import WalkerState


def _sum_rows(x: torch.Tensor) -> torch.Tensor:
    """Per-walker sum over every non-batch dimension (vectors and images alike)."""
    return x.reshape(x.shape[0], -1).sum(1)


def _reflect(z: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Fold ``z`` into ``[low, high]`` by reflecting at the faces as often as needed: with
    ``t = (z - low) mod 2W`` the fold is ``low + t`` for ``t <= W`` and ``low + 2W - t`` above,
    i.e. ``high - |t - W|``."""
    width = high - low
    t = torch.remainder(z - low, 2 * width)
    return t.sub_(width).abs_().neg_().add_(high).clamp_(low, high)


def _log_q_ratio(x: torch.Tensor, y: torch.Tensor, g_x: torch.Tensor, g_y: torch.Tensor,
                 h: float, noise_std: float | None = None) -> torch.Tensor:
    """``log q(x | y) - log q(y | x)`` per walker for the unboxed Langevin proposal
    ``N(. - h grad E(.), sigma^2 I)``, in float64, in the difference form

        [2h d.(g_x + g_y) - h^2 (g_y - g_x).(g_y + g_x)] / (2 sigma^2),   d = y - x,

    the same number as ``_log_q(x, y - h g_y) - _log_q(y, x - h g_x)`` in exact arithmetic,
    without its two squared norms of size ``d sigma^2`` that cancel to a far smaller
    difference: the old form needed float64 copies of the walkers to keep that difference;
    this one keeps it in the walkers' dtype (two products and two row sums, ~1e-7 of the
    result in float32), and only the per-walker sums are float64."""
    two_var = 4 * h if noise_std is None else 2 * noise_std * noise_std
    g_sum = g_x + g_y
    cross = _sum_rows((y - x).mul_(g_sum)).double()
    norms = _sum_rows((g_y - g_x).mul_(g_sum)).double()
    return (2 * h * cross - h * h * norms) / two_var


def _log_q(y: torch.Tensor, mean: torch.Tensor, h: float,
           box: tuple[float, float] | None, noise_std: float | None = None) -> torch.Tensor:
    """Per-walker ``log q(y | x)`` of the proposal ``N(mean, sigma^2 I)`` (reflected into
    ``box`` when there is one), in float64, up to the constant ``-d/2 log(2 pi sigma^2)`` that
    every ratio cancels; ``sigma = noise_std``, or ``sqrt(2h)`` when None (``sigma^2 = 2h``).

    In the box, per coordinate, ``q_R(y | m)`` sums the Gaussian over the unfolded points
    ``y + nP`` and ``2 low - y + nP`` (``P = 2W``). That set is unchanged by reflecting ``m``
    about ``low`` or moving it by ``P``, so ``m`` is first folded into the box too; then with
    ``u = |y - m|`` (at most ``W``) and ``b = (y - low) + (m - low)`` (in ``[0, P]``) the
    distances to the unfolded points are ``u, kP - u, kP + u`` and ``b, kP + b, kP - b``
    (``k >= 1``). The nearest is within ``W`` (``u <= W``); every point that can weigh more
    than ``e^-50`` relative to it is summed, the rest are left out (at ``h = 0.01`` in
    [-1, 1]: ``u, b, P - u, P - b``)."""
    # 2 sigma^2; the default written as before, 4h (the same float operations).
    two_var = 4 * h if noise_std is None else 2 * noise_std * noise_std
    if box is None:
        return -_sum_rows((y - mean).double() ** 2) / two_var
    low, high = box
    period, scale = 2 * (high - low), 1 / two_var
    m = _reflect(mean, low, high)
    u = (y - m).abs_()
    b = m.add_(y).sub_(2 * low)  # m is a fresh tensor: reused
    near = torch.minimum(u, b)
    t1, t2 = torch.empty_like(u), torch.empty_like(u)
    torch.minimum(near, torch.sub(b, period, out=t1).neg_(), out=near)
    total = torch.zeros_like(u)
    # Per-coordinate work in place and in the walkers' dtype (allocating a tensor per
    # operation cost ten times the arithmetic here); the per-walker sums in float64.
    points = [(u, 1, 0.0), (b, 1, 0.0)]
    width2, k = (period / 2) ** 2, 1
    # The points with n != 0 are, at the least: kP - u >= kP - W, kP + u and kP + b >= kP,
    # kP - b >= (k - 1)P. One whose least distance D has (D^2 - W^2) / (2 sigma^2) >= 50
    # weighs below the floor against a nearest within W and is left out: at sigma^2 < 0.12
    # in [-1, 1] (h < 0.06 with the default noise) only P - u and P - b are added; larger
    # steps take as many as they need.
    while ((k - 1) * period) ** 2 - width2 < 50 / scale or k == 1:
        for v, sign, least in ((u, -1, k * period - period / 2), (u, 1, k * period),
                               (b, 1, k * period), (b, -1, (k - 1) * period)):
            if least**2 - width2 < 50 / scale:
                points.append((v, sign, k * period))
        k += 1
    for v, sign, shift in points:
        # d^2 - near^2 = (d - near)(d + near) for d = sign v + shift, floored at -50 (the
        # nearest adds 1, and e^-50 is far below float32's resolution): exp of a hugely
        # negative argument gives subnormal numbers, 25x slower for no difference.
        torch.mul(v, sign, out=t1).add_(shift).sub_(near)
        torch.mul(v, sign, out=t2).add_(shift).add_(near)
        total.add_(t1.mul_(t2).mul_(-scale).clamp_min_(-50.0).exp_())
    return _sum_rows(total.log_().sub_(near.mul_(near).mul_(scale)).double())


def _log_q_revert(y: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, noise_std: float,
                  box: tuple[float, float]) -> torch.Tensor:
    """Per-walker ``log q_V(y | x)`` of the *reverting* proposal (module docstring): from ``x``
    with Gaussian mean ``mean`` and standard deviation ``noise_std``, a coordinate that left
    ``box`` kept ``x_i``. In float64, up to ``-(number of moved coordinates) log(sigma
    sqrt(2 pi))``, which is the same forwards and backwards (the same coordinates move both
    ways) and cancels in every ratio.

    A moved coordinate (``y_i != x_i``) adds ``-(y_i - m_i)^2 / (2 sigma^2)``; a kept one the
    log of its atom, ``P_out(m_i) + N(x_i; m_i, sigma^2) delta_i``: the Gaussian's mass outside
    the box, ``Phi((low - m_i) / sigma) + Phi((m_i - high) / sigma)`` by ``log_ndtr`` (accurate
    far into the tails), plus that of the float lattice's cell around ``x_i`` (width
    ``delta_i``, half the gap between its neighbours), which only counts where the box is far.
    Per coordinate in the walkers' dtype (a kept coordinate's terms are moderate: one of
    ``e^-50`` or less is below the dtype's resolution against the largest, and the atom of an
    event that happened is not that small), the per-walker sums in float64."""
    low, high = box
    inv_two_var = 1 / (2 * noise_std * noise_std)
    # -(y - m)^2 / (2 sigma^2): the moved coordinates' term, and the cell's with its constant.
    moved_term = torch.sub(y, mean).square_().mul_(-inv_two_var)
    # Per-coordinate work in place (one tensor per operation costs more than the arithmetic).
    cell = torch.nextafter(x, x.new_tensor(math.inf))
    cell.sub_(torch.nextafter(x, x.new_tensor(-math.inf))).mul_(0.5)
    cell = cell.log_().add_(moved_term).sub_(math.log(noise_std * math.sqrt(2 * math.pi)))
    below = torch.special.log_ndtr(torch.sub(low, mean).div_(noise_std))
    above = torch.special.log_ndtr(torch.sub(mean, high).div_(noise_std))
    # log(e^below + e^above + e^cell), the smaller terms floored at e^-50 under the largest
    # (far below the dtype's resolution; a deeper exp would give subnormals, slow for nothing).
    top = torch.maximum(below, above)
    torch.maximum(top, cell, out=top)
    total = below.sub_(top).clamp_min_(-50.0).exp_()
    total.add_(above.sub_(top).clamp_min_(-50.0).exp_())
    total.add_(cell.sub_(top).clamp_min_(-50.0).exp_())
    kept = total.log_().add_(top)
    return _sum_rows(torch.where(y != x, moved_term, kept).double())


class NoiseStart:
    """The start of a continuous kernel's walkers (Langevin, short-run, FlowMC): N(0, I), or
    uniform in the kernel's ``box`` when it has one."""

    box: tuple[float, float] | None

    @property
    def start(self) -> str:
        return "N(0, I)" if self.box is None else f"uniform noise in {list(self.box)}"

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


@dataclass(frozen=True)
class _Langevin(NoiseStart, KernelBase):
    """``noise_std``: the proposal's noise standard deviation ``sigma`` (None: ``sqrt(2 h)``);
    ``box_rule``: ``"reflect"`` or ``"revert"``, what becomes of a proposal that leaves the
    box (ignored without one). Both in the module docstring."""

    step_size: float
    box: tuple[float, float] | None = None
    noise_std: float | None = None
    box_rule: str = "reflect"

    BOX_RULES: ClassVar[tuple[str, ...]] = ("reflect", "revert")

    def __post_init__(self) -> None:
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"step_size must be a positive number, got {self.step_size}")
        if self.box is not None and not self.box[0] < self.box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {self.box}")
        if self.noise_std is not None and not (self.noise_std > 0
                                               and math.isfinite(self.noise_std)):
            raise ValueError("noise_std must be a positive finite number (or None for "
                             f"sqrt(2 step_size)), got {self.noise_std}")
        if self.box_rule not in self.BOX_RULES:
            raise ValueError(f"box_rule must be one of {list(self.BOX_RULES)}, got "
                             f"{self.box_rule!r}")

    def _propose(self, gen: torch.Generator, x: torch.Tensor, g_x: torch.Tensor) -> torch.Tensor:
        """One Langevin proposal ``y = x - h grad E(x) + sigma xi`` (reflected into the box,
        or its coordinates that left it reverted to ``x``, when there is one)."""
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype)
        sigma = math.sqrt(2 * self.step_size) if self.noise_std is None else self.noise_std
        y = x - self.step_size * g_x + sigma * noise
        if self.box is None:
            return y
        if self.box_rule == "reflect":
            return _reflect(y, *self.box)
        low, high = self.box
        return torch.where((y >= low) & (y <= high), y, x)  # NaN compares False: reverted

    def _steps(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int,
               metropolis: bool, weigh: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """``k`` Langevin steps. With ``metropolis`` a proposal is kept when it passes the
        Metropolis-Hastings test (otherwise the walker stays); without, every one is kept.
        Returns the walkers, the summed log ratio of the kept moves (ULA's log-weight
        increment; zero with ``weigh=False`` and no ``metropolis``, where nothing reads it and
        it is not computed), and the mean fraction of proposals kept (None for k = 0).
        ``E`` and ``grad E`` at the proposal are the next step's at the walker, so each step
        costs one ``energy_and_grad`` (and the call one more, at the start; without the
        ratio, k in all)."""
        x, cond = state.x, state.condition
        shape = (-1, *[1] * (x.dim() - 1))
        increment = torch.zeros(x.shape[0], dtype=torch.float64)
        # Summed on the device and read once per call: no host sync per step.
        kept = torch.zeros((), dtype=torch.float64)
        if not (metropolis or weigh):
            # Nothing reads the ratio: the moves alone, one gradient each (the ratio would
            # need E and grad E at the last proposal too: k + 1 evaluations).
            for _ in range(k):
                x = self._propose(gen, x, model.grad_energy(x, cond))
            return x.detach(), increment, (1.0 if k else None)
        if k:
            e_x, g_x = model.energy_and_grad(x, cond)
        for _ in range(k):
            y = self._propose(gen, x, g_x)
            e_y, g_y = model.energy_and_grad(y, cond)
            log_ratio = self._log_ratio(x, y, e_x, g_x, e_y, g_y)
            if not metropolis:
                x, e_x, g_x = y, e_y, g_y
                kept += 1.0
            else:
                u = torch.rand(x.shape[0], generator=gen, dtype=torch.float64)
                keep = torch.log(u) < log_ratio  # NaN (overflow) compares False: rejected
                x = torch.where(keep.view(shape), y, x)
                e_x = torch.where(keep, e_y, e_x)
                g_x = torch.where(keep.view(shape), g_y, g_x)
                log_ratio = torch.where(keep, log_ratio, torch.zeros_like(log_ratio))
                kept += keep.double().mean()
            increment += log_ratio
        return x.detach(), increment, (float(kept) / k if k else None)

    def _log_ratio(self, x: torch.Tensor, y: torch.Tensor, e_x: torch.Tensor,
                   g_x: torch.Tensor, e_y: torch.Tensor, g_y: torch.Tensor) -> torch.Tensor:
        """``log [pi(y) q(x | y)] - log [pi(x) q(y | x)]`` per walker, in float64."""
        h = self.step_size
        if self.box is None:
            return -e_y.double() + e_x.double() + _log_q_ratio(x, y, g_x, g_y, h,
                                                               self.noise_std)
        if self.box_rule == "revert":
            sigma = math.sqrt(2 * h) if self.noise_std is None else self.noise_std
            back = _log_q_revert(x, y, y - h * g_y, sigma, self.box)
            fwd = _log_q_revert(y, x, x - h * g_x, sigma, self.box)
        else:
            back = _log_q(x, y - h * g_y, h, self.box, self.noise_std)
            fwd = _log_q(y, x - h * g_x, h, self.box, self.noise_std)
        return -e_y.double() + e_x.double() + back - fwd


@dataclass(frozen=True)
class ULA(_Langevin):
    """Unadjusted Langevin: always moves; reports the Jarzynski log-weight increment, unless
    built with ``weighs_moves=False`` (:meth:`for_run`: a run whose estimator does not read
    it, where it would cost ~15% of a step of the conv energy: the log ratio in float64)."""

    weighs_moves: bool = True
    name: ClassVar[str] = "ula"
    invariant: ClassVar[bool] = False

    def for_run(self, model: EnergyModel, support: MatmulSupport, draws: float = 0.0,
                weighs_moves: bool = True) -> "ULA":
        return replace(self, weighs_moves=weighs_moves)

    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int, *,
             clamp_label: bool = False) -> tuple[WalkerState, KernelInfo]:
        # The condition (label) is never moved by Langevin: clamp_label changes nothing.
        x, increment, _ = self._steps(gen, state, model, k, metropolis=False,
                                      weigh=self.weighs_moves)
        return state.replace(x=x), KernelInfo(
            log_weight_increment=increment if self.weighs_moves else None)


@dataclass(frozen=True)
class MALA(_Langevin):
    """Metropolis-adjusted Langevin: exactly invariant; reports the acceptance rate.

    With ``target_acceptance`` it adapts its step size after every update (:meth:`adapted`)
    towards that acceptance (0.574 is optimal in high dimension, Roberts & Rosenthal 1998):

        log h <- log h + adapt_rate (acceptance - target),

    the acceptance averaged over the ranks so that every rank keeps the same kernel. Each
    update's kernel is exact MALA for its own h (invariant for the current model), so
    Jarzynski weights need nothing more and PCD walkers stay targeted; h is kernel state,
    checkpointed, never a gradient statistic."""

    target_acceptance: float | None = None
    adapt_rate: float = 0.05
    name: ClassVar[str] = "mala"
    invariant: ClassVar[bool] = True

    @property
    def adapts_on(self) -> tuple[str, ...]:
        return ("acceptance",) if self.target_acceptance is not None else ()

    @property
    def info_names(self) -> tuple[str, ...]:
        return ("acceptance",) + (("step_size",) if self.target_acceptance is not None else ())

    def adapted(self, means: dict[str, float]) -> tuple["MALA", dict[str, float]]:
        if self.target_acceptance is None:
            return self, {}
        h = self.step_size * math.exp(self.adapt_rate
                                      * (means["acceptance"] - self.target_acceptance))
        return replace(self, step_size=h), {"step_size": h}

    def state_dict(self) -> dict[str, float]:
        # Only an adapted step size is state: a fixed one comes from the config (and a
        # resumed run may change it there).
        return {"step_size": self.step_size} if self.target_acceptance is not None else {}

    def with_state(self, state: dict[str, float]) -> "MALA":
        if self.target_acceptance is None or "step_size" not in state:
            return self
        return replace(self, step_size=float(state["step_size"]))

    def step(self, gen: torch.Generator, state: WalkerState, model: EnergyModel, k: int, *,
             clamp_label: bool = False) -> tuple[WalkerState, KernelInfo]:
        # The condition (label) is never moved by Langevin: clamp_label changes nothing.
        x, _, accepted = self._steps(gen, state, model, k, metropolis=True)
        return state.replace(x=x), KernelInfo(acceptance=accepted)

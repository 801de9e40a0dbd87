"""The kernel contract: a sampler is a value handed to estimators, not a module they import.

A kernel has two methods, the generator first and the model passed on every call (the state
holds only walkers, so the same state can be moved under new parameters):

    init(gen, model, n, label=None)               -> WalkerState
    step(gen, state, model, k, clamp_label=False) -> (WalkerState, KernelInfo)

``step`` applies ``k`` transitions. What the kernel knows goes in the info, never in the state:
the acceptance rate of a Metropolis-adjusted kernel, and, for a kernel that does not leave the
model's distribution invariant (ULA), the log-weight increment ``log q_back - log q_fwd`` per
walker that a Jarzynski estimator must add (Carbone et al. 2023, arXiv 2305.19414, eq. for the
discretised dynamics). ``invariant`` declares which case a kernel is, so an estimator that
needs exact invariance (Jarzynski without kernel corrections) can check it once, at build time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from raybm.walkers import WalkerState


@dataclass(frozen=True)
class MatmulSupport:
    """What every rank of a run multiplies natively or exactly, agreed over the ranks (the
    trainer's all-reduce) and handed to ``Kernel.for_run``, which picks its products from it.

    bf16: bf16 matmuls are native (``avx512_bf16`` / AMX, or a GPU), not emulated.
    int8: int8 products are summed exactly in 32 bits (VNNI / AMX-INT8): Gibbs' digits.
    """

    bf16: bool = False
    int8: bool = False


@dataclass
class KernelInfo:
    """What one ``step`` call knows beyond the new walkers.

    acceptance:        mean acceptance over walkers and steps (None: not a Metropolis kernel);
    log_weight_increment: ``(n,)`` float64 per-walker log-weight correction for a kernel that
                       does not leave the model invariant (None: invariant, nothing to add).
    """

    acceptance: float | None = None
    log_weight_increment: torch.Tensor | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """The scalar diagnostics, as training metrics."""
        out = dict(self.extra)
        if self.acceptance is not None:
            out["acceptance"] = self.acceptance
        return {f"{prefix}{k}": v for k, v in out.items()}


class Kernel(Protocol):
    """A Markov kernel on walkers (see the module docstring).

    A kernel that adapts itself while training (MALA's step size) declares the diagnostics it
    adapts on (``adapts_on``); after every update the trainer hands ``adapted`` their values
    averaged over the ranks and keeps the kernel it returns (with what it reports), and
    checkpoints its ``state_dict`` (restored by ``with_state``). :class:`KernelBase` gives
    the defaults of a kernel that does none of this."""

    name: ClassVar[str]
    invariant: ClassVar[bool]  # leaves the current model's distribution exactly invariant
    # Jarzynski can weight its moves exactly: invariant, or reporting the log-weight
    # increment of a move whose transition density is known (ULA). A kernel with clamps
    # and no known density (short-run Langevin) is not.
    exact_weights: ClassVar[bool]
    # The box (low, high) the kernel restricts the target to (images in [-1, 1]), or None:
    # an exact start must then draw the model restricted to it.
    box: tuple[float, float] | None
    adapts_on: tuple[str, ...]
    info_names: tuple[str, ...]
    # The matmul precision of its moves ("fp32": the parameters' own dtype, "bf16", or
    # "digits": Gibbs' int8 digit products, float32-class), which a closed-form gradient
    # of the same model takes too (digits: its x W from the same digits, X^T [c P | c]
    # from digits of its own).
    precision: str
    # Whether its elementwise loops run through torch.compile (Gibbs with sampler.compile
    # on); a closed-form gradient of the same model then compiles its own too.
    compiled: bool

    def adapted(self, means: dict[str, float]) -> tuple["Kernel", dict[str, float]]:
        ...

    def notes(self, use_gpu: bool) -> list[str]:
        ...

    def for_run(self, model: torch.nn.Module, support: MatmulSupport, draws: float = 0.0,
                weighs_moves: bool = True) -> "Kernel":
        """The kernel as it runs on ``model`` here: what its config left to the machine and
        the run decided (Gibbs' ``precision: auto`` and ``compile: auto``); its ``notes``
        then say what that came to. ``support``: what every rank of the run multiplies
        natively or exactly; ``draws``: about how many unit updates (walkers x units x
        steps) the whole run makes on one rank; ``weighs_moves``: the estimator reads the
        log-weight increments of moves (``KernelInfo.log_weight_increment``; Jarzynski),
        which a kernel may otherwise skip computing (ULA)."""
        ...

    def state_dict(self) -> dict[str, float]:
        ...

    def with_state(self, state: dict[str, float]) -> "Kernel":
        ...

    @property
    def start(self) -> str:
        """What ``init`` draws, in words (``raybm sample`` says it)."""
        ...

    def init(self, gen: torch.Generator, model: torch.nn.Module, n: int,
             label: torch.Tensor | None = None) -> WalkerState:
        ...

    def step(self, gen: torch.Generator, state: WalkerState, model: torch.nn.Module,
             k: int, *, clamp_label: bool = False) -> tuple[WalkerState, KernelInfo]:
        """``k`` transitions. ``clamp_label``: keep the walkers' labels (a kernel that samples
        labels with the other units, Gibbs, leaves them; one that never moves the condition
        ignores it)."""
        ...


class KernelBase:
    """Defaults of the :class:`Kernel` contract for a kernel that does not adapt itself and
    keeps no state beyond its config."""

    adapts_on: tuple[str, ...] = ()
    info_names: tuple[str, ...] = ()  # the diagnostics its steps report (KernelInfo.metrics)
    precision: str = "fp32"
    compiled: bool = False
    exact_weights: ClassVar[bool] = True

    def adapted(self, means: dict[str, float]) -> tuple["Kernel", dict[str, float]]:
        return self, {}

    def notes(self, use_gpu: bool) -> list[str]:
        """Lines a run should say about this kernel on this machine before it trains."""
        return []

    def for_run(self, model: torch.nn.Module, support: MatmulSupport, draws: float = 0.0,
                weighs_moves: bool = True) -> "Kernel":
        return self

    def state_dict(self) -> dict[str, float]:
        return {}

    def with_state(self, state: dict[str, float]) -> "Kernel":
        return self

"""The gradient-estimator contract shared by every training algorithm.

An estimator turns (model, data batch, walkers) into a *surrogate loss* whose gradient is minus
the log-likelihood gradient estimate (DESIGN.md):

    L(theta) = sum_b w_b F_theta(v_b, l_b)  -  sum_i softmax(log_weight)_i F_theta(x_i, l_i)

with the data weights ``w_b`` normalised over the batch and the walkers detached. Autograd then
gives ``<dF/dtheta>_data - <dF/dtheta>_model``, and averaging losses (or gradients) across
workers is the same operation for RBMs and neural EBMs.

When the batch and the walkers are shards of a global batch and population, both terms are
normalised *globally* (``Batch.total_weight``, and the walkers' log-weights gathered over the
:class:`~raybm.algorithms.population.Population`), so that the shard losses *sum* to the
single-process loss and summing their gradients across workers gives exactly its gradient.

Some algorithms apply several updates per minibatch (F&F with labels: a generation update then
a classification update); ``phases`` names them and ``estimate`` is called once per phase, each
call seeing the parameters after the previous phase's update. A phase declares which trained
modules it steps (:class:`Phase`; the energy by default): an estimator that trains a module
beside the energy (a flow, a control variate) declares it in ``modules``, builds it in
``build_modules``, and steps it in phases of its own ("two flow steps per energy step" is
three phases). An estimate may hand the trainer gradients per module instead of (or beside) a
surrogate loss; the trainer sums either over the ranks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from raybm.algorithms.population import LOCAL, Population
from raybm.models.base import EnergyModel
from raybm.samplers.base import Kernel
from raybm.walkers import WalkerState

if TYPE_CHECKING:
    from raybm.config import AlgorithmConfig
    from raybm.data.dataset import Dataset


@dataclass
class Batch:
    """A minibatch of data: ``x (B, ...)``, optional labels, per-sample weights and a float
    condition."""

    x: torch.Tensor
    label: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    # The weight (or row count) of the whole minibatch when this is one worker's share of it;
    # None: this batch is the whole minibatch.
    total_weight: float | None = None
    # A float condition per sample (a noise level an estimator draws for it), beside the label.
    cond: torch.Tensor | None = None
    # These rows' x W (an RBM's hidden field without bias or label, float, in the sampler's
    # matmul precision) under the current parameters, where the trainer's centring computed
    # it for this update; None once a step changed the parameters, or never computed.
    visible_field: torch.Tensor | None = None
    # Whether this update's loss is read (the trainer's logged updates): where not, an
    # estimator that hands over closed-form gradients may skip the loss's value, which no
    # step uses (a zero stands in for it; the divergence check still sees every gradient).
    reports_loss: bool = True

    @property
    def size(self) -> int:
        return self.x.shape[0]

    @property
    def condition(self) -> torch.Tensor | None:
        """What the energy of these samples is conditioned on: the label when there is one,
        else the float condition (as ``WalkerState.condition``)."""
        return self.label if self.label is not None else self.cond


ENERGY = "energy"  # the trained module every run has: the model


@dataclass(frozen=True)
class Phase:
    """One optimizer step of an update: its name (``loss_<name>`` in the logs, the argument
    of ``estimate``) and the trained modules it steps; a module it does not name is not
    touched by its optimizer."""

    name: str
    modules: tuple[str, ...] = (ENERGY,)


def as_phase(phase: Phase | str) -> Phase:
    """A declared phase; a bare name steps the energy."""
    return phase if isinstance(phase, Phase) else Phase(phase)


@dataclass
class Estimate:
    """One phase's result: the surrogate loss (None when it hands over gradients only), the
    walkers to keep, diagnostics, and gradients per module (``{module: {parameter name:
    gradient}}``, this shard's share of the global gradient, added to the loss's)."""

    loss: torch.Tensor | None
    walkers: WalkerState | None
    info: dict[str, float] = field(default_factory=dict)
    grads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


class Estimator(ABC):
    """The declared contract between the training loop and an algorithm.

    The trainer calls, in this order, and nothing else (no probing for optional methods):

    - when built: ``read_data(data)`` with the whole training set on every rank (scales the
      estimator reads off the data: DCD-VE's noise in units of the data's width; nothing by
      default), then ``build_modules(shared_gen, model, data)``, the trained modules it
      declares in ``modules`` (none by default), the same on every rank; a resumed run loads
      their parameters over them;
    - fresh run: ``init_walkers(gen, model, n, data)`` (this shard's persistent walkers, or
      None), then ``start(shared_gen, model, walkers, weight_std)`` (a last change to the
      initial model with its walkers: Jarzynski's kick; identity by default);
    - each update, each of ``phases``: ``estimate(gen, model, batch, walkers, phase)``, then
      around the optimizer step ``token = before_update(model, walkers)`` and
      ``walkers = after_update(model, walkers, token)`` (Jarzynski charges the work of the
      update to its walkers; identity by default);
    - after the last phase of an update whose diagnostics are logged:
      ``update_info(model, walkers)``, the diagnostics that belong to the parameters the update
      left (every rank calls it, so it may use the population's collectives), and with the
      logged info ``alarms(info)``, lines the run's log shows;
    - checkpoints: ``state_dict()`` / ``load_state_dict(state)`` (JSON-able scalars).

    ``persistent``: the walkers live across updates and are checkpointed (PCD, Jarzynski).
    ``generates_in_k``: what the model learned is to generate in ``k`` steps of the kernel
    from its start distribution (F&F), so that is how its samples are drawn.
    ``starts_exact``: the walkers start as exact draws of the initial model, with ``log Z_0``
    in closed form (``samplers.exact``); the trainer builds a model that can be drawn so (an
    RBM without couplings).
    ``kernel`` is the sampler the estimator moves walkers with, handed in (DESIGN.md,
    "Kernel"); ``population`` the global view of a sharded walker population.
    """

    name: ClassVar[str]
    # The diagnostics ``estimate`` puts in its info every update (logged live, searchable).
    info_names: ClassVar[tuple[str, ...]] = ()
    starts_exact: ClassVar[bool] = False
    persistent: ClassVar[bool] = False  # walkers live across updates (and in checkpoints)
    # It reads the log-weight increments a kernel that is not invariant reports (Jarzynski):
    # a kernel that computes them only on request (ULA) is told (Kernel.for_run).
    weighs_moves: ClassVar[bool] = False
    # The model is trained to generate in k kernel steps from the kernel's start (F&F): its
    # samples are drawn that way by default (``raybm.sampling``).
    generates_in_k: ClassVar[bool] = False
    # Trained modules beside the energy (built by build_modules, optimized by the trainer
    # under optimizers.<name>, checkpointed and summed over ranks like the energy).
    modules: ClassVar[tuple[str, ...]] = ()
    # The one of ``modules`` that is a normalised density of the walkers' space with exact
    # draws (a flow: ``sample(gen, n) -> (x, log q)``, ``log_prob(x)``), or None: read at the
    # end of a run as an importance-sampling proposal for the energy, and drawn from by
    # ``raybm sample --from flow``.
    proposal: ClassVar[str | None] = None
    # Plots drawn at the end of a run from the curves it logged, {file name: metric names};
    # the increases of ``plot_events`` (a cumulative count it logs) are marked on them.
    plots: ClassVar[dict[str, tuple[str, ...]]] = {}
    plot_events: ClassVar[str | None] = None
    phases: tuple[Phase | str, ...]
    kernel: Kernel
    population: Population
    # alpha of the energy penalty (``algorithm.energy_penalty``, :func:`walker_term`), set by
    # ``build_estimator`` for every algorithm; an estimator passes it to its loss terms.
    energy_penalty: float = 0.0

    @classmethod
    @abstractmethod
    def from_config(cls, algorithm: AlgorithmConfig, kernel: Kernel, seed: int,
                    population: Population = LOCAL) -> "Estimator":
        """The estimator an ``algorithm:`` config section describes."""

    def read_data(self, data: Dataset) -> None:
        """Read what the estimator scales by off the whole training set (every rank sees
        the same set, so every rank reads the same); a resumed run reads it again."""

    def build_modules(self, gen: torch.Generator, model: EnergyModel,
                      data: Dataset) -> dict[str, nn.Module]:
        """The trained modules of :attr:`modules`, by name, drawn from ``gen`` (the shared
        ``"modules"`` stream); the estimator keeps them to use in ``estimate``."""
        return {}

    def init_walkers(self, gen: torch.Generator, model: EnergyModel, n_walkers: int,
                     data: Dataset | None = None) -> WalkerState | None:
        """This shard's persistent walkers (None for algorithms that restart their chains);
        ``data``: the training set, for walkers that start at the data."""
        return None

    def start(self, gen: torch.Generator, model: EnergyModel, walkers: WalkerState | None,
              weight_std: float) -> WalkerState | None:
        """A fresh run's last step before training (``gen`` is the same on every rank)."""
        return walkers

    @abstractmethod
    def estimate(self, gen: torch.Generator, model: EnergyModel, batch: Batch,
                 walkers: WalkerState | None, phase: str) -> Estimate:
        """One phase's surrogate loss, the walkers to keep, and diagnostics."""

    def before_update(self, model: EnergyModel, walkers: WalkerState | None) -> Any:
        """Called just before the optimizer step; its result goes to :meth:`after_update`."""
        return None

    def after_update(self, model: EnergyModel, walkers: WalkerState | None,
                     token: Any) -> WalkerState | None:
        """Called just after the optimizer step (and the model's gauge fix)."""
        return walkers

    def update_info(self, model: EnergyModel, walkers: WalkerState | None) -> dict[str, float]:
        """Diagnostics of the state an update leaves behind: the new parameters and the
        walkers after :meth:`after_update` (what a checkpoint of this step holds). ``estimate``
        reports what it saw *before* the update; a quantity paired with the model in the
        logs (Jarzynski's running log Z, read with the new parameters as a log-likelihood)
        must come from here. Asked for on log steps only: no cost on the other updates."""
        return {}

    def alarms(self, info: dict[str, float]) -> list[str]:
        """Lines to show in the run's log beside a logged update's ``info`` (what it found
        wrong: the flow of FlowMC-EBM falling behind its energy); none by default."""
        return []

    def reported(self, model: EnergyModel) -> list[str]:
        """The metric names this estimator logs at every log step of a run of ``model``
        (what a sweep may rank on): each phase's loss and its declared diagnostics."""
        return [f"loss_{as_phase(p).name}" for p in self.phases] + list(self.info_names)

    @property
    def samples(self) -> bool:
        """Whether each phase that steps the energy moves chains with ``kernel`` (``k``
        steps per update); False for an estimator whose gradient needs no sampler (DCD-VE's
        heat-equation route)."""
        return True

    def loss(self, model: EnergyModel, batch: Batch, walkers: WalkerState,
             log_norm: torch.Tensor | None = None) -> torch.Tensor:
        """The contrastive surrogate loss ``data_term - walker_term`` (weights normalised
        over the population), with the run's energy penalty."""
        return (data_term(model, batch, penalty=self.energy_penalty)
                - walker_term(model, walkers, self.population, log_norm,
                              penalty=self.energy_penalty))

    def contrast(self, model: EnergyModel, batch: Batch, walkers: WalkerState,
                 log_norm: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """The contrastive surrogate loss of :meth:`loss` and the gradients handed over with
        it (``Estimate.loss`` and ``Estimate.grads``).

        A model that declares ``closed_form_gradient`` (an RBM) gets the loss's value and its
        gradient from sufficient statistics, data and walkers in one pass, in the kernel's
        matmul precision (``EnergyModel.weighted_energy_gradient``); any other model, an
        energy penalty, or inputs without a closed form get the loss with its graph, for
        autograd, and no gradients. Both give the same gradient
        (tests/algorithms/test_closed_form_gradient.py)."""
        if model.closed_form_gradient and not self.energy_penalty:
            terms = contrast_terms(batch, walkers, self.population, log_norm)
            if terms is not None:
                # The data rows come first: their x W, where the centring has it (one row
                # per batch row, or it is not this batch's), is reused.
                field = batch.visible_field
                if field is not None and len(field) != batch.size:
                    field = None
                out = model.weighted_energy_gradient(*terms, precision=self.kernel.precision,
                                                     visible_field=field,
                                                     compiled=self.kernel.compiled,
                                                     value=batch.reports_loss)
                if out is not None:
                    return out[0], {ENERGY: out[1]}
        return self.loss(model, batch, walkers, log_norm), {}

    def label_contrast(self, model: EnergyModel, batch: Batch, labels: torch.Tensor,
                       visible_field: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """``sum_b w_b (F(v_b, l_b) - F(v_b, l'_b))``, the batch against itself with the
        labels ``l'`` (F&F's classification phase: only the label part contributes), and
        the gradients handed over with it, as :meth:`contrast` gives them.

        A row whose sampled label is its own (``l'_b = l_b``) adds ``F - F = 0`` to the sum
        and to every gradient: the closed form takes only the other rows (with a few own
        ones to a round count, :func:`contrast_rows`), about a fraction ``1 - a`` of the
        work at a sampled train accuracy ``a`` (exact, not an approximation).
        ``visible_field``: the batch's ``x W`` from the label chain that drew ``labels``
        (``GibbsKernel.label_chain``), reused by the closed form."""
        if model.closed_form_gradient and batch.label is not None:
            w = data_weights(batch)
            x, own, other, field = (batch.x, batch.label, labels.to(batch.label.dtype),
                                    visible_field)
            rows = contrast_rows(other != own)
            if rows is not None:
                # index_select: the same rows as x[rows], several times faster (uint8 and
                # bf16 rows: 0.06 and 0.08 ms against 0.47 and 0.24).
                x, own, other, w = (t.index_select(0, rows) for t in (x, own, other, w))
                field = None if field is None else field.index_select(0, rows)
            out = model.weighted_energy_gradient(
                x, torch.stack([own, other], 1), torch.stack([w, -w], 1),
                precision=self.kernel.precision, visible_field=field,
                compiled=self.kernel.compiled, value=batch.reports_loss)
            if out is not None:
                return out[0], {ENERGY: out[1]}
        return data_term(model, batch) - data_term(model, batch, label=labels), {}

    def _contrast(self, model: EnergyModel, batch: Batch, walkers: WalkerState,
                  keep: WalkerState | None, info: dict[str, float],
                  log_norm: torch.Tensor | None = None) -> tuple:
        """``Estimate``'s fields for :meth:`contrast` against ``walkers``, keeping ``keep``."""
        loss, grads = self.contrast(model, batch, walkers, log_norm)
        return loss, keep, info, grads

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep beyond parameters and walkers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


# The classification contrast's row count is rounded up to a multiple of this.
CONTRAST_ROW_MULTIPLE = 64


def contrast_rows(moved: torch.Tensor) -> torch.Tensor | None:
    """The rows a classification contrast computes: every row whose label moved (``moved``,
    bool ``(n,)``), then rows that did not, up to a multiple of
    :data:`CONTRAST_ROW_MULTIPLE` (at most ``n``); None where that is every row.

    An unmoved row adds ``F - F = 0``, so the padding changes nothing but the shape: a row
    count new at every update made oneDNN generate a bf16 matmul kernel for each
    (a 784 x ~1,800 x 513 product took ~3x as long with a fresh count per call as with a
    repeated one, Intel Xeon with AMX, 2026-12-06); rounded, there are at most ``n / 64``
    shapes, each built once. fp32 pays at most 63 rows more."""
    n = len(moved)
    count = int(moved.sum())
    keep = min(n, -(-count // CONTRAST_ROW_MULTIPLE) * CONTRAST_ROW_MULTIPLE)
    if keep == n:
        return None
    rows = moved.nonzero().squeeze(1)
    if keep > count:
        rows = torch.cat([rows, (~moved).nonzero().squeeze(1)[: keep - count]])
    return rows


def data_weights(batch: Batch, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``w_b``, the batch's weights normalised over the whole minibatch (uniform when
    absent; ``batch.total_weight`` when this batch is a shard of it): the coefficients of
    :func:`data_term`."""
    total = batch.total_weight
    if batch.weight is None:
        return torch.full((batch.size,), 1.0 / (batch.size if total is None else total),
                          dtype=dtype, device=batch.x.device)
    w = batch.weight.to(dtype)
    return w / (w.sum() if total is None else total)


def walker_weights(walkers: WalkerState, population: Population = LOCAL,
                   log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """``softmax(log_weight)_i`` over the whole population, this shard's entries (float64):
    the coefficients of :func:`walker_term`."""
    if log_norm is None:
        log_norm = torch.logsumexp(population.gather(walkers.log_weight.double()), 0)
    return torch.exp(walkers.log_weight.double() - log_norm)


def contrast_terms(batch: Batch, walkers: WalkerState, population: Population = LOCAL,
                   log_norm: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None:
    """Data and walkers stacked as ``(x, cond, coef)``, with ``coef`` the data weights and
    minus the walker weights: ``sum_b coef_b F(x_b, cond_b)`` is ``data_term -
    walker_term`` without penalty. None when only one side has a condition."""
    if (batch.condition is None) != (walkers.condition is None):
        return None
    x = torch.cat([batch.x, walkers.x.to(batch.x.dtype)])
    cond = (None if batch.condition is None
            else torch.cat([batch.condition, walkers.condition.to(batch.condition.dtype)]))
    coef = torch.cat([data_weights(batch), -walker_weights(walkers, population, log_norm)])
    return x, cond, coef


def data_term(model: EnergyModel, batch: Batch, label: torch.Tensor | None = None,
              penalty: float = 0.0) -> torch.Tensor:
    """``sum_b w_b F(v_b, l_b)`` with the batch weights normalised (uniform when absent) over the
    whole minibatch (``batch.total_weight`` when this batch is a shard of it); with
    ``penalty`` (alpha) plus the data half of the energy penalty, ``alpha sum_b w_b F^2``
    (:func:`walker_term`)."""
    f = model.energy(batch.x, label if label is not None else batch.condition)
    if penalty:
        f = f + penalty * f * f
    w = None if batch.weight is None else batch.weight.to(f.dtype)
    total = batch.total_weight
    if total is None:
        total = float(batch.size) if w is None else w.sum()
    return (f.sum() if w is None else (w * f).sum()) / total


def walker_term(model: EnergyModel, walkers: WalkerState, population: Population = LOCAL,
                log_norm: torch.Tensor | None = None, penalty: float = 0.0) -> torch.Tensor:
    """``sum_i softmax(log_weight)_i F(x_i, l_i)``: the weighted model average, with the
    softmax normalised over the whole population (this shard's terms of the global sum).
    ``log_norm``: the population's ``logsumexp(log_weight)`` when the caller has it already
    (saves gathering the log-weights a second time).

    ``penalty`` (alpha): the walker half of the energy penalty of image EBMs (Du & Mordatch
    2019, "Implicit generation and generalization in energy-based models", section 3.3; the
    Jarzynski research's MNIST runs, arXiv 2305.19414, alpha = 0.01), which the surrogate loss
    ``data_term - walker_term`` then carries whole:

        L = <F>_data - <F>_walkers + alpha (<F^2>_data + <F^2>_walkers),
        dL = <(1 + 2 alpha F) dF>_data - <(1 - 2 alpha F) dF>_walkers,

    so this term is ``sum_i w_i (F_i - alpha F_i^2)``. The penalty pulls both energies towards
    zero: without it a network that separates the data from the walkers more steeply lowers
    the loss without bound (the run-away of an image energy)."""
    f = model.energy(walkers.x, walkers.condition)
    if penalty:
        f = f - penalty * f * f
    return (walker_weights(walkers, population, log_norm).to(f.dtype) * f).sum()

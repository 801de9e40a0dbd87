"""The estimator family's contract: one registry, declared hooks, kernels handed in.

Every estimator the config can name is in the registry, implements
:class:`~raybm.algorithms.base.Estimator`, is built from its config section, moves walkers
only with the kernel it was given, and answers the trainer's hooks. (Each estimator's
*gradient* is checked against exact enumeration in ``test_estimators.py`` /
``test_jarzynski.py``.)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from raybm.algorithms.base import ENERGY, Batch, Estimate, Estimator, as_phase
from raybm.algorithms.jarzynski import Jarzynski
from raybm.algorithms.registry import ESTIMATORS, build_estimator, estimator_class
from raybm.config import ALGORITHM_CONFIGS, ALGORITHM_NAMES
from raybm.data.dataset import Dataset
from raybm.metrics.exact import as_float64
from raybm.samplers.base import KernelInfo
from raybm.samplers.gibbs import GibbsKernel
from raybm.samplers.langevin import ULA
from raybm.walkers import WalkerState
from tests.enumeration import all_visible_states, random_model


@dataclass(frozen=True)
class CountingKernel(GibbsKernel):
    """Block Gibbs that counts its calls: proves the estimator used the kernel it was given."""

    calls: list = field(default_factory=list, compare=False)

    def init(self, gen, model, n, label=None):
        self.calls.append(("init", n))
        return super().init(gen, model, n, label=label)

    def step(self, gen, state, model, k, **clamp):
        self.calls.append(("step", k))
        return super().step(gen, state, model, k, **clamp)

    def label_chain(self, gen, model, x, label, k):
        self.calls.append(("step", k))  # sweeps too: the labels' chain, visibles clamped
        return super().label_chain(gen, model, x, label, k)


@dataclass(frozen=True)
class CountingULA(ULA):
    """ULA that counts its calls (the kernel of a continuous-only estimator)."""

    calls: list = field(default_factory=list, compare=False)

    def step(self, gen, state, model, k, **clamp):
        self.calls.append(("step", k))
        return super().step(gen, state, model, k, **clamp)


class ForwardKernel(GibbsKernel):
    """A kernel declared not invariant (as ULA is), reporting increments 0, 1, 2, ..."""

    invariant: ClassVar[bool] = False

    def step(self, gen, state, model, k, **clamp):
        out, _ = super().step(gen, state, model, k, **clamp)
        inc = torch.arange(state.n_walkers, dtype=torch.float64)
        return out, KernelInfo(log_weight_increment=inc)


def section(name: str, **values):
    return ALGORITHM_CONFIGS[name](**values)


def test_every_configurable_algorithm_is_registered_and_declared():
    assert set(ESTIMATORS) == set(ALGORITHM_CONFIGS) >= set(ALGORITHM_NAMES)
    for name, cls in ESTIMATORS.items():
        assert issubclass(cls, Estimator) and cls.name == name
    # Declared on the classes (resolve_paths records n_walkers for these from the class).
    assert {n for n, c in ESTIMATORS.items() if c.persistent} == {"pcd", "jarzynski",
                                                                   "flowmc_ebm"}
    assert {n for n, c in ESTIMATORS.items() if c.starts_exact} == {"jarzynski", "flowmc_ebm"}
    # A proposal (the flow read by importance sampling) is one of the trained modules.
    assert {n: c.proposal for n, c in ESTIMATORS.items() if c.proposal} == {
        "flowmc_ebm": "flow"}
    assert all(c.proposal in c.modules for c in ESTIMATORS.values() if c.proposal)
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        estimator_class("nope")


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_built_from_config_with_the_kernel_it_is_given(name):
    extra = {"ess_threshold": 0.3} if name == "jarzynski" else {}
    config = section(name, k=3, **extra)
    est = build_estimator(config, GibbsKernel("bf16"), seed=5)
    assert type(est) is ESTIMATORS[name] and est.k == 3
    assert est.kernel == GibbsKernel("bf16")
    if name == "jarzynski":
        assert est.ess_threshold == 0.3 and est.resample_seed == 5

    g = torch.Generator().manual_seed(1)
    if ALGORITHM_CONFIGS[name].continuous_only:  # on a continuous model, with a Langevin kernel
        from raybm.models.gaussian import GaussianMixtureEnergy

        model = GaussianMixtureEnergy(torch.randn(2, 4, generator=g))
        kernel = CountingULA(0.01)
        batch = Batch(torch.randn(8, 4, generator=g))
    else:
        model = random_model("bernoulli", g, 3, scale=0.3)
        if est.starts_exact:
            with torch.no_grad():
                model.weight.zero_()
                model.label_weight.zero_()
        kernel = CountingKernel()
        batch = Batch(all_visible_states(model)[:8], torch.arange(8) % 3)
    est = estimator_class(name).from_config(section(name, k=3), kernel, seed=0)
    gen = torch.Generator().manual_seed(2)
    # The training set read (DCD-VE's width), then the modules it declares, built as the
    # trainer builds them (a flow of the data's shape).
    continuous = ALGORITHM_CONFIGS[name].continuous_only
    est.read_data(Dataset(batch.x if continuous else batch.x.to(torch.uint8),
                          n_states=0 if continuous else 2))
    shaped = SimpleNamespace(event_shape=tuple(model.event_shape))
    assert set(est.build_modules(gen, model, shaped)) == set(est.modules)
    walkers = est.init_walkers(gen, model, 8)
    assert (walkers is not None) == est.persistent
    for phase in est.phases:  # by name, as the trainer hands them
        out = est.estimate(gen, model, batch, walkers, as_phase(phase).name)
        assert isinstance(out, Estimate) and (out.loss.requires_grad or ENERGY in out.grads)
        walkers = out.walkers if out.walkers is not None else walkers
        # The diagnostics it declares (what a sweep may search on) are the ones it reports,
        # before the update (estimate) or of the state the update leaves (update_info).
        assert set(est.info_names) <= set(out.info) | set(est.update_info(model, walkers))
    # Every sweep went through the kernel handed in, k at a time: once per phase that steps
    # the energy (a phase fitting another module moves no walker).
    # (None for an estimator that declares it needs no sampler: DCD-VE's taylor route.)
    energy_phases = [p for p in map(as_phase, est.phases) if p.modules == (ENERGY,)]
    expected = [("step", 3)] * len(energy_phases) if est.samples else []
    assert [c for c in kernel.calls if c[0] == "step"] == expected


# (Jarzynski charges work to its walkers; FlowMC-EBM warms its flow up and keeps the IMH
# acceptance window of the lagging check: tests/algorithms/test_flowmc.py.)
@pytest.mark.parametrize("name", sorted(set(ESTIMATORS) - {"jarzynski", "flowmc_ebm"}))
def test_default_hooks_leave_walkers_and_state_alone(name):
    est = estimator_class(name).from_config(section(name), GibbsKernel(), seed=0)
    model = random_model("bernoulli", torch.Generator().manual_seed(3), 0)
    w = WalkerState.unweighted(all_visible_states(model)[:4])
    assert est.start(torch.Generator(), model, w, 0.1) is w
    assert est.after_update(model, w, est.before_update(model, w)) is w
    assert est.state_dict() == {}
    est.load_state_dict({})


def test_jarzynski_hooks_charge_the_work_of_an_update():
    model = random_model("bernoulli", torch.Generator().manual_seed(4), 0, scale=0.5)
    est = Jarzynski(k=1)
    w = WalkerState.unweighted(all_visible_states(model)[:6])
    token = est.before_update(model, w)
    # The reference in float64: the float32 difference of two free energies rounds more than
    # the closed-form work it checks (RBM.energy_change).
    f_old = as_float64(copy.deepcopy(model)).free_energy(w.x).detach()
    with torch.no_grad():
        model.weight.add_(0.1)
    after = est.after_update(model, w, token)
    f_new = as_float64(copy.deepcopy(model)).free_energy(w.x).detach()
    torch.testing.assert_close(after.log_weight, -(f_new - f_old), rtol=1e-6, atol=1e-6)
    # start() is the kick: it changes the couplings and charges that work too.
    zero = random_model("bernoulli", torch.Generator().manual_seed(5), 0)
    with torch.no_grad():
        zero.weight.zero_()
    kicked = est.start(torch.Generator().manual_seed(0), zero, w, 0.05)
    assert float(zero.weight.detach().abs().max()) > 0
    assert float(kicked.log_weight.abs().max()) > 0


def test_jarzynski_adds_the_increment_a_kernel_reports():
    """A kernel that is not invariant reports a per-walker log-weight increment; Jarzynski
    adds it to the walkers it keeps (and an invariant kernel's None adds nothing)."""
    model = random_model("bernoulli", torch.Generator().manual_seed(6), 0)
    with torch.no_grad():
        model.weight.zero_()
    est = Jarzynski(k=1, ess_threshold=0.0, kernel=ForwardKernel())
    walkers = est.init_walkers(torch.Generator().manual_seed(0), model, 5)
    out = est.estimate(torch.Generator(), model, Batch(walkers.x), walkers, "joint")
    torch.testing.assert_close(out.walkers.log_weight,
                               walkers.log_weight + torch.arange(5, dtype=torch.float64))


def test_kernel_info_carries_diagnostics_not_state():
    info = KernelInfo(acceptance=0.5, extra={"step_size": 0.1})
    assert info.metrics("sampler/") == {"sampler/step_size": 0.1, "sampler/acceptance": 0.5}

"""The FlowMC kernel (``samplers.flowmc``): flow-IMH steps then MALA, exactly invariant for the
energy whatever the flow (a poor flow only lowers the IMH acceptance), acceptance 1 when the
flow is the target, and jumps between modes that MALA alone does not make."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.models.flow import Flow
from raybm.models.gaussian import GaussianEnergy, GaussianMixtureEnergy
from raybm.samplers.exact import exact_start
from raybm.samplers.flowmc import FlowMC


def _mixture(at: float = 3.0) -> GaussianMixtureEnergy:
    """Two unit components at -at e1 and +at e1 of a 2-D space, weights 0.3 / 0.7."""
    means = torch.tensor([[-at, 0.0], [at, 0.0]])
    return GaussianMixtureEnergy(means, torch.log(torch.tensor([0.3, 0.7])))


def _widened(flow: Flow, scale: float) -> Flow:
    """``flow`` (at the identity) made ``N(0, scale^2 I)``: one transform's constant log-scale
    set to -log(scale) (zuko's conditioner emits (shift, unconstrained scale) per feature and
    its affine map squashes the scale as ``a / (1 + |a / log(1e-3)|)``)."""
    target = -math.log(scale)  # the transform maps x to z = exp(a) x: a = -log(scale)
    raw = target / (1 - abs(target / math.log(1e-3)))
    with torch.no_grad():
        flow._last_layers()[0].bias.view(-1, 2)[:, 1].fill_(raw)
    return flow


def test_acceptance_is_one_when_the_flow_is_the_target():
    wide = _widened(Flow(2, gen=torch.Generator().manual_seed(9)), 3.0)
    x, log_q = wide.sample(torch.Generator().manual_seed(8), 4000)
    assert abs(float(x.detach().var()) - 9.0) < 0.6  # the helper below does widen it
    torch.testing.assert_close(wide.log_prob(x).detach(), log_q.detach(), rtol=0, atol=1e-4)
    model = GaussianEnergy(3)  # N(0, I): what a new flow is
    kernel = FlowMC(0.1, 0, flow=Flow(3, gen=torch.Generator().manual_seed(0)))
    state = kernel.init(torch.Generator().manual_seed(1), model, 400)
    _, info = kernel.step(torch.Generator().manual_seed(2), state, model, 3)
    assert info.extra["imh_acceptance"] == 1.0 and info.acceptance is None


@pytest.mark.parametrize("flow_scale", [1.0, 6.0], ids=["poor-flow", "wide-flow"])
def test_the_mixture_stays_invariant_with_any_flow(flow_scale):
    """From exact draws of a two-mode mixture, 20 FlowMC rounds with an untrained flow (the
    standard normal, centred between the modes; or widened) keep the minor mode's weight
    and the second moment of x1 within 5 standard errors of the exact values."""
    model = _mixture()
    flow = _widened(Flow(2, gen=torch.Generator().manual_seed(3)), flow_scale)
    gen = torch.Generator().manual_seed(4)
    n = 4000
    start, _ = exact_start(gen, model, n)
    kernel = FlowMC(0.2, 2, flow=flow)
    out, info = kernel.step(gen, start, model, 20)
    minor = float((out.x[:, 0] < 0).double().mean())
    assert abs(minor - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n), minor
    second = float((out.x[:, 0] ** 2).double().mean())  # exact: 9 + 1 = 10
    se = math.sqrt(float((out.x[:, 0] ** 2).double().var()) / n)
    assert abs(second - 10.0) < 5 * se, (second, se)
    assert 0 < info.extra["imh_acceptance"] < 1


def test_flow_jumps_move_walkers_between_modes_that_mala_alone_does_not():
    """Walkers all started in the minor mode: MALA alone leaves them there; with flow-IMH
    steps (a flow wide enough to reach both modes) they spread to the exact weights."""
    model = _mixture(5.0)  # a barrier of ~12 nats
    gen = torch.Generator().manual_seed(5)
    n = 2000
    start = model.means.detach()[0] + torch.randn(n, 2, generator=gen)
    flow = _widened(Flow(2, gen=torch.Generator().manual_seed(6)), 5.0)
    from raybm.walkers import WalkerState

    state = WalkerState.unweighted(start)
    from raybm.samplers.langevin import MALA

    stuck, _ = MALA(0.2).step(torch.Generator().manual_seed(7), state, model, 100)
    assert float((stuck.x[:, 0] > 0).double().mean()) < 0.01
    moved, _ = FlowMC(0.2, 5, flow=flow).step(torch.Generator().manual_seed(7), state, model, 30)
    major = float((moved.x[:, 0] > 0).double().mean())
    assert abs(major - 0.7) < 5 * math.sqrt(0.21 / n), major


def test_a_kernel_without_the_flow_says_what_it_needs():
    model = GaussianEnergy(2)
    kernel = FlowMC(0.1, 1)
    state = kernel.init(torch.Generator().manual_seed(0), model, 5)
    with pytest.raises(ValueError, match="flowmc_ebm"):
        kernel.step(torch.Generator().manual_seed(1), state, model, 1)
    with pytest.raises(ValueError):
        FlowMC(0.1, -1)
    with pytest.raises(ValueError):
        FlowMC(0.0, 1)

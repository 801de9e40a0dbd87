"""The normalizing-flow module (``raybm.models.flow``): an exact identity at the start, draws
whose log-density is the flow's, reproducible from a generator."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.models.flow import Flow


@pytest.mark.parametrize("family", ["maf", "nsf", "realnvp"])
def test_a_new_flow_is_the_standard_normal_exactly(family):
    flow = Flow(4, family, transforms=2, hidden=(8,), gen=torch.Generator().manual_seed(0))
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(1))
    want = -0.5 * (x * x).sum(1) - 2 * math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["maf", "nsf", "realnvp"])
def test_draws_come_with_their_log_density_and_are_reproducible(family):
    flow = Flow(3, family, transforms=2, hidden=(16, 16), gen=torch.Generator().manual_seed(2),
                identity=False)
    x, log_q = flow.sample(torch.Generator().manual_seed(3), 50)
    torch.testing.assert_close(flow.log_prob(x).detach(), log_q.detach(), rtol=0, atol=1e-4)
    again, _ = flow.sample(torch.Generator().manual_seed(3), 50)
    assert torch.equal(x, again)
    twin = Flow(3, family, transforms=2, hidden=(16, 16), gen=torch.Generator().manual_seed(2),
                identity=False)
    assert all(torch.equal(a, b) for a, b in zip(flow.state_dict().values(),
                                                 twin.state_dict().values()))


def test_bad_flows_are_refused():
    with pytest.raises(ValueError, match="unknown flow family"):
        Flow(3, "glow")
    with pytest.raises(ValueError, match=">= 1"):
        Flow(3, transforms=0)
    with pytest.raises(ValueError, match=r"takes \(n, 3\)"):
        Flow(3).log_prob(torch.zeros(2, 4))

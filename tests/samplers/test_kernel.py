"""The kernel contract for block Gibbs (``samplers.base``): a value with ``init`` / ``step``,
the generator first and the model on every call, diagnostics in the info."""

from __future__ import annotations

import pytest
import torch

from raybm.samplers import gibbs
from raybm.samplers.base import KernelInfo
from raybm.samplers.gibbs import GibbsKernel, generate
from tests.enumeration import random_model


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gibbs_kernel_is_the_module_kernel(kind, precision):
    model = random_model(kind, torch.Generator().manual_seed(0), 3, scale=0.5)
    kernel = GibbsKernel(precision)
    assert kernel.invariant and kernel.name == "gibbs"
    state = kernel.init(torch.Generator().manual_seed(1), model, 11)
    assert state.x.shape == (11, model.n_visible) and state.x.dtype == torch.uint8
    assert state.label.shape == (11,)
    ref = gibbs.init_uniform(torch.Generator().manual_seed(1), model, 11)
    assert torch.equal(state.x, ref.x) and torch.equal(state.label, ref.label)
    out, info = kernel.step(torch.Generator().manual_seed(2), state, model, 4)
    want, _ = gibbs.step(torch.Generator().manual_seed(2), state, model, 4, precision=precision)
    assert torch.equal(out.x, want.x) and torch.equal(out.label, want.label)
    assert isinstance(info, KernelInfo) and info.log_weight_increment is None
    assert torch.equal(out.log_weight, state.log_weight)  # invariant: no work on weights
    # The state is only walkers: the same state moves under another model.
    other = random_model(kind, torch.Generator().manual_seed(9), 3, scale=0.5)
    moved, _ = kernel.step(torch.Generator().manual_seed(2), state, other, 4)
    assert not torch.equal(moved.x, out.x)


def test_clamped_label_stays_and_generate_is_reproducible():
    model = random_model("bernoulli", torch.Generator().manual_seed(3), 3, scale=0.5)
    x = generate(torch.Generator().manual_seed(4), model, 9, 3, label=2)
    again = generate(torch.Generator().manual_seed(4), model, 9, 3, label=2)
    assert x.shape == (9, model.n_visible) and torch.equal(x, again)
    kernel = GibbsKernel()
    start = kernel.init(torch.Generator().manual_seed(5), model, 9, label=torch.full((9,), 1))
    out, _ = kernel.step(torch.Generator().manual_seed(6), start, model, 5, clamp_label=True)
    assert torch.equal(out.label, torch.full((9,), 1))


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        GibbsKernel("fp8")

"""The short-run Langevin kernel (``samplers.short_run``): its step, its box and gradient
clamps, and its declarations (not invariant, no Jarzynski weights)."""

from __future__ import annotations

import pytest
import torch

from raybm.models.gaussian import GaussianEnergy
from raybm.samplers.registry import build_kernel
from raybm.samplers.short_run import ShortRunLangevin
from raybm.config import parse_config


def test_one_step_is_noise_then_clamped_gradient_then_box():
    model = GaussianEnergy(4, mean=torch.tensor([3.0, -3.0, 0.5, 0.0]))
    kernel = ShortRunLangevin(step_size=0.5, noise_std=0.1, grad_clamp=0.4, box=(-1.0, 1.0))
    state = kernel.init(torch.Generator().manual_seed(0), model, 64)
    assert state.x.min() >= -1 and state.x.max() <= 1
    out, info = kernel.step(torch.Generator().manual_seed(1), state, model, 1)
    noise = torch.randn(state.x.shape, generator=torch.Generator().manual_seed(1))
    y = (state.x + 0.1 * noise).clamp(-1, 1)
    want = (y - 0.5 * model.grad_energy(y).clamp(-0.4, 0.4)).clamp(-1, 1)
    torch.testing.assert_close(out.x, want, rtol=0, atol=1e-6)
    assert info.log_weight_increment is None and info.acceptance is None
    assert torch.equal(out.log_weight, state.log_weight)
    assert not kernel.invariant and not kernel.exact_weights


def test_noiseless_short_runs_descend_to_the_mode_inside_the_box():
    model = GaussianEnergy(3, mean=torch.tensor([0.3, -0.2, 5.0]))
    kernel = ShortRunLangevin(step_size=0.2, noise_std=0.0, grad_clamp=None, box=(-1.0, 1.0))
    out, _ = kernel.step(torch.Generator().manual_seed(2),
                         kernel.init(torch.Generator().manual_seed(3), model, 10), model, 200)
    torch.testing.assert_close(out.x, torch.tensor([0.3, -0.2, 1.0]).expand(10, 3),
                               rtol=0, atol=1e-5)


def test_built_from_its_config_section():
    cfg = parse_config({"model": {"kind": "mlp"}, "sampler": {
        "name": "short_run", "step_size": 10, "noise_std": 0.005, "grad_clamp": 0.03,
        "box": [-1, 1]}, "algorithm": {"name": "pcd"}})
    kernel = build_kernel(cfg.sampler)
    assert kernel == ShortRunLangevin(10.0, 0.005, 0.03, (-1.0, 1.0))


@pytest.mark.parametrize("bad", [dict(step_size=0.0, noise_std=0.1),
                                 dict(step_size=1.0, noise_std=-1.0),
                                 dict(step_size=1.0, noise_std=0.1, grad_clamp=0.0),
                                 dict(step_size=1.0, noise_std=0.1, box=(1.0, -1.0))])
def test_bad_values_are_refused(bad):
    with pytest.raises(ValueError):
        ShortRunLangevin(**bad)

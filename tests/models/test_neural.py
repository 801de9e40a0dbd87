"""The neural energies: shapes, the autograd gradient against finite differences, the spec
round-trip through the registry, seeded initialisation, the exact Gaussian start, and the MNIST
network's layers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from raybm.models.base import EnergyModel
from raybm.models.neural import ConvEnergy, MLPEnergy
from raybm.models.registry import model_from_spec


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: the machine's cores are shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=seeded(seed), dtype=dtype)


# Small variants of each model, every activation among them; all with a nonzero base term so
# that its gradient is checked too.
MODELS = {
    "mlp-silu": lambda: MLPEnergy(4, (8, 6), "silu", base_scale=0.3, gen=seeded(1)),
    "mlp-softplus": lambda: MLPEnergy(4, (8,), "softplus", base_scale=0.3, gen=seeded(2)),
    "mlp-elu": lambda: MLPEnergy(4, (5, 5, 5), "elu", base_scale=0.3, gen=seeded(3)),
    "conv-12": lambda: ConvEnergy(1, 12, base_scale=0.5, gen=seeded(4)),
    "conv-2ch": lambda: ConvEnergy(2, 9, "swish", base_scale=0.5, gen=seeded(5)),
}


def test_energy_shapes_and_flattened_inputs():
    mlp = MLPEnergy(12, (16, 16), gen=seeded(0))
    x = normal(7, 12)
    assert mlp.energy(x).shape == (7,)
    torch.testing.assert_close(mlp.energy(x.view(7, 3, 4)), mlp.energy(x), rtol=0, atol=0)

    conv = ConvEnergy(gen=seeded(0))
    assert conv.event_shape == (1, 28, 28)
    images = normal(3, 1, 28, 28)
    e = conv.energy(images)
    assert e.shape == (3,)
    torch.testing.assert_close(conv.energy(images.view(3, 784)), e, rtol=0, atol=0)
    # Distinct images get distinct energies: the output is per walker, not broadcast.
    assert len(set(e.tolist())) == 3


@pytest.mark.parametrize("name", list(MODELS))
def test_energy_and_grad_matches_finite_differences(name: str):
    model = MODELS[name]().double()
    x = normal(3, *model.event_shape, seed=11, dtype=torch.float64)
    e, grad = model.energy_and_grad(x)
    assert grad.shape == x.shape
    torch.testing.assert_close(e, model.energy(x).detach(), rtol=0, atol=0)
    flat_x, flat_grad = x.reshape(3, -1), grad.reshape(3, -1)
    h = 1e-6
    for j in torch.randperm(flat_x.shape[1], generator=seeded(12))[:4].tolist():
        step = torch.zeros_like(flat_x)
        step[:, j] = h  # walkers are independent: one pair of evaluations serves all three
        with torch.no_grad():
            fd = (model.energy(flat_x + step) - model.energy(flat_x - step)) / (2 * h)
        torch.testing.assert_close(flat_grad[:, j], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", ["mlp-silu", "conv-12"])
def test_energy_and_grad_leaves_parameter_grads_alone(name: str):
    model = MODELS[name]()
    x = normal(5, *model.event_shape, seed=3)
    model.energy_and_grad(x)
    assert all(p.grad is None for p in model.parameters())
    # Nor does it add to gradients a training step has already accumulated.
    model.energy(x).mean().backward()
    before = [p.grad.clone() for p in model.parameters()]
    e, grad = model.energy_and_grad(x)
    assert not e.requires_grad and not grad.requires_grad
    for p, g in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)


@pytest.mark.parametrize("model", [
    MLPEnergy(5, (7, 3), "elu", base_scale=0.25, gen=seeded(0)),
    MLPEnergy(5, (), "softplus", gen=seeded(0)),
    ConvEnergy(2, 10, "softplus", base_scale=1.5, gen=seeded(0)),
], ids=["mlp", "mlp-no-hidden", "conv"])
def test_spec_round_trip_through_the_registry(model: EnergyModel):
    spec = json.loads(json.dumps(model.spec()))  # what a checkpoint's meta.json holds
    assert spec["kind"] == type(model).__name__
    rebuilt = model_from_spec(spec)
    assert type(rebuilt) is type(model) and rebuilt.spec() == model.spec()
    x = normal(4, *model.event_shape, seed=1)
    assert not torch.equal(rebuilt.energy(x), model.energy(x))  # not yet loaded
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.energy(x), model.energy(x), rtol=0, atol=0)


def test_swish_is_recorded_as_silu():
    assert MLPEnergy(3, (4,), "swish").spec()["activation"] == "silu"


@pytest.mark.parametrize("build", [lambda g: MLPEnergy(6, (9, 4), gen=g),
                                   lambda g: ConvEnergy(1, 12, gen=g)], ids=["mlp", "conv"])
def test_seeded_initialisation(build):
    a = build(seeded(7))
    torch.rand(100)  # the global generator moving must not matter
    b, c = build(seeded(7)), build(seeded(8))
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    # The documented distribution: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    for layer in a.net:
        if hasattr(layer, "weight"):
            bound = 1 / math.sqrt(layer.weight[0].numel())
            for p in (layer.weight.detach(), layer.bias.detach()):
                assert float(p.abs().max()) <= bound
                if p.numel() >= 16:  # spread over the range, not drawn from a narrower one
                    assert float(p.abs().max()) > 0.8 * bound


def test_zero_last_keeps_the_hidden_layers_of_the_same_seed():
    plain = MLPEnergy(4, (6,), gen=seeded(3))
    zeroed = MLPEnergy(4, (6,), zero_last=True, gen=seeded(3))
    assert torch.equal(plain.net[0].weight, zeroed.net[0].weight)
    assert not zeroed.readout.weight.any() and not zeroed.readout.bias.any()


@pytest.mark.parametrize("model", [MLPEnergy(3, (8, 8), base_scale=2.0, zero_last=True),
                                   ConvEnergy(1, 12, base_scale=1.5, zero_last=True)],
                         ids=["mlp", "conv"])
def test_zero_read_out_is_an_exact_gaussian(model: EnergyModel):
    x = 3 * normal(6, *model.event_shape, seed=2)
    scale = model.base_scale
    expected = 0.5 * scale * x.flatten(1).square().sum(-1)
    assert torch.equal(model.energy(x), expected)
    d = math.prod(model.event_shape)
    assert model.log_partition() == pytest.approx(0.5 * d * math.log(2 * math.pi / scale),
                                                  rel=1e-15)
    with torch.no_grad():
        model.readout.bias.add_(1e-3)
    assert model.log_partition() is None
    with torch.no_grad():
        model.readout.bias.zero_()
        model.readout.weight[0, 0] = 1e-3
    assert model.log_partition() is None


def test_log_partition_agrees_with_quadrature():
    model = MLPEnergy(1, (8,), base_scale=2.0, zero_last=True).double()
    t = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    with torch.no_grad():
        quad = math.log(float(torch.trapezoid(torch.exp(-model.energy(t.unsqueeze(1))), t)))
    assert abs(model.log_partition() - quad) < 1e-9


def test_no_closed_form_without_base_or_zero_read_out():
    assert MLPEnergy(3, (4,), zero_last=True).log_partition() is None  # base_scale 0
    assert MLPEnergy(3, (4,), base_scale=1.0, gen=seeded(0)).log_partition() is None


def test_mnist_network_layers():
    model = ConvEnergy(1, 28)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(16, 1, 5, 5), (16,), (32, 16, 3, 3), (32,), (64, 32, 3, 3), (64,),
                      (64, 64, 3, 3), (64,), (64, 256), (64,), (1, 64), (1,)]
    expected = ((1 * 16 * 5 * 5 + 16) + (16 * 32 * 3 * 3 + 32) + (32 * 64 * 3 * 3 + 64)
                + (64 * 64 * 3 * 3 + 64) + (64 * 2 * 2 * 64 + 64) + (64 + 1))
    assert sum(p.numel() for p in model.parameters()) == expected == 76_993
    # The read-out's input follows the image side: 32 -> 18 -> 9 -> 5 -> 3.
    assert ConvEnergy(3, 32).net[-3].in_features == 64 * 3 * 3


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        MLPEnergy(3, activation="relu")
    with pytest.raises(ValueError, match="unknown activation"):
        ConvEnergy(activation="tanh")
    with pytest.raises(ValueError, match="base_scale"):
        MLPEnergy(3, base_scale=-1.0)
    conv = ConvEnergy(1, 12)
    for shape in [(2, 1, 11, 11), (2, 2, 12, 12), (2, 145), (2, 12, 12), (1, 2, 1, 12, 12)]:
        with pytest.raises(ValueError, match=r"ConvEnergy expects \(n, 1, 12, 12\) or "
                                             r"flattened \(n, 144\), got shape"):
            conv.energy(torch.zeros(shape))
    with pytest.raises(ValueError, match="MLPEnergy expects"):
        MLPEnergy(4).energy(torch.zeros(2, 5))


def test_energy_change_defaults_to_the_difference_of_energies():
    """The work contract's default (``EnergyModel.before_change`` / ``energy_change``), which
    every model without a closed form takes: the float64 difference of the two energies."""
    model = MLPEnergy(3, (8,))
    x = torch.randn(5, 3, generator=seeded(1))
    before = model.before_change(x, None, "bf16")
    with torch.no_grad():
        e_old = model.energy(x).double()
        for p in model.parameters():
            p.add_(0.1)
        e_new = model.energy(x).double()
    change = model.energy_change(before, x)
    assert change.dtype == torch.float64
    assert torch.equal(change, e_new - e_old)

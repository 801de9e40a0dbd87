"""Neural energies: a fully-connected network for vectors and the convolutional network of the
Jarzynski research's MNIST experiments (Carbone, Hua, Coste, Vanden-Eijnden 2023,
arXiv 2305.19414).

Both compute

    E(x) = f_theta(x) + base_scale |x|^2 / 2,

where ``f_theta`` is the network, ending in a ``Linear(., 1)`` read-out. The quadratic base is
what makes an exact start possible: with the read-out's weight and bias at zero (``zero_last``),
``f_theta = 0`` whatever the hidden layers hold, so the model *is* ``N(0, I / base_scale)`` with

    log Z = d/2 log(2 pi / base_scale),   d = prod(event_shape),

and Jarzynski walkers can start as exact draws carrying an exact ``log Z_0``. It also keeps
``exp(-E)`` normalisable while the network is still small.

Initialisation: by default torch's (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for every weight and
bias, from the global generator). Runs must be reproducible without the global generator
(``raybm.streams``), so both constructors take ``gen``: when given, every parameter is redrawn
from that same distribution with ``gen``, and equal-seeded generators give identical models.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from raybm.models.base import EnergyModel

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU, "swish": nn.SiLU, "softplus": nn.Softplus, "elu": nn.ELU}


def _activation_name(name: str) -> str:
    """``name`` as the spec records it (``swish`` is SiLU, so one spec per network)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r} (known: {', '.join(_ACTIVATIONS)})")
    return "silu" if name == "swish" else name


@torch.no_grad()
def _init_uniform_(module: nn.Module, gen: torch.Generator) -> None:
    """Redraw every Linear / Conv2d weight and bias as ``U(-b, b)``, ``b = 1/sqrt(fan_in)``,
    from ``gen``: the distribution of torch's default init (``kaiming_uniform_`` with
    ``a = sqrt(5)`` gives the same bound), so only the source of randomness changes."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            bound = 1.0 / math.sqrt(layer.weight[0].numel())
            for p in (layer.weight, layer.bias):
                p.copy_((2 * torch.rand(p.shape, generator=gen, dtype=p.dtype) - 1) * bound)


class NeuralEnergy(EnergyModel):
    """``E(x) = net(x) + base_scale |x|^2 / 2`` for a ``net`` ending in ``Linear(., 1)``; the
    subclasses build ``net`` and shape a batch for it (:meth:`_batch`)."""

    net: nn.Sequential

    def __init__(self, base_scale: float, zero_last: bool, temperature: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(base_scale) and base_scale >= 0):
            raise ValueError(f"base_scale must be finite and >= 0, got {base_scale}")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        self.base_scale = float(base_scale)
        self.zero_last = bool(zero_last)
        self.temperature = float(temperature)

    def _spec_extra(self) -> dict[str, Any]:
        # Recorded only when set, so the specs of other runs stay as they were.
        return {} if self.temperature == 1.0 else {"temperature": self.temperature}

    def _init_parameters(self, gen: torch.Generator | None) -> None:
        if gen is not None:
            _init_uniform_(self.net, gen)
        if self.zero_last:
            # After the draw, not instead of it: the hidden layers are then the same with and
            # without zero_last for one seed.
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    @property
    def readout(self) -> nn.Linear:
        """The final ``Linear(., 1)``."""
        return self.net[-1]

    @abstractmethod
    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the shape ``net`` takes, or a ValueError naming the accepted shapes."""

    def energy(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``net(x) / temperature + base_scale |x|^2 / 2``, shape ``(n,)``; ``cond`` is ignored
        (the model is unconditional).

        ``temperature`` T scales the network's part only: the model is ``exp(-net / T)``
        times the Gaussian base. It is a parametrisation, not a new family: a Langevin step
        of size h on this energy moves ``h / T`` along ``-grad net`` with noise ``sqrt(2 h)``,
        so a small T lets an exact kernel (ULA with its weights, MALA) take the large
        gradient steps and small noise of short-run image samplers while its Jarzynski
        weights stay exact for the model (the comparison of
        benchmarks/mnist_conv_buffer.py)."""
        x = self._batch(x)
        e = self.net(x).squeeze(-1)
        if self.temperature != 1.0:
            e = e / self.temperature
        if self.base_scale:
            e = e + 0.5 * self.base_scale * x.flatten(1).square().sum(-1)
        return e

    @torch.no_grad()
    def log_partition(self) -> float | None:
        """``d/2 log(2 pi / base_scale)`` while the read-out is exactly zero and
        ``base_scale > 0`` (the model is then exactly ``N(0, I / base_scale)``: the exact start
        of Jarzynski walkers), else None: a trained network has no closed-form ``log Z``."""
        if self.base_scale <= 0 or self.readout.weight.any() or self.readout.bias.any():
            return None
        d = math.prod(self.event_shape)
        return 0.5 * d * math.log(2 * math.pi / self.base_scale)


class MLPEnergy(NeuralEnergy):
    """``E(x) = w_L . a(... a(W_1 x + b_1) ...) + b_L + base_scale |x|^2 / 2`` on ``x`` in
    ``R^dim``: ``Linear`` layers of the given ``widths``, each followed by the activation
    ``a`` (``silu``/``swish``, ``softplus``, ``elu``: smooth or C^1, so Langevin's gradient
    is defined everywhere), then a ``Linear(., 1)`` read-out.

    A batch may be ``(n, dim)`` or any ``(n, ...)`` with ``dim`` entries per walker (flattened).
    See the module docstring for ``base_scale``, ``zero_last`` and ``gen``.
    """

    def __init__(self, dim: int, widths: tuple[int, ...] = (128, 128), activation: str = "silu",
                 base_scale: float = 0.0, zero_last: bool = False,
                 gen: torch.Generator | None = None, temperature: float = 1.0) -> None:
        super().__init__(base_scale, zero_last, temperature)
        if dim <= 0 or any(w <= 0 for w in widths):
            raise ValueError(f"dim and widths must be > 0, got dim={dim}, widths={widths}")
        self.event_shape = (dim,)
        self.widths = tuple(int(w) for w in widths)
        self.activation = _activation_name(activation)
        act = _ACTIVATIONS[self.activation]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise((dim, *self.widths)):
            layers += [nn.Linear(fan_in, fan_out), act()]
        self.net = nn.Sequential(*layers, nn.Linear(self.widths[-1] if self.widths else dim, 1))
        self._init_parameters(gen)

    def spec(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "dim": self.event_shape[0],
                "widths": list(self.widths), "activation": self.activation,
                "base_scale": self.base_scale, "zero_last": self.zero_last,
                **self._spec_extra()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MLPEnergy:
        return cls(int(spec["dim"]), widths=tuple(int(w) for w in spec["widths"]),
                   activation=str(spec["activation"]), base_scale=float(spec["base_scale"]),
                   zero_last=bool(spec["zero_last"]),
                   temperature=float(spec.get("temperature", 1.0)))

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.event_shape[0]
        if x.dim() < 2 or math.prod(x.shape[1:]) != dim:
            raise ValueError(f"MLPEnergy expects (n, {dim}) or (n, ...) with {dim} entries per "
                             f"walker, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], dim)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvEnergy(NeuralEnergy):
    """The MNIST energy of the Jarzynski research (arXiv 2305.19414) on ``(channels, size,
    size)`` images, ``a`` the activation (SiLU by default):

        Conv2d(channels -> 16, k5 s2 p4), a, Conv2d(16 -> 32, k3 s2 p1), a,
        Conv2d(32 -> 64, k3 s2 p1), a, Conv2d(64 -> 64, k3 s2 p1), a,
        flatten, Linear(64 s4^2 -> 64), a, Linear(64 -> 1)

    plus ``base_scale |x|^2 / 2``, where ``s4`` is the side after the four convolutions
    (28 -> 16 -> 8 -> 4 -> 2, so 256 features for MNIST). A batch is ``(n, channels, size,
    size)`` or its flattened ``(n, channels size^2)``. See the module docstring for
    ``base_scale``, ``zero_last`` and ``gen``.
    """

    _CONVS: tuple[tuple[int, int, int, int], ...] = (  # (out_channels, kernel, stride, padding)
        (16, 5, 2, 4), (32, 3, 2, 1), (64, 3, 2, 1), (64, 3, 2, 1))

    def __init__(self, channels: int = 1, size: int = 28, activation: str = "silu",
                 base_scale: float = 0.0, zero_last: bool = False,
                 gen: torch.Generator | None = None, temperature: float = 1.0) -> None:
        super().__init__(base_scale, zero_last, temperature)
        if channels <= 0 or size <= 0:
            raise ValueError(f"channels and size must be > 0, got {channels}, {size}")
        self.event_shape = (channels, size, size)
        self.activation = _activation_name(activation)
        act = _ACTIVATIONS[self.activation]
        layers: list[nn.Module] = []
        fan_in, side = channels, size
        for out, kernel, stride, padding in self._CONVS:
            layers += [nn.Conv2d(fan_in, out, kernel, stride, padding), act()]
            fan_in, side = out, _conv_out(side, kernel, stride, padding)
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(fan_in * side * side, 64),
                                 act(), nn.Linear(64, 1))
        self._init_parameters(gen)

    def spec(self) -> dict[str, Any]:
        channels, size, _ = self.event_shape
        return {"kind": type(self).__name__, "channels": channels, "size": size,
                "activation": self.activation, "base_scale": self.base_scale,
                "zero_last": self.zero_last, **self._spec_extra()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ConvEnergy:
        return cls(int(spec["channels"]), int(spec["size"]), activation=str(spec["activation"]),
                   base_scale=float(spec["base_scale"]), zero_last=bool(spec["zero_last"]),
                   temperature=float(spec.get("temperature", 1.0)))

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4 and tuple(x.shape[1:]) == self.event_shape:
            return x
        if x.dim() == 2 and x.shape[1] == math.prod(self.event_shape):
            return x.reshape(x.shape[0], *self.event_shape)
        c, s, _ = self.event_shape
        raise ValueError(f"ConvEnergy expects (n, {c}, {s}, {s}) or flattened "
                         f"(n, {c * s * s}), got shape {tuple(x.shape)}")

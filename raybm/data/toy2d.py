"""The 2-D toy data sets of the energy-based-model and normalising-flow literature.

Each generator is ``fn(gen, n_samples, ...) -> Dataset`` with ``x`` float32 ``(n, 2)``,
``n_states = 0``, ``source = "synthetic:<name>"`` and ``info["format"] = name``; every random
number comes from ``gen``, so the same generator state gives bit-identical data.

Source and scale: the sets and their constants follow ``lib/toy_data.py`` of FFJORD
(Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud 2019, "FFJORD: Free-form continuous
dynamics for scalable reversible generative models", ICLR), which later EBM papers reuse
(e.g. Song & Kingma 2021, "How to train your energy-based models"; Grathwohl et al. 2021,
"No MCMC for me"). One scale for every set, so that a model, a step size or a plotting window
tuned on one set fits the others: all lie roughly inside ``[-4, 4]^2``. In particular
``8gaussians`` keeps FFJORD's radius ``4 / sqrt(2) = 2 sqrt(2) ~ 2.83`` and standard deviation
``0.5 / sqrt(2) ~ 0.354`` (other papers use radius 2 and std 0.2 or 0.02: pass ``radius`` /
``std``).

Where FFJORD places points deterministically (``np.linspace`` angles on the rings, scikit-learn's
moons) this module draws the position uniformly instead, so any subset of the rows is itself
an i.i.d. sample; the expected density is the same. Sets built from equal-sized parts (rings,
moons, pinwheel arms, spirals) give the parts ``n // K`` points each (the remainder to the
first parts) and shuffle the rows with ``gen``.

``two_modes`` is not from FFJORD: it is the 2-D picture of the mode-weight problem (Carbone,
Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414), two Gaussians with unequal weights whose
ratio CD / PCD get wrong. It and ``8gaussians`` carry the mode index as labels.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from raybm.data.continuous import gaussian_mixture
from raybm.data.dataset import Dataset
from raybm.errors import InputError

WHERE = "data.toy"

_F64 = torch.float64


def _check_n(n_samples: int) -> None:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(WHERE, "n_samples", f"must be a positive integer, got {n_samples!r}")


def _split_counts(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` near-equal counts, the remainder going to the first parts."""
    return [n // parts + (1 if k < n % parts else 0) for k in range(parts)]


def _part_index(n: int, parts: int) -> torch.Tensor:
    """``(n,)`` int64: the part of each row before shuffling, counts from :func:`_split_counts`."""
    counts = torch.tensor(_split_counts(n, parts))
    return torch.repeat_interleave(torch.arange(parts), counts)


def _dataset(name: str, x: torch.Tensor, gen: torch.Generator | None = None, **info) -> Dataset:
    """The Dataset of ``x`` ``(n, 2)``; its rows are shuffled with ``gen`` when given (sets
    built part by part, so that any prefix mixes the parts)."""
    if gen is not None:
        x = x[torch.randperm(x.shape[0], generator=gen)]
    return Dataset(x=x.to(torch.float32).contiguous(), n_states=0,
                   source=f"synthetic:{name}", info={"format": name, **info})


def _relabel(name: str, data: Dataset, **info) -> Dataset:
    """A mixture drawn by :func:`gaussian_mixture`, renamed as the toy set ``name``."""
    # (Its labels stay the mixture's components: the modes metrics.modes reads.)
    return dataclasses.replace(data, source=f"synthetic:{name}",
                               info={"format": name, "labels_are_modes": True, **info})


def eight_gaussians(gen: torch.Generator, n_samples: int, radius: float = 2.0 * math.sqrt(2.0),
                    std: float = 0.5 / math.sqrt(2.0),
                    weights: Sequence[float] | None = None) -> Dataset:
    """Mixture of 8 isotropic Gaussians centred at ``radius * (cos(k pi/4), sin(k pi/4))``,
    ``k = 0..7`` (label ``k``), drawn with probabilities ``weights`` (normalised; default
    equal, FFJORD's set; unequal weights make it a mode-weight test like ``two_modes``).

    Defaults are FFJORD's (centres at ``4 e`` for unit vectors ``e``, std 0.5, all divided by
    1.414): neighbouring centres are ``2 radius sin(pi/8) ~ 2.16`` apart, about 6 std.
    """
    _check_n(n_samples)
    weights = [1.0] * 8 if weights is None else list(weights)
    if len(weights) != 8 or min(weights) <= 0:
        raise InputError(WHERE, "weights", "8 positive weights, one per mode")
    angles = torch.arange(8, dtype=_F64) * (math.pi / 4)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    data = gaussian_mixture(gen, n_samples, means.float(), torch.tensor(weights, dtype=_F64),
                            std)
    return _relabel("8gaussians", data, radius=radius, std=std,
                    weights=[float(v) / sum(weights) for v in weights])


def two_modes(gen: torch.Generator, n_samples: int,
              weights: Sequence[float] = (0.2, 0.8),
              centers: Sequence[Sequence[float]] = ((-2.0, 0.0), (2.0, 0.0)),
              std: float = 0.5) -> Dataset:
    """Two isotropic Gaussians ``N(centers[k], std^2 I)`` drawn with probabilities ``weights``
    (normalised); label ``k`` is the mode. Defaults: the minor mode (weight 0.2) at ``(-2, 0)``,
    the major one (0.8) at ``(2, 0)``, std 0.5, so the modes are 8 std apart and a sampler that
    does not mix between them cannot learn the weights from local moves alone."""
    _check_n(n_samples)
    if len(weights) != len(centers) or any(len(c) != 2 for c in centers):
        raise InputError(WHERE, "centers", "one (x, y) centre per weight")
    means = torch.tensor([list(c) for c in centers], dtype=torch.float32)
    data = gaussian_mixture(gen, n_samples, means, torch.tensor(list(weights), dtype=_F64), std)
    w = [float(v) / sum(weights) for v in weights]
    return _relabel("two_modes", data, weights=w, centers=means.tolist(), std=std)


def rings(gen: torch.Generator, n_samples: int, radii: Sequence[float] = (3.0, 2.25, 1.5, 0.75),
          noise: float = 0.08) -> Dataset:
    """Concentric circles: equal counts on each radius (FFJORD: ``3 * (1, 0.75, 0.5, 0.25)``),
    uniform angles, plus ``N(0, noise^2 I)``."""
    _check_n(n_samples)
    ring = _part_index(n_samples, len(radii))
    r = torch.tensor(list(radii), dtype=_F64)[ring]
    theta = 2 * math.pi * torch.rand(n_samples, generator=gen, dtype=_F64)
    x = r[:, None] * torch.stack([theta.cos(), theta.sin()], dim=1)
    x = x + noise * torch.randn(n_samples, 2, generator=gen, dtype=_F64)
    return _dataset("rings", x, gen, radii=list(radii), noise=noise)


def moons(gen: torch.Generator, n_samples: int, noise: float = 0.1) -> Dataset:
    """Two interleaved half circles (scikit-learn's ``make_moons``): the upper arc
    ``(cos t, sin t)`` and the lower ``(1 - cos t, 0.5 - sin t)``, ``t ~ U(0, pi)``, plus
    ``N(0, noise^2 I)``, then FFJORD's ``x * 2 + (-1, -0.2)``: ``x`` in about ``[-3, 3]``,
    ``y`` in about ``[-1.2, 1.8]``."""
    _check_n(n_samples)
    lower = _part_index(n_samples, 2).to(_F64)  # 0: upper moon, 1: lower moon
    t = math.pi * torch.rand(n_samples, generator=gen, dtype=_F64)
    sign = 1 - 2 * lower
    x = torch.stack([lower + sign * t.cos(), 0.5 * lower + sign * t.sin()], dim=1)
    x = x + noise * torch.randn(n_samples, 2, generator=gen, dtype=_F64)
    x = 2 * x + torch.tensor([-1.0, -0.2], dtype=_F64)
    return _dataset("moons", x, gen, noise=noise)


def swissroll(gen: torch.Generator, n_samples: int, noise: float = 1.0) -> Dataset:
    """The swiss roll seen from its axis (scikit-learn's ``make_swiss_roll``, coordinates 0
    and 2, as FFJORD): ``t = 1.5 pi (1 + 2u)``, ``u ~ U(0, 1)``, point ``t (cos t, sin t)`` plus
    ``N(0, noise^2 I)``, all divided by 5 (radius up to ``4.5 pi / 5 ~ 2.8``)."""
    _check_n(n_samples)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n_samples, generator=gen, dtype=_F64))
    x = t[:, None] * torch.stack([t.cos(), t.sin()], dim=1)
    x = x + noise * torch.randn(n_samples, 2, generator=gen, dtype=_F64)
    return _dataset("swissroll", x / 5, noise=noise)


def checkerboard(gen: torch.Generator, n_samples: int) -> Dataset:
    """Uniform on the 8 dark squares of a 4 x 4 board of side-2 squares covering
    ``[-4, 4]^2`` (FFJORD): ``x1 ~ U(-2, 2)``, ``x2 = U(0, 1) - 2 B + (floor(x1) mod 2)``
    with ``B ~ Bernoulli(1/2)``, both scaled by 2."""
    _check_n(n_samples)
    x1 = 4 * torch.rand(n_samples, generator=gen, dtype=_F64) - 2
    b = torch.randint(0, 2, (n_samples,), generator=gen).to(_F64)
    x2 = torch.rand(n_samples, generator=gen, dtype=_F64) - 2 * b + torch.remainder(x1.floor(), 2)
    return _dataset("checkerboard", 2 * torch.stack([x1, x2], dim=1))


def pinwheel(gen: torch.Generator, n_samples: int, arms: int = 5, radial_std: float = 0.3,
             tangential_std: float = 0.1, rate: float = 0.25) -> Dataset:
    """Spiralling arms (FFJORD, after Johnson et al. 2016 "Composing graphical models with
    neural networks"): arm ``k`` gets ``f = (1 + radial_std z1, tangential_std z2)`` rotated by
    ``-(2 pi k / arms + rate exp(f1))``, times 2. The arms are equally filled."""
    _check_n(n_samples)
    arm = _part_index(n_samples, arms)
    f = torch.randn(n_samples, 2, generator=gen, dtype=_F64) * torch.tensor(
        [radial_std, tangential_std], dtype=_F64)
    f[:, 0] += 1.0
    angle = 2 * math.pi * arm.to(_F64) / arms + rate * f[:, 0].exp()
    c, s = angle.cos(), angle.sin()
    # FFJORD's einsum("ti,tij->tj", f, [[c, -s], [s, c]]).
    x = torch.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], dim=1)
    return _dataset("pinwheel", 2 * x, gen, arms=arms, radial_std=radial_std,
                    tangential_std=tangential_std, rate=rate)


def two_spirals(gen: torch.Generator, n_samples: int, noise: float = 0.1) -> Dataset:
    """Two interleaved spirals (FFJORD): ``t = sqrt(u) 3 pi`` (540 degrees, ``sqrt`` so that
    points are evenly spread along the growing arc), point ``(-t cos t, t sin t)`` plus
    ``U(0, 0.5)`` on each coordinate, and its mirror ``-point`` on the other spiral, divided by 3,
    plus ``N(0, noise^2 I)``."""
    _check_n(n_samples)
    other = _part_index(n_samples, 2).to(_F64)
    t = torch.rand(n_samples, generator=gen, dtype=_F64).sqrt() * 3 * math.pi
    jitter = 0.5 * torch.rand(n_samples, 2, generator=gen, dtype=_F64)
    x = torch.stack([-t * t.cos(), t * t.sin()], dim=1) + jitter
    x = (1 - 2 * other)[:, None] * x / 3
    x = x + noise * torch.randn(n_samples, 2, generator=gen, dtype=_F64)
    return _dataset("2spirals", x, gen, noise=noise)


TOY2D: dict[str, Callable[..., Dataset]] = {
    "8gaussians": eight_gaussians,
    "two_modes": two_modes,
    "rings": rings,
    "moons": moons,
    "swissroll": swissroll,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "2spirals": two_spirals,
}


# The sets that are mixtures with weights to set, and their number of modes
N_MODES = {"two_modes": 2, "8gaussians": 8}


def toy2d(name: str, gen: torch.Generator, n_samples: int,
          weights: Sequence[float] | None = None) -> Dataset:
    """``n_samples`` points of the toy set ``name`` (a key of :data:`TOY2D`) with its default
    parameters, drawn from ``gen``; ``weights``: the mode weights of a mixture set (a key of
    :data:`N_MODES`)."""
    fn = TOY2D.get(name)
    if fn is None:
        raise InputError(WHERE, "name", f"unknown toy data set {name!r} (known: {', '.join(TOY2D)})")
    if weights is None:
        return fn(gen, n_samples)
    if len(weights) != N_MODES.get(name, -1):
        raise InputError(WHERE, "weights",
                         f"{name} takes no {len(weights)} weights (mixtures: "
                         + ", ".join(f"{k} {v}" for k, v in N_MODES.items()) + ")")
    return fn(gen, n_samples, weights=weights)

"""Normalizing flows as trained modules: the proposal of FlowMC (Grenioux, Moulines, Gabrié
2023, "Balanced training of energy-based models with adaptive flow sampling", arXiv
2306.00684; Gabrié, Rotskoff, Vanden-Eijnden 2022, "Adaptive Monte Carlo augmented with
normalizing flows", PNAS 119).

A flow is an invertible map ``T`` from data space to a standard normal latent, ``z = T(x)``,
with density

    log q(x) = log N(T(x); 0, I) + log |det dT/dx|,

and draws ``x = T^-1(z)``, ``z ~ N(0, I)``, whose log-density comes with them:
``log q(x) = log N(z) - log |det dT^-1/dz|``. The transforms are zuko's (a maintained
library of flows on torch: masked autoregressive flows with affine or rational-quadratic
spline transforms, Papamakarios et al. 2017, Durkan et al. 2019; affine coupling layers,
Dinh, Sohl-Dickstein, Bengio 2017), wrapped here for the two things raybm needs beyond the
library: draws from a given ``torch.Generator`` (zuko samples with the global one, which would
break exact resume), and an exact identity at the start
(every conditioner network's last layer at zero: shift 0, log-scale 0), so that with the
energy's Gaussian base the flow, the base and the model agree when training starts
(arXiv 2306.00684, section 3.2).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# zuko's flow of each family: masked autoregressive with affine (MAF) or rational-quadratic
# spline (NSF) transforms, or affine coupling layers (RealNVP, Dinh et al. 2017). An
# autoregressive flow's density is one pass but its draws invert one coordinate at a time
# (d passes); a coupling flow does both in one pass, with less flexibility per layer
# (benchmarks/flowmc_cost.py: at d = 64, 512 draws took MAF 120 ms, NSF 15x that, RealNVP
# with twice the layers 9 ms).
FAMILIES = {"maf": "MAF", "nsf": "NSF", "realnvp": "RealNVP"}


class Flow(nn.Module):
    """A normalizing flow on vectors of ``dim`` coordinates (module docstring)."""

    def __init__(self, dim: int, family: str = "maf", transforms: int = 3,
                 hidden: tuple[int, ...] = (64, 64), gen: torch.Generator | None = None,
                 identity: bool = True) -> None:
        import zuko

        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown flow family {family!r} (known: {', '.join(FAMILIES)})")
        if dim < 1 or transforms < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"a flow needs dim, transforms and hidden widths >= 1, got {dim}, "
                             f"{transforms}, {hidden}")
        self.dim, self.family = int(dim), family
        self.transforms, self.hidden = int(transforms), tuple(int(h) for h in hidden)
        cls = getattr(zuko.flows, FAMILIES[family])
        self.flow = cls(features=self.dim, context=0, transforms=self.transforms,
                        hidden_features=self.hidden)
        # zuko's linear layers: torch's (MAF and NSF's masked ones) and its own (couplings)
        self._linear = (nn.Linear, zuko.nn.Linear)
        with torch.no_grad():
            if gen is not None:  # torch's default init, drawn from gen
                for layer in self.flow.modules():
                    if isinstance(layer, self._linear):
                        bound = 1.0 / math.sqrt(layer.weight.shape[-1])
                        for p in (layer.weight, layer.bias):
                            p.copy_((2 * torch.rand(p.shape, generator=gen) - 1) * bound)
            if identity:
                for hyper in self._last_layers():
                    hyper.weight.zero_()
                    hyper.bias.zero_()

    def _last_layers(self) -> list[nn.Module]:
        """The output layer of each transform's conditioner network."""
        out = []
        for transform in self.flow.transform.transforms:
            layers = [m for m in transform.modules() if isinstance(m, self._linear)]
            out.append(layers[-1])
        return out

    def spec(self) -> dict[str, Any]:
        return {"dim": self.dim, "family": self.family, "transforms": self.transforms,
                "hidden": list(self.hidden)}

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.dim:
            raise ValueError(f"the flow takes (n, {self.dim}) walkers, got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)`` per walker, ``(n,)`` (differentiable in the flow's parameters)."""
        return self.flow().log_prob(self._flat(x).float())

    def sample(self, gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` draws and their ``log q``: ``z ~ N(0, I)`` from ``gen``, ``x = T^-1(z)``."""
        dist = self.flow()
        z = torch.randn((n, self.dim), generator=gen)
        x, ladj = dist.transform.inv.call_and_ladj(z)
        log_n = -0.5 * (z * z).sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
        return x, log_n - ladj

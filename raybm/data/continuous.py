"""Continuous data sets generated from a seed: Gaussian mixtures in d dimensions.

The Jarzynski research's mode-weight study (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv
2305.19414) draws 10^4 points in d = 50 from two unit-variance Gaussians centred at
``-10 e_1`` and ``+6 e_1`` with weights 1/4 and 3/4: the defaults of ``data.mixture``. The
FlowMC research's mixtures (Grenioux, Moulines, Gabrié 2023, arXiv 2306.00684, section 5.1) have
components of unequal widths: ``data.mixture.stds``, one per center.
"""

from __future__ import annotations

import math

import torch

from raybm.data.dataset import Dataset
from raybm.errors import InputError


def mixture_means(centers: list[list[float]], dim: int, where: str = "data.mixture",
                  key: str = "centers") -> torch.Tensor:
    """``(K, dim)`` means: each center padded with zeros to ``dim`` coordinates (a one-line
    error naming ``where`` and ``key.<k>`` for a center that does not fit)."""
    if not centers:
        raise InputError(where, key, "needs at least one center")
    means = torch.zeros(len(centers), dim)
    for k, c in enumerate(centers):
        if len(c) > dim:
            raise InputError(where, f"{key}.{k}", f"{len(c)} coordinates for dim {dim}")
        if not all(math.isfinite(v) for v in c):
            raise InputError(where, f"{key}.{k}", "coordinates must be finite")
        means[k, : len(c)] = torch.tensor(c, dtype=torch.float32)
    return means


def component_stds(std: float | list[float] | torch.Tensor, n_components: int) -> torch.Tensor:
    """``(K,)`` float64 standard deviations: one per component, or one shared by all."""
    stds = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if stds.numel() == 1:
        stds = stds.expand(n_components)
    if stds.shape != (n_components,) or not bool((stds > 0).all() & torch.isfinite(stds).all()):
        raise InputError("data.mixture", "stds", f"{n_components} positive stds, one per center")
    return stds


def gaussian_mixture(gen: torch.Generator, n_samples: int, means: torch.Tensor,
                     weights: torch.Tensor, std: float | list[float] | torch.Tensor) -> Dataset:
    """``n_samples`` draws: component ``k ~ weights``, then ``N(means[k], std_k^2 I)`` (``std``
    one for all components or one per component); the labels are the components."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (means.shape[0],) or (w <= 0).any() or not torch.isfinite(w).all():
        raise InputError("data.mixture", "weights",
                         f"{means.shape[0]} positive weights, one per center")
    stds = component_stds(std, means.shape[0])
    component = torch.multinomial(w / w.sum(), n_samples, replacement=True, generator=gen)
    noise = torch.randn((n_samples, means.shape[1]), generator=gen)
    x = means[component] + stds.float()[component].unsqueeze(1) * noise
    return Dataset(
        x=x.float(), n_states=0, labels=component,
        label_names=[str(k) for k in range(means.shape[0])],
        source="synthetic:gaussian_mixture",
        # labels_are_modes: each label is a mode of the density (metrics.modes)
        info={"format": "gaussian_mixture", "labels_are_modes": True,
              "weights": (w / w.sum()).tolist(),
              "std": float(stds[0]) if bool((stds == stds[0]).all()) else stds.tolist()},
    )


def gaussian_mixture_logprob(x: torch.Tensor, means: torch.Tensor, weights: torch.Tensor,
                             std: float | list[float] | torch.Tensor) -> torch.Tensor:
    """Exact ``log p(x)`` ``(n,)`` float64 of that mixture."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    stds = component_stds(std, means.shape[0])
    d = means.shape[1]
    d2 = (x.double().unsqueeze(1) - means.double()).square().sum(-1)
    log_norm = 0.5 * d * torch.log(2 * math.pi * stds**2)
    return torch.logsumexp(torch.log(w / w.sum()) - log_norm - d2 / (2 * stds**2), -1)

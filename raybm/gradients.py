"""Summing the shard gradients of every trained module over the ranks, in one collective.

Each shard's loss is its share of the globally normalised surrogate loss (and each gradient an
estimator hands over its share of the global gradient), so the sum over ranks is the
single-process gradient of the whole population; every rank receives the same sum and so
applies the same update. One flat float64 vector carries every parameter's gradient, one
presence flag per parameter and the loss: a parameter that no rank's loss reached keeps no
gradient (the optimizer leaves it alone), one that some rank's reached gets the sum, zeros
from the others, on every rank alike (their parameters must stay identical). Summed in
float64: the single-process gradient is matched to rounding.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from raybm.algorithms.population import Population


def sum_gradients(population: Population, parameters: nn.Module | Iterable[nn.Parameter],
                  loss: torch.Tensor) -> torch.Tensor:
    """Sum ``parameters``' ``.grad`` (a module's, or a list) and ``loss`` over the ranks in
    place; the summed loss, a 0-d float64 tensor (on several ranks the presence flags are
    read on the host once per call)."""
    params = list(parameters.parameters() if isinstance(parameters, nn.Module)
                  else parameters)
    if population.world_size == 1:
        return loss.detach().double()
    device = params[0].device if params else loss.device
    parts, flags = [], []
    for p in params:
        present = p.grad is not None
        parts.append(p.grad.reshape(-1).double() if present
                     else torch.zeros(p.numel(), dtype=torch.float64, device=p.device))
        flags.append(1.0 if present else 0.0)
    flat = torch.cat(parts + [torch.tensor(flags, dtype=torch.float64, device=device),
                              loss.detach().double().reshape(1).to(device)])
    population.all_reduce_(flat)
    offset = 0
    presence = flat[-1 - len(params):-1].tolist()
    for i, p in enumerate(params):
        chunk = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
        if presence[i] == 0:
            p.grad = None
        elif p.grad is None:
            p.grad = chunk.to(p.dtype).clone()
        else:
            p.grad.copy_(chunk)
    return flat[-1]


def finite(loss: torch.Tensor, parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """A 0-d bool tensor: the loss and every present gradient are finite (the norms of the
    gradients in one fused call; nothing is read on the host here)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    ok = torch.isfinite(loss)
    if grads:
        ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads)).sum())
    return ok


def add_gradients(module: nn.Module, grads: dict[str, torch.Tensor], where: str) -> None:
    """Add the gradients an estimator hands over, by parameter name, to ``module``'s
    ``.grad`` (creating them where autograd gave none)."""
    params = dict(module.named_parameters())
    for name, g in grads.items():
        p = params.get(name)
        if p is None:
            raise KeyError(f"{where}: {name!r} is not a parameter (its parameters: "
                           f"{', '.join(params)})")
        if p.grad is None:
            p.grad = g.detach().to(p.dtype).clone()
        else:
            p.grad.add_(g.detach().to(p.dtype))

"""Scratch tensors reused from sweep to sweep.

A Gibbs sweep of 4096 walkers makes about ten temporaries of 2-13 MB. The CPU allocator hands
blocks that large back to the system when they are freed, so a fresh one page-faults on first
touch, every sweep (~1,400 faults per sweep here, a few ms in this project's VMs). One
:class:`Scratch` per :func:`raybm.samplers.gibbs.step` call keeps them for all ``k`` sweeps.
A tensor obtained from it is overwritten by the next ``get`` of the same name: callers name
each buffer by its role and never hold one past the sweep that refills it.
"""

from __future__ import annotations

import torch


class Scratch:
    """Named, lazily allocated tensors; ``sub(prefix)`` shares the store under a prefix.

    It also says how the sweeps of one ``step`` call draw, which every half-step shares:
    the stream of their random words (``random_bits.STREAMS``) and whether the fast path's
    draws run compiled (``samplers.fused``)."""

    def __init__(self, store: dict[str, torch.Tensor] | None = None, prefix: str = "",
                 stream: str = "sfc64", compiled: bool = False) -> None:
        self._store = {} if store is None else store
        self._prefix = prefix
        self.stream = stream
        self.compiled = compiled

    def get(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """The buffer ``name`` with this shape, dtype and device (contents undefined)."""
        key = self._prefix + name
        t = self._store.get(key)
        shape = tuple(shape)
        stale = t is None or tuple(t.shape) != shape or t.dtype != dtype
        if stale or t.device != torch.device(device):
            t = torch.empty(shape, dtype=dtype, device=device)
            self._store[key] = t
        return t

    def sub(self, prefix: str) -> Scratch:
        """The same store, names prefixed with ``prefix`` (e.g. one per half-step)."""
        return Scratch(self._store, self._prefix + prefix + ".", self.stream, self.compiled)

"""The walker population: one vocabulary for every sampler, algorithm and checkpoint."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

# The dtypes a walker's state may have, by the name checkpoints record (``str(dtype)`` less
# ``torch.``). A fixed list, so a walker file can only ever ask for a dtype we know how to
# rebuild bit-exactly; bool and complex are left out on purpose (no sampler produces them).
X_DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


@dataclass
class WalkerState:
    """A population of Markov-chain states ("walkers").

    x:          ``(n, *shape)`` walker states of any dtype in :data:`X_DTYPES`: uint8 0/1 for
                binary, uint8 state indices for Potts, float32 for continuous data and
                ``(n, C, H, W)`` images. Checkpoints and the shard exchange move them as raw
                bytes (:func:`rows_to_bytes`), so every value comes back bit-exactly.
    log_weight: ``(n,)`` float64 log importance weights (zero for unweighted walkers). Kept in
                float64 because Jarzynski work accumulates over thousands of updates.
    label:      ``(n,)`` int64 label of each walker, or None for RBMs without a label unit.
    cond:       ``(n, *shape)`` float condition of each walker (a noise level, a time), or
                None: what a noise-conditioned energy takes beside ``x``. Moved and
                checkpointed bit-exactly like ``x``.
    """

    x: torch.Tensor
    log_weight: torch.Tensor
    label: torch.Tensor | None = None
    cond: torch.Tensor | None = None

    @property
    def n_walkers(self) -> int:
        return self.x.shape[0]

    @property
    def condition(self) -> torch.Tensor | None:
        """What the energy of these walkers is conditioned on (``energy(x, cond)``): the
        label when they have one, else the float condition."""
        return self.label if self.label is not None else self.cond

    def replace(self, **changes) -> "WalkerState":
        return replace(self, **changes)

    def take(self, index: torch.Tensor) -> "WalkerState":
        """The walkers ``index`` (ancestors after resampling, or a shard's rows)."""
        return WalkerState(
            x=self.x[index],
            log_weight=self.log_weight[index],
            label=None if self.label is None else self.label[index],
            cond=None if self.cond is None else self.cond[index],
        )

    def put(self, rows: torch.Tensor, other: "WalkerState") -> "WalkerState":
        """These walkers with rows ``rows`` replaced by ``other``'s, in order (every part of
        their state: the point, weight, label and condition); a copy, ``self`` unchanged."""
        def put(mine: torch.Tensor | None, theirs: torch.Tensor | None) -> torch.Tensor | None:
            if mine is None:
                return None
            out = mine.clone()
            out[rows] = theirs
            return out

        return WalkerState(x=put(self.x, other.x), log_weight=put(self.log_weight, other.log_weight),
                           label=put(self.label, other.label), cond=put(self.cond, other.cond))

    @staticmethod
    def unweighted(x: torch.Tensor, label: torch.Tensor | None = None,
                   cond: torch.Tensor | None = None) -> "WalkerState":
        return WalkerState(x=x, log_weight=torch.zeros(x.shape[0], dtype=torch.float64),
                           label=label, cond=cond)


def concat_walkers(parts: list[WalkerState]) -> WalkerState:
    """The populations ``parts`` one after the other (shards in rank order, kept + received)."""
    return WalkerState(
        x=torch.cat([w.x for w in parts]),
        log_weight=torch.cat([w.log_weight for w in parts]),
        label=None if parts[0].label is None else torch.cat([w.label for w in parts]),
        cond=None if parts[0].cond is None else torch.cat([w.cond for w in parts]),
    )


def dtype_name(dtype: torch.dtype) -> str:
    """The name a walker file records for ``dtype`` (a :data:`X_DTYPES` key)."""
    name = str(dtype).removeprefix("torch.")
    if X_DTYPES.get(name) != dtype:
        raise ValueError(f"walker states of dtype {dtype} are not supported "
                         f"(one of {', '.join(X_DTYPES)})")
    return name


def row_bytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    """Bytes one walker of per-walker ``shape`` and ``dtype`` takes."""
    return math.prod(shape) * dtype.itemsize


def rows_to_bytes(x: torch.Tensor) -> torch.Tensor:
    """``(n, *shape)`` of any dtype as ``(n, row_bytes)`` uint8: each row's native bytes.

    A byte view, not a conversion, so floats (NaN payloads, -0.0, subnormals) and bfloat16
    (which numpy cannot hold) survive exactly; ``reshape`` with explicit sizes so 0 rows work.
    """
    n = x.shape[0]
    return x.contiguous().reshape(n, math.prod(x.shape[1:])).view(torch.uint8)


def rows_from_bytes(raw: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype
                    ) -> torch.Tensor:
    """The inverse of :func:`rows_to_bytes`: ``(n, row_bytes)`` uint8 back to ``(n, *shape)``.

    ``raw`` may be a column slice of a wider byte matrix: it is copied first, because viewing
    bytes as a wider dtype needs a buffer aligned to that dtype, which a slice starting at an
    odd byte offset is not (even a one-row slice, which counts as contiguous).
    """
    n, width = raw.shape
    if width != row_bytes(shape, dtype):
        raise ValueError(f"{width} bytes a row, but {tuple(shape)} of {dtype} takes "
                         f"{row_bytes(shape, dtype)}")
    fresh = raw.clone(memory_format=torch.contiguous_format)
    return fresh.view(dtype).reshape(n, *shape)


def shard_sizes(n: int, world_size: int) -> list[int]:
    """How ``n`` walkers (or minibatch rows) split over ``world_size`` shards: as evenly as
    possible, the first ``n % world_size`` shards one larger. Every rank computes the same."""
    base, extra = divmod(n, world_size)
    return [base + (r < extra) for r in range(world_size)]


def shard_slice(n: int, world_size: int, rank: int) -> slice:
    """The rows of shard ``rank`` in the rank-ordered concatenation of all shards."""
    sizes = shard_sizes(n, world_size)
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])

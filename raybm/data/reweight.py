"""Sequence reweighting for alignments: down-weight near-duplicate sequences.

Aligned families are sampled very unevenly (many close homologues of a few well-studied
organisms). The standard correction in DCA / RBM work gives sequence ``i`` the weight

    w_i = 1 / |{ j : id(i, j) >= theta }|,    id(i, j) = (1/L) sum_c [x_ic == x_jc]

(``j = i`` included, so ``w_i <= 1``; gaps count as a state, so gap-gap matches count as
identity). ``n_eff = sum_i w_i`` is the effective number of sequences.

With one-hot codes ``X`` of shape ``(n, L*q)``, ``X X^T`` counts the identical columns of every
pair, so the neighbour counts are a matmul done ``block_size`` rows at a time
(memory ``block_size x n``) instead of an ``n x n x L`` comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def identity_weights(
    x: torch.Tensor, n_states: int, threshold: float, block_size: int = 1024
) -> torch.Tensor:
    """``(n,)`` float32 weights ``1 / #neighbours`` at sequence identity ``>= threshold``.

    ``threshold`` must be in ``(0, 1]`` (the caller checks and reports it).
    """
    n, length = x.shape
    onehot = F.one_hot(x.long(), n_states).reshape(n, length * n_states).to(torch.float32)
    # Identical-column counts are exact small integers in float32 (<= L < 2^24); compare them to
    # theta * L with a tolerance so that theta = 0.8 with L = 5 really means ">= 4 columns".
    min_same = threshold * length - 1e-6
    counts = torch.empty(n, dtype=torch.float32)
    for start in range(0, n, block_size):
        same = onehot[start : start + block_size] @ onehot.T
        counts[start : start + block_size] = (same >= min_same).sum(dim=1).to(torch.float32)
    return 1.0 / counts

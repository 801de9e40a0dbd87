"""Named random streams: every generator a run uses is derived from ``(seed, stream, *index)``.

A run has one seed (``train.seed``) but needs many independent streams: the initial
parameters (the same on every rank), each rank's own walker stream, the minibatch order of each
epoch (the same on every rank), the ancestors of each resampling (the same on every rank), the
Jarzynski kick, evaluation, ... Deriving them as ``seed + constant`` or ``seed * constant +
index`` makes streams collide: with such offsets the minibatch order of epoch ``e`` and the
``e``-th resampling came from the same integer seed, and evaluation shared rank 1's stream.
Here each stream's seed is a hash of its name and indices, so two different (stream, index)
pairs collide only with probability ~2^-63, and a new stream never disturbs the existing ones.

``STREAMS`` is the list of names in use; asking for an unknown name is a programming error.
"""

from __future__ import annotations

import hashlib

import torch

STREAMS: dict[str, str] = {
    "init": "initial parameters and data-independent set-up, the same on every rank",
    "modules": "initial parameters of the trained modules an estimator declares, every rank's same",
    "walkers": "rank r's own draws while training (Gibbs sweeps, walker initialisation)",
    "resplit": "rank r's draws after a resume onto a different number of shards, at step s",
    "minibatch": "the permutation of the training set at epoch e, the same on every rank",
    "resample": "the ancestors of the j-th resampling, the same on every rank",
    "kick": "the Jarzynski kick off the zero-coupling start, the same on every rank",
    "synthetic": "the built-in synthetic data sets (data.synthetic.seed)",
    "split": "the train / test split (data.split_seed)",
    "subsample": "data.max_samples: which rows of a large data set are kept",
    "evaluate": "end-of-run metrics (sampled accuracy, generation scores, AIS)",
    "artifacts": "sample grids and plots written at the end of a run",
    "chains": "the grid of fresh chains beside a run's persistent walkers (chains.png)",
    "sample": "raybm sample",
}


def stream_seed(seed: int, stream: str, *index: int) -> int:
    """A 63-bit seed for ``stream`` (a name in :data:`STREAMS`) at ``index`` of run seed ``seed``.

    SHA-256 of the decimal text ``"<seed>/<stream>/<i0>/<i1>..."``: stable across Python and
    torch versions and platforms (unlike ``hash``), so checkpoints continue identically
    anywhere.
    """
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    text = "/".join([str(int(seed)), stream, *(str(int(i)) for i in index)])
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generator(seed: int, stream: str, *index: int,
              device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded for ``stream`` at ``index``."""
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream, *index))

"""Generation scores: how close samples of a model are to a data set (F&F, arXiv 2307.06797).

All scores compare a data set ``data (n, N)`` with generated samples ``samples (m, N)``, both
uint8 (0/1 for binary, state index for categorical / Potts data). Categorical sites enter the
second-order scores as one-hot columns ("features"), binary sites as themselves.

- **Adversarial accuracy** (Yale et al. 2020, "Generation and evaluation of privacy preserving
  synthetic health data", Neurocomputing 416; used by Carbone et al. 2023, arXiv 2307.06797).
  A 1-nearest-neighbour classifier tells data from samples, with Hamming distances (number of
  differing sites) on equally many rows of each (the larger set is subsampled):

      aa_truth = mean over data points i of  1[d_TT(i) < d_TS(i)]
      aa_syn   = mean over samples j of      1[d_SS(j) < d_ST(j)]
      aai      = (aa_truth + aa_syn) / 2

  with ``d_TT(i)`` the distance from data point ``i`` to its nearest *other* data point,
  ``d_TS(i)`` to its nearest sample, and ``d_SS``, ``d_ST`` likewise for samples. Both are
  0.5 for samples indistinguishable from data, ~1 when samples are far from the data (the
  classifier always wins), ~0 when samples copy the data (overfitting). Hamming distances are
  integers, so ties are common: raybm counts a tie as 1/2 (the classifier guesses), where Yale
  et al.'s strict inequality would count it as a loss and bias the score towards 0.
- **Spectrum error** (raybm's own definition; F&F compare PCA spectra visually):
  with ``lambda_k`` and ``mu_k`` the eigenvalues of the covariance matrices of the data's and
  the samples' features, sorted in decreasing order,

      spectrum_error = ||mu - lambda||_2 / ||lambda||_2

  a scale-free distance dominated, like a PCA plot, by the leading modes. Ideal 0.
- **Entropy ratio** (F&F): gzip size of the samples over that of as many data rows (rows
  bit-packed for binary data, one byte per site otherwise), both in random order. A model that
  lacks diversity compresses better (ratio < 1), noise worse (ratio > 1). Ideal 1.
- **Moment errors**: RMSE between data and samples of the single-site frequencies (``first``)
  and of the connected correlations ``C_ab = <x_a x_b> - <x_a><x_b>`` over feature pairs of
  distinct sites (``second``). Ideal 0 up to the sampling error ``~ sqrt(p(1-p)/n)``.
- **Copy rate**: fraction of samples identical to some data row.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import numpy as np
import torch

from raybm.models.rbm import RBM
from raybm.samplers import gibbs

SCORE_NAMES = (
    "aa_truth", "aa_syn", "aai", "spectrum_error", "entropy_ratio",
    "first_moment_error", "second_moment_error", "copy_rate",
)

# Distances come out of float32 matmuls: exact for integers below 2^24 sites. Blocks of rows
# keep the (block, m) distance matrix near 64 MiB.
_BLOCK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------------------- features
def infer_n_states(*arrays: torch.Tensor) -> int:
    """Number of site states: ``max + 1`` over the arrays, at least 2."""
    top = max((int(a.max()) for a in arrays if a.numel()), default=1)
    return max(2, top + 1)


def features(
    x: torch.Tensor, n_states: int = 2, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """``(n, N)`` states -> features: the sites themselves for binary data (``(n, N)``),
    one-hot for categorical data (``(n, N * n_states)``, columns site-major)."""
    x = _as_states(x)
    if n_states == 2:
        return x.to(dtype)
    return torch.nn.functional.one_hot(x.long(), n_states).reshape(x.shape[0], -1).to(dtype)


def covariance(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean (D,), covariance (D, D))`` of feature rows, population normalisation (``1/n``).
    Centred before the product so small correlations do not cancel against large means."""
    mean = feat.mean(0)
    centred = feat - mean
    return mean, centred.T @ centred / feat.shape[0]


def principal_axes(
    data: torch.Tensor, k: int = 2, n_states: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean (D,), axes (D, k), variances (k,))``: the top ``k`` principal components of the
    data's features, decreasing variance."""
    n_states = n_states or infer_n_states(data)
    mean, cov = covariance(features(data, n_states))
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:k]
    return mean, evecs[:, order], evals[order]


# ---------------------------------------------------------------------------- distances
def nearest_distances(
    a: torch.Tensor, b: torch.Tensor, n_states: int = 2, exclude_self: bool = False,
    block_elements: int = _BLOCK_ELEMENTS,
) -> torch.Tensor:
    """Hamming distance from each row of ``a`` to its nearest row of ``b``, int64 ``(len(a),)``.

    ``exclude_self``: ``a`` and ``b`` are the same set and row ``i`` of ``a`` must not match
    row ``i`` of ``b`` (the nearest *other* point). Binary rows use
    ``d(x, y) = |x| + |y| - 2 x.y``, categorical rows ``d(x, y) = N - onehot(x).onehot(y)``:
    one matmul per block of rows either way.
    """
    a, b = _as_states(a), _as_states(b)
    if exclude_self and a.shape != b.shape:
        raise ValueError("exclude_self needs a and b to be the same set")
    if len(b) == 0 or (exclude_self and len(b) < 2):
        raise ValueError("no neighbour to measure a distance to")
    if n_states == 2:
        fa, fb = a.to(torch.float32), b.to(torch.float32)
        na, nb = fa.sum(1), fb.sum(1)
    else:
        fa, fb = features(a, n_states, torch.float32), features(b, n_states, torch.float32)
    fbt = fb.T.contiguous()
    block = max(1, block_elements // len(b))
    out = torch.empty(len(a), dtype=torch.int64)
    for start in range(0, len(a), block):
        stop = min(start + block, len(a))
        dot = fa[start:stop] @ fbt
        if n_states == 2:
            dist = na[start:stop, None] + nb[None, :] - 2.0 * dot
        else:
            dist = a.shape[1] - dot
        if exclude_self:
            rows = torch.arange(stop - start)
            dist[rows, rows + start] = float("inf")
        out[start:stop] = dist.min(1).values.round().long()
    return out


def adversarial_accuracy(
    data: torch.Tensor, samples: torch.Tensor, n_states: int = 2
) -> tuple[float, float, float]:
    """``(aa_truth, aa_syn, aai)`` of two equally large sets; ties count 1/2 (see module doc)."""
    if len(data) != len(samples):
        raise ValueError(f"need equal sizes, got {len(data)} and {len(samples)}")
    d_tt = nearest_distances(data, data, n_states, exclude_self=True)
    d_ts = nearest_distances(data, samples, n_states)
    d_ss = nearest_distances(samples, samples, n_states, exclude_self=True)
    d_st = nearest_distances(samples, data, n_states)
    aa_truth = _win_rate(d_tt, d_ts)
    aa_syn = _win_rate(d_ss, d_st)
    return aa_truth, aa_syn, 0.5 * (aa_truth + aa_syn)


def _win_rate(d_same: torch.Tensor, d_other: torch.Tensor) -> float:
    wins = (d_same < d_other).double() + 0.5 * (d_same == d_other).double()
    return float(wins.mean())


# ---------------------------------------------------------------------------- other scores
def spectrum_error(cov_data: torch.Tensor, cov_samples: torch.Tensor) -> float:
    """``||mu - lambda||_2 / ||lambda||_2`` over the sorted covariance spectra (see module doc)."""
    lam = torch.linalg.eigvalsh(cov_data).flip(0)
    mu = torch.linalg.eigvalsh(cov_samples).flip(0)
    norm = torch.linalg.vector_norm(lam)
    if norm == 0:
        return 0.0 if torch.linalg.vector_norm(mu) == 0 else float("inf")
    return float(torch.linalg.vector_norm(mu - lam) / norm)


def gzip_size(x: torch.Tensor, n_states: int = 2) -> int:
    """Bytes of the gzip-compressed rows (bit-packed for binary data)."""
    arr = np.ascontiguousarray(_as_states(x).numpy())
    raw = np.packbits(arr, axis=1) if n_states == 2 else arr
    # mtime=0: the header then holds no timestamp, so equal inputs give equal sizes.
    return len(gzip.compress(raw.tobytes(), compresslevel=9, mtime=0))


def entropy_ratio(data: torch.Tensor, samples: torch.Tensor, n_states: int = 2) -> float:
    """gzip size of ``samples`` over that of ``data`` (equally many rows, caller shuffles)."""
    if len(data) != len(samples):
        raise ValueError(f"entropy ratio needs equal sizes, got {len(data)} and {len(samples)}")
    return gzip_size(samples, n_states) / gzip_size(data, n_states)


def copy_rate(data: torch.Tensor, samples: torch.Tensor) -> float:
    """Fraction of rows of ``samples`` that equal some row of ``data``."""
    seen = {row.tobytes() for row in np.ascontiguousarray(_as_states(data).numpy())}
    rows = np.ascontiguousarray(_as_states(samples).numpy())
    return sum(row.tobytes() in seen for row in rows) / max(1, len(rows))


def moment_errors(
    data_moments: tuple[torch.Tensor, torch.Tensor],
    sample_moments: tuple[torch.Tensor, torch.Tensor],
    n_states: int,
) -> tuple[float, float]:
    """RMSE of the frequencies and of the connected correlations between feature pairs of
    distinct sites, from ``(mean, covariance)`` pairs (:func:`covariance`)."""
    (f_d, c_d), (f_s, c_s) = data_moments, sample_moments
    first = float(torch.sqrt(((f_d - f_s) ** 2).mean()))
    per_site = 1 if n_states == 2 else n_states
    site = torch.arange(len(f_d)) // per_site
    pairs = site[:, None] < site[None, :]  # same-site pairs are fixed by the frequencies
    if not pairs.any():
        return first, 0.0
    second = float(torch.sqrt(((c_d - c_s)[pairs] ** 2).mean()))
    return first, second


# ---------------------------------------------------------------------------- entry points
@torch.no_grad()
def generation_scores(
    gen: torch.Generator,
    data: torch.Tensor,
    samples: torch.Tensor,
    n_states: int | None = None,
    max_rows: int | None = None,
) -> dict[str, float]:
    """Every score of the module docstring, keyed by :data:`SCORE_NAMES`.

    gen:      random generator, used to subsample and shuffle rows for the adversarial
              accuracy and the entropy ratio (equal sizes: ``min(n, m)``, capped at
              ``max_rows``, whose cost is ``O(rows^2 N)``). Moments, spectrum and copy rate use
              every row.
    n_states: states per site; inferred as ``max + 1`` (at least 2) when not given.
    """
    data, samples = _as_states(data), _as_states(samples)
    if data.dim() != 2 or samples.dim() != 2 or data.shape[1] != samples.shape[1]:
        raise ValueError(
            f"need data (n, N) and samples (m, N), got {tuple(data.shape)}, {tuple(samples.shape)}"
        )
    if len(data) < 2 or len(samples) < 2:
        raise ValueError("need at least 2 data rows and 2 samples")
    n_states = n_states or infer_n_states(data, samples)
    rows = min(len(data), len(samples), max_rows or len(data))
    # Random order for both: data files are often sorted (by class, by family), which gzip
    # would reward, and nearest neighbours need a random subset anyway.
    sub_d = data[torch.randperm(len(data), generator=gen)[:rows]]
    sub_s = samples[torch.randperm(len(samples), generator=gen)[:rows]]
    aa_truth, aa_syn, aai = adversarial_accuracy(sub_d, sub_s, n_states)
    mom_d = covariance(features(data, n_states))
    mom_s = covariance(features(samples, n_states))
    first, second = moment_errors(mom_d, mom_s, n_states)
    return {
        "aa_truth": aa_truth,
        "aa_syn": aa_syn,
        "aai": aai,
        "spectrum_error": spectrum_error(mom_d[1], mom_s[1]),
        "entropy_ratio": entropy_ratio(sub_d, sub_s, n_states),
        "first_moment_error": first,
        "second_moment_error": second,
        "copy_rate": copy_rate(data, samples),
    }


@torch.no_grad()
def score_curve(
    gen: torch.Generator,
    model: RBM,
    data: torch.Tensor,
    t_list: Sequence[int],
    n_samples: int,
    label: int | torch.Tensor | None = None,
    precision: str = "fp32",
    max_rows: int | None = None,
) -> dict[str, list[float]]:
    """Generation scores of the model's samples after ``t_G`` Gibbs sweeps from the uniform
    distribution, for each ``t_G`` in ``t_list`` (the F&F generation-quality curve).

    One population of ``n_samples`` walkers is run once and scored on the way, so ``t_list``
    must be non-decreasing. With a label unit, ``label`` (an int or an ``(n_samples,)`` tensor)
    is clamped, and ``data`` should then hold that class's rows; without it the label is
    sampled along. Returns one list per score name, aligned with ``t_list``.
    """
    ts = [int(t) for t in t_list]
    if any(t < 0 for t in ts) or any(b < a for a, b in zip(ts, ts[1:])):
        raise ValueError(f"t_list must be non-negative and non-decreasing, got {ts}")
    if isinstance(label, int):
        label = torch.full((n_samples,), label, dtype=torch.long)
    data = _as_states(data)
    state = gibbs.init_uniform(gen, model, n_samples, label=label)
    curves: dict[str, list[float]] = {name: [] for name in SCORE_NAMES}
    done = 0
    for t in ts:
        if t > done:
            state, _ = gibbs.step(
                gen, state, model, t - done, clamp_label=label is not None, precision=precision
            )
            done = t
        scores = generation_scores(gen, data, state.x, n_states=model.n_states, max_rows=max_rows)
        for name in SCORE_NAMES:
            curves[name].append(scores[name])
    return curves


def _as_states(x) -> torch.Tensor:
    """uint8 tensor view of ``x`` (a tensor or a numpy array)."""
    t = torch.as_tensor(x)
    if t.dtype != torch.uint8:
        t = t.to(torch.uint8)
    return t

"""Mode weights and mixing of a continuous model, read against the modes of labelled data.

A multimodal target's hard quantity is the share of mass in each mode: Langevin chains that
cannot cross between modes keep whatever shares they started with, and an energy trained on
them learns wrong weights (Carbone, Hua, Coste, Vanden-Eijnden 2023, arXiv 2305.19414;
Grenioux, Moulines, Gabrié 2023, arXiv 2306.00684, section 5.1). Three readings here:

- a mixture energy's own weights, its components matched to the data's modes;
- **frozen chains**: the run's kernel run on from its final walkers with the model fixed; the
  time-and-chain average of the mode indicator, and the potential scale reduction R-hat of
  the indicator and of the first coordinate across all chains (of all shards): stuck chains
  give R-hat far above 1, mixing ones near 1;
- **importance sampling through a flow** ``q`` (FlowMC-EBM's): ``y_i ~ q``,
  ``w_i = exp(-E(y_i) - log q(y_i))``, self-normalised, with the effective sample size
  ``(sum w)^2 / sum w^2``.

The data's modes are its labelled components (a synthetic mixture's components): each has a
mean and one isotropic width, fitted to its samples, and a point belongs to the component of
highest Gaussian density (no prior: a mode's share must not bias which mode a point is in).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from raybm.algorithms.resample import ess_fraction, log_mean_weight
from raybm.data.dataset import Dataset

# Matching a mixture's components to the data's modes tries every permutation up to this
# many components (8! = 40,320); beyond, components are matched each to its nearest mode.
MAX_PERMUTED = 8


@dataclass(frozen=True)
class Modes:
    """The modes of a labelled continuous data set: ``means (K, d)``, per-mode variances
    ``(K,)`` and the data's weights ``(K,)`` (a synthetic mixture's own weights when it
    records them, else the label frequencies)."""

    means: torch.Tensor
    variances: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def of(cls, data: Dataset) -> "Modes | None":
        """The modes of ``data``, or None where it has none: data whose labels are not
        declared modes of its density (``info["labels_are_modes"]``: the synthetic mixtures;
        a digit's class is not a mode), fewer than 2 modes, a mode with fewer than 2
        samples."""
        if (not data.info.get("labels_are_modes") or not data.continuous
                or data.labels is None or len(data.event_shape) != 1):
            return None
        x, labels = data.x.double(), data.labels
        k = data.n_labels
        counts = torch.bincount(labels, minlength=k).double()
        if k < 2 or bool((counts < 2).any()):
            return None
        means = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x)
        means /= counts[:, None]
        spread = (x - means[labels]).square().sum(1)
        variances = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, spread)
        variances /= counts * x.shape[1]
        recorded = data.info.get("weights")
        weights = (torch.tensor(recorded, dtype=torch.float64)
                   if recorded is not None and len(recorded) == k else counts / counts.sum())
        return cls(means, variances, weights / weights.sum())

    @property
    def n_modes(self) -> int:
        return self.means.shape[0]

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K)`` ``log N(x; mean_k, variance_k I)``."""
        x = x.reshape(x.shape[0], -1).double()
        d2 = (x.unsqueeze(1) - self.means).square().sum(-1)
        d = self.means.shape[1]
        return -d2 / (2 * self.variances) - 0.5 * d * torch.log(2 * math.pi * self.variances)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """``(n,)`` the mode each point belongs to."""
        return self.log_density(x).argmax(1)

    def shares(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``(K,)`` the (weighted) fraction of points in each mode."""
        w = torch.ones(x.shape[0], dtype=torch.float64) if weights is None else weights.double()
        out = torch.zeros(self.n_modes, dtype=torch.float64).index_add_(0, self.assign(x), w)
        return out / out.sum()

    def match(self, centres: torch.Tensor) -> list[int]:
        """The mode of each of ``K'`` component centres: with as many components as modes,
        the one-to-one matching of least total cost ``|c - mean_k|^2 / variance_k``; else
        each centre's own mode."""
        cost = -self.log_density(centres)
        if centres.shape[0] != self.n_modes or self.n_modes > MAX_PERMUTED:
            return cost.argmin(1).tolist()
        best = min(itertools.permutations(range(self.n_modes)),
                   key=lambda p: float(sum(cost[i, j] for i, j in enumerate(p))))
        return list(best)


def weight_metrics(shares: torch.Tensor, modes: Modes, prefix: str = "") -> dict[str, float]:
    """``<prefix>mode_weight_<k>`` in the data's order and ``<prefix>mode_weight_error``, the
    largest difference from the data's weights."""
    out = {f"{prefix}mode_weight_{k}": float(v) for k, v in enumerate(shares)}
    out[f"{prefix}mode_weight_error"] = float((shares - modes.weights).abs().max())
    return out


def rhat(values: torch.Tensor) -> float:
    """Split R-hat (Gelman et al., Bayesian Data Analysis, 3rd ed., section 11.4) of
    ``values (T, m)``: ``T`` draws of ``m`` chains, each chain cut in two halves, with

        W = mean within-half variance,  B/n = variance of the half means,
        R-hat = sqrt(((n - 1)/n W + B/n) / W),   n = T // 2.

    Chains that never change (``W = 0``) while their means differ give ``inf``: stuck in
    different modes, the chains never mix; all equal gives 1."""
    n = values.shape[0] // 2
    if n < 2:
        raise ValueError(f"R-hat needs at least 4 draws per chain, got {values.shape[0]}")
    v = values[: 2 * n].double()
    halves = torch.cat([v[:n], v[n:]], 1)  # (n, 2m)
    within = halves.var(0, unbiased=True).mean()
    between = halves.mean(0).var(unbiased=True)
    if float(within) == 0.0:
        return math.inf if float(between) > 0 else 1.0
    return float(torch.sqrt(((n - 1) / n * within + between) / within))


@torch.no_grad()
def frozen_chain_metrics(gen: torch.Generator, model, kernel, walkers, rounds: int, k: int,
                         modes: Modes | None) -> dict[str, float]:
    """Run ``rounds`` rounds of ``k`` kernel steps from ``walkers`` with ``model`` fixed,
    recording every round: ``rhat_first_coordinate``; with ``modes``, ``rhat_mode`` (the
    worst over the modes' indicators), ``chain_mode_weight_<k>`` (the indicator averaged over
    rounds, and over chains by the walkers' weights: equal but for Jarzynski's) and
    ``chain_mode_weight_error``; ``rhat``, the worst of all; the kernel's diagnostics averaged
    over the rounds (``chain_acceptance``, ``chain_imh_acceptance``)."""
    first, modes_seen, infos = [], [], []
    state = walkers
    chain_weights = torch.softmax(walkers.log_weight.double(), 0)
    for _ in range(rounds):
        state, info = kernel.step(gen, state, model, k)
        infos.append(info.metrics("chain_"))
        x = state.x.reshape(state.x.shape[0], -1)
        first.append(x[:, 0].double())
        if modes is not None:
            modes_seen.append(modes.assign(x))
    out = {"rhat_first_coordinate": rhat(torch.stack(first))}
    if modes is not None:
        seen = torch.stack(modes_seen)  # (rounds, chains)
        indicators = [(seen == j).double() for j in range(modes.n_modes)]
        out["rhat_mode"] = max(rhat(i) for i in indicators)
        shares = torch.stack([(i.mean(0) * chain_weights).sum() for i in indicators])
        out |= weight_metrics(shares, modes, "chain_")
    out["rhat"] = max(v for name, v in out.items() if name.startswith("rhat"))
    out["chain_rounds"] = float(rounds)
    for name in infos[0]:
        out[name] = float(sum(float(i[name]) for i in infos) / len(infos))
    return out


@torch.no_grad()
def importance_metrics(gen: torch.Generator, model, flow, n: int,
                       modes: Modes | None) -> dict[str, float]:
    """Self-normalised importance sampling of ``exp(-E)`` through ``flow`` (``n`` draws):
    ``is_ess`` (a fraction of ``n``), ``is_log_z`` (the estimate of ``log Z``: unbiased in
    ``Z``, a lower bound in expectation of ``log Z``) and, with ``modes``,
    ``is_mode_weight_<k>`` and ``is_mode_weight_error``."""
    y, log_q = flow.sample(gen, n)
    log_w = -model.energy(y).double() - log_q.double()
    finite = torch.isfinite(log_w)
    log_w = torch.where(finite, log_w, torch.full_like(log_w, -math.inf))
    w = torch.softmax(log_w, 0)
    out = {"is_ess": ess_fraction(log_w), "is_log_z": log_mean_weight(log_w)}
    if modes is not None:
        out |= weight_metrics(modes.shares(y, w), modes, "is_")
    return out


def mixture_mode_weights(model, modes: Modes) -> dict[str, float]:
    """A Gaussian mixture energy's own weights, summed over the components matched to each
    of the data's modes (in the data's order)."""
    matched = modes.match(model.means.detach())
    shares = torch.zeros(modes.n_modes, dtype=torch.float64)
    shares.index_add_(0, torch.tensor(matched), model.mode_weights())
    return weight_metrics(shares, modes)

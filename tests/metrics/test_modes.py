"""Mode weights and mixing read against labelled data (``metrics.modes``): R-hat of known
chains, the data's modes, the matching of a mixture's components, frozen chains that mix and
that are stuck, importance sampling with a known answer."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from raybm.data.continuous import gaussian_mixture
from raybm.metrics.modes import (Modes, frozen_chain_metrics, importance_metrics,
                                 mixture_mode_weights, rhat)
from raybm.models.gaussian import GaussianMixtureEnergy
from raybm.samplers.base import KernelBase, KernelInfo
from raybm.samplers.exact import exact_start
from raybm.samplers.langevin import MALA
from raybm.walkers import WalkerState

MEANS = torch.tensor([[-8.0, 0.0, 0.0], [0.0, 8.0, 0.0], [8.0, 0.0, 3.0]])
WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def data(n: int = 6000):
    return gaussian_mixture(gen(), n, MEANS, WEIGHTS, [0.5, 1.0, 1.5])


def test_rhat_of_independent_chains_is_one_within_its_error():
    # iid draws: R-hat - 1 is O(1/n); with n = 500 per half and 16 halves it is < 0.01.
    values = torch.randn(1000, 8, generator=gen(), dtype=torch.float64)
    assert abs(rhat(values) - 1) < 0.01


def test_rhat_of_chains_stuck_apart_is_infinite_and_of_shifted_chains_large():
    stuck = torch.tensor([0.0, 1.0, 0.0, 1.0]).expand(100, 4)
    assert rhat(stuck) == math.inf
    assert rhat(torch.ones(100, 4)) == 1.0
    shifted = torch.randn(200, 4, generator=gen(1), dtype=torch.float64) + torch.arange(4) * 3
    assert rhat(shifted) > 2
    with pytest.raises(ValueError, match="4 draws"):
        rhat(torch.zeros(3, 2))


def test_the_modes_of_a_mixture_are_its_components():
    modes = Modes.of(data())
    torch.testing.assert_close(modes.means.float(), MEANS, atol=0.1, rtol=0)
    torch.testing.assert_close(modes.variances.sqrt(),
                               torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64),
                               atol=0.05, rtol=0)
    torch.testing.assert_close(modes.weights, WEIGHTS)  # the mixture's own, recorded
    d = data()
    assert bool((modes.assign(d.x) == d.labels).all())


def test_data_whose_labels_are_not_modes_has_none():
    from raybm.data.dataset import Dataset

    d = data()
    assert Modes.of(Dataset(x=d.x, n_states=0, labels=d.labels, label_names=d.label_names)) is None


def test_a_mixtures_components_are_matched_to_the_data_modes_in_the_datas_order():
    modes = Modes.of(data())
    order = [2, 0, 1]  # the model's component j sits on the data's mode order[j]
    model = GaussianMixtureEnergy(MEANS[order] + 0.3, torch.log(WEIGHTS[order]).float())
    out = mixture_mode_weights(model, modes)
    torch.testing.assert_close(torch.tensor([out[f"mode_weight_{k}"] for k in range(3)],
                                            dtype=torch.float64), WEIGHTS)
    assert out["mode_weight_error"] < 1e-6


@dataclass(frozen=True)
class ExactDraws(KernelBase):
    """Each step a fresh exact draw of the model: chains that mix perfectly."""

    name: ClassVar[str] = "exact_draws"
    invariant: ClassVar[bool] = True

    def step(self, gen, state, model, k, *, clamp_label=False):
        fresh, _ = exact_start(gen, model, state.n_walkers)
        return state.replace(x=fresh.x), KernelInfo(acceptance=1.0)


def teacher() -> GaussianMixtureEnergy:
    model = GaussianMixtureEnergy(MEANS, torch.log(WEIGHTS).float(), learn_std=True)
    with torch.no_grad():
        model.log_stds.copy_(torch.log(torch.tensor([0.5, 1.0, 1.5])))
    return model


def test_frozen_chains_that_mix_give_rhat_near_one_and_the_weights():
    model, modes = teacher(), Modes.of(data())
    walkers, _ = exact_start(gen(1), model, 400)
    out = frozen_chain_metrics(gen(2), model, ExactDraws(), walkers, 100, 1, modes)
    assert out["rhat"] < 1.02  # iid: R-hat - 1 = O(1/100)
    n = 400 * 100
    for k, w in enumerate(WEIGHTS.tolist()):
        assert abs(out[f"chain_mode_weight_{k}"] - w) < 4 * math.sqrt(w * (1 - w) / n)
    assert out["chain_acceptance"] == 1.0 and out["chain_rounds"] == 100


def test_frozen_chains_stuck_in_their_modes_keep_their_start_shares():
    # MALA never crosses 8 std between modes: every chain keeps its mode, R-hat is infinite
    # and the chains' weights are the shares they started with (equal), not the model's.
    model, modes = teacher(), Modes.of(data())
    x = torch.cat([MEANS[k].expand(100, 3) for k in range(3)])
    walkers = WalkerState.unweighted(x.clone())
    out = frozen_chain_metrics(gen(3), model, MALA(0.05), walkers, 50, 5, modes)
    assert out["rhat_mode"] == math.inf and out["rhat"] == math.inf
    assert out["rhat_first_coordinate"] > 2
    for k in range(3):
        assert out[f"chain_mode_weight_{k}"] == pytest.approx(1 / 3)
    assert out["chain_mode_weight_error"] == pytest.approx(0.5 - 1 / 3)


class ExactFlow:
    """A proposal that is the target itself: ``sample`` draws the mixture exactly."""

    def __init__(self, model):
        self.model = model

    def sample(self, g, n):
        state, log_z = exact_start(g, self.model, n)
        return state.x, -self.model.energy(state.x).double() - log_z


def test_importance_sampling_through_the_target_itself_is_exact():
    model, modes = teacher(), Modes.of(data())
    out = importance_metrics(gen(4), model, ExactFlow(model), 20_000, modes)
    assert out["is_ess"] == pytest.approx(1.0)
    assert out["is_log_z"] == pytest.approx(model.log_partition(), abs=1e-4)
    n = 20_000
    for k, w in enumerate(WEIGHTS.tolist()):
        assert abs(out[f"is_mode_weight_{k}"] - w) < 4 * math.sqrt(w * (1 - w) / n)


def test_importance_sampling_through_a_wide_proposal_reweights_it():
    # A proposal much wider than the target, N(0, 81 I): an ESS well below 1, the weights
    # still within a few standard errors (of the ESS's size).
    model, modes = teacher(), Modes.of(data())
    out = importance_metrics(gen(6), model, Wide(3, 9.0), 200_000, modes)
    assert 0.001 < out["is_ess"] < 0.9
    n_eff = out["is_ess"] * 200_000
    for k, w in enumerate(WEIGHTS.tolist()):
        assert abs(out[f"is_mode_weight_{k}"] - w) < 5 * math.sqrt(w * (1 - w) / n_eff)
    assert out["is_log_z"] == pytest.approx(model.log_partition(), abs=0.1)


class Wide:
    """``N(0, scale^2 I)`` with the ``sample(gen, n) -> (x, log q)`` of a flow."""

    def __init__(self, dim, scale):
        self.dim, self.scale = dim, scale

    def sample(self, g, n):
        z = torch.randn((n, self.dim), generator=g)
        log_q = (-0.5 * z.square().sum(1) - 0.5 * self.dim * math.log(2 * math.pi)
                 - self.dim * math.log(self.scale))
        return self.scale * z, log_q


def test_a_2d_energys_own_weights_by_quadrature_are_its_mixture_weights():
    """``metrics.continuous.grid_mode_weights``, the reading of a 2-D energy without weights
    of its own (an MLP): on a mixture energy, whose weights are known, the grid's mass per
    mode is the mixture's weight to the grid's resolution (the modes 6 widths apart, the
    mass between them under 1e-4), in the data's order."""
    from raybm.metrics.continuous import grid_extent, grid_log_density, grid_mode_weights

    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    truth = torch.tensor([0.15, 0.6, 0.25], dtype=torch.float64)
    points = gaussian_mixture(gen(), 4000, means, truth, 0.5)
    model = GaussianMixtureEnergy(means[[2, 0, 1]], truth[[2, 0, 1]].log().float(), std=0.5)
    extent = grid_extent(points, margin=0.5)
    log_density, _, border = grid_log_density(model, extent)
    assert border < 1e-6
    read = grid_mode_weights(log_density, extent, Modes.of(points))
    assert [read[f"mode_weight_{k}"] for k in range(3)] == pytest.approx(truth.tolist(),
                                                                        abs=1e-3)
    assert read["mode_weight_error"] < 1e-3

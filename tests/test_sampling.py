"""Samples of a trained run (``raybm.sampling``, ``raybm sample``): what the run learned,
from the right source, said in one line; checked against known mode weights within
Monte-Carlo standard errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from raybm.cli import main
from raybm.errors import InputError
from raybm.models.gaussian import GaussianMixtureEnergy
from raybm.models.neural import MLPEnergy
from raybm.sampling import draw
from raybm.samplers.gibbs import GibbsKernel
from raybm.samplers.langevin import MALA, ULA
from raybm.walkers import WalkerState
from tests.test_continuous_run import JARZYNSKI, MIXTURE


def within(fraction: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    """``fraction`` of ``n`` independent draws agrees with probability ``p``."""
    return abs(fraction - p) <= sigmas * math.sqrt(p * (1 - p) / n)


def minor_mixture(dim: int = 50) -> GaussianMixtureEnergy:
    """The Jarzynski research's d = 50 mixture: weights 1/4 at -10 e1, 3/4 at +6 e1."""
    means = torch.zeros(2, dim)
    means[0, 0], means[1, 0] = -10.0, 6.0
    return GaussianMixtureEnergy(means, torch.log(torch.tensor([0.25, 0.75])))


def test_a_mixture_is_drawn_exactly_with_its_weights():
    """The d = 50 mixture with minor weight 1/4: exact draws put 1/4 in the minor mode (k
    ULA steps from N(0, I) put 2.3% there)."""
    n = 4000
    drawn = draw(torch.Generator().manual_seed(1), minor_mixture(), ULA(0.1), n)
    assert drawn.source == "exact" and drawn.how == "exact draws of the model"
    assert within(float((drawn.x[:, 0] < -2).double().mean()), 0.25, n)
    chains = draw(torch.Generator().manual_seed(1), minor_mixture(), ULA(0.1), 500, k=20)
    assert chains.source == "chains" and "20 ula steps from N(0, I)" in chains.how
    assert "biased by its step size" in chains.how


def test_weighted_walkers_are_resampled_by_their_weights():
    """Two walkers with weights 0.2 / 0.8: resampled draws follow the weights, not the
    walker count; the line reports the ESS."""
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0]]).repeat(500, 1)  # 500 of each
    log_weight = torch.log(torch.tensor([0.2, 0.8], dtype=torch.float64)).repeat(500)
    walkers = WalkerState(x, log_weight)
    mlp = MLPEnergy(2, (8,), gen=torch.Generator().manual_seed(0))  # no exact sampler
    n = 3000
    drawn = draw(torch.Generator().manual_seed(2), mlp, MALA(0.1), n, walkers=walkers, step=7)
    assert drawn.source == "walkers"
    assert drawn.how.startswith("the run's 1000 walkers at update 7 resampled by their weights")
    ess = 1 / (1000 * ((0.2**2 + 0.8**2) / 500))  # (sum w)^2 / sum w^2 / n
    assert f"ESS {ess:.3f} of 1000" in drawn.how
    assert within(float((drawn.x[:, 0] < 0).double().mean()), 0.2, n)


def test_unweighted_walkers_are_distinct_while_there_are_enough():
    walkers = WalkerState.unweighted(torch.arange(10.0).reshape(10, 1))
    mlp = MLPEnergy(1, (4,), gen=torch.Generator().manual_seed(0))
    few = draw(torch.Generator().manual_seed(0), mlp, ULA(0.1), 10, walkers=walkers)
    assert sorted(few.x.flatten().tolist()) == list(range(10))
    assert few.how.startswith("distinct persistent walkers of the run's 10")
    many = draw(torch.Generator().manual_seed(0), mlp, ULA(0.1), 25, walkers=walkers)
    assert many.x.shape == (25, 1) and "with replacement" in many.how


def test_chains_when_nothing_else_is_there_and_refusals_name_the_flag():
    mlp = MLPEnergy(2, (8,), gen=torch.Generator().manual_seed(0))
    drawn = draw(torch.Generator().manual_seed(0), mlp, MALA(0.05, (-1.0, 1.0)), 6,
                 default_k=30)
    assert drawn.source == "chains" and drawn.x.shape == (6, 2)
    assert drawn.how.startswith("30 mala steps from uniform noise in [-1.0, 1.0]")
    cases = {("walkers", None): "--from", ("exact", None): "--from", ("walkers", 5): "--k"}
    for (source, k), flag in cases.items():
        with pytest.raises(InputError) as err:
            draw(torch.Generator(), mlp, MALA(0.05), 4, source=source, k=k)
        assert err.value.where == flag


def test_label_models_clamp_the_label_in_chains():
    from raybm.models.rbm import build_rbm

    rbm = build_rbm(6, 3, 2, 4)
    drawn = draw(torch.Generator().manual_seed(0), rbm, GibbsKernel(), 8, k=2, label=3)
    assert drawn.label.tolist() == [3] * 8 and drawn.how.endswith("label 3 clamped")
    assert "2 gibbs steps from uniform noise" in drawn.how


def test_cli_samples_a_trained_mixture_exactly_and_its_walkers_by_weight(tmp_path, capsys):
    """A Jarzynski run on the 2-mode mixture: the default draws exactly from the learned
    mixture (its minor weight within Monte-Carlo error), --from walkers resamples the run's
    walkers, and the printed line says which."""
    run = tmp_path / "run"
    assert main(["train", *[f"--set={s}" for s in MIXTURE + JARZYNSKI + ["train.n_updates=10"]],
                 "--out", str(run)]) == 0
    capsys.readouterr()
    from raybm.checkpoint import load_checkpoint

    weights = load_checkpoint(run).model.mode_weights()
    n = 2000
    assert main(["sample", str(run), "--n", str(n), "--out", str(tmp_path / "e.npz")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"wrote {n} samples to {tmp_path / 'e.npz'}: exact draws of the model")
    with np.load(tmp_path / "e.npz") as f:
        x = torch.from_numpy(f["x"])
    # Component 0 sits at -4 e1, component 1 at +3 e1 (after 10 updates, near there).
    means = load_checkpoint(run).model.means.detach()
    nearest = torch.cdist(x, means).argmin(1)
    assert within(float((nearest == 0).double().mean()), float(weights[0]), n)
    assert main(["sample", str(run), "--from", "walkers", "--n", "50", "--out",
                 str(tmp_path / "w.npz")]) == 0
    assert "the run's 500 walkers at update 10 resampled by their weights (ESS" in (
        capsys.readouterr().out)
    assert main(["sample", str(run), "--from", "walkers", "--k", "3", "--out",
                 str(tmp_path / "bad.npz")]) == 2
    assert capsys.readouterr().err.strip() == (
        "raybm: error: --k: sets the length of chains, not of --from walkers")
    assert not (tmp_path / "bad.npz").exists()

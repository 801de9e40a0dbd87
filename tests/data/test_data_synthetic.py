"""Synthetic generators: exact distributions and samplers checked against them."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from raybm.data.synthetic import (
    bimodal_prototypes,
    enumerate_states,
    prototype_mixture,
    prototype_mixture_logprob,
    random_teacher,
    state_index,
    teacher_log_z,
    teacher_logprob,
    teacher_rbm_samples,
)
from raybm.errors import InputError

# A p-value threshold for the goodness-of-fit tests: with a correct sampler the test fails for
# a fraction 1e-3 of seeds; the seed is fixed, so the outcome is deterministic, and the power
# check below shows the same test does reject a slightly wrong distribution.
P_MIN = 1e-3


def test_bimodal_prototypes_are_complementary():
    protos = bimodal_prototypes(7)
    assert protos.dtype == torch.uint8 and protos.shape == (2, 7)
    assert protos[0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert torch.equal(protos[1], 1 - protos[0])


def test_mixture_component_and_flip_frequencies():
    gen = torch.Generator().manual_seed(1234)
    protos = torch.tensor(
        [[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1], [1, 0, 1, 0, 1, 0, 1, 0]], dtype=torch.uint8
    )
    weights = torch.tensor([0.2, 0.5, 0.3])
    n, f = 20_000, 0.1
    data = prototype_mixture(gen, n, protos, weights, f)
    assert data.x.shape == (n, 8) and data.x.dtype == torch.uint8 and data.label_names == ["0", "1", "2"]
    # Component counts are binomial: each frequency within 4 standard errors of its weight.
    freq = torch.bincount(data.labels, minlength=3).double() / n
    se = torch.sqrt(weights.double() * (1 - weights.double()) / n)
    assert ((freq - weights.double()).abs() < 4 * se).all(), (freq, weights)
    # Bits flip independently with probability f: the flip rate is binomial over n * 8 bits.
    flips = (data.x != protos[data.labels]).double().mean()
    assert abs(flips - f) < 4 * math.sqrt(f * (1 - f) / (n * 8))


def test_mixture_logprob_is_normalised_and_exact():
    protos = bimodal_prototypes(6)
    states = enumerate_states(6)
    weights = torch.tensor([1.0, 3.0])  # normalised inside
    for f in (0.0, 0.15, 1.0):
        logp = prototype_mixture_logprob(states, protos, weights, f)
        assert torch.logsumexp(logp, 0).item() == pytest.approx(0.0, abs=1e-12)
    # By hand: the first prototype itself at f = 0.15.
    logp = prototype_mixture_logprob(protos[:1], protos, weights, 0.15)
    expected = math.log(0.25 * 0.85**6 + 0.75 * 0.15**6)
    assert logp.item() == pytest.approx(expected, rel=1e-12)


def test_state_index_inverts_enumeration():
    states = enumerate_states(5)
    assert states.shape == (32, 5)
    assert torch.equal(state_index(states), torch.arange(32))
    assert states[6].tolist() == [0, 1, 1, 0, 0]  # bit i of 6 is v_i


def brute_force_logprob(W, vbias, hbias):
    """``(log p(v) for all v, log Z)`` by summing exp(-E(v, h)) over every (v, h): independent
    of the softplus formula used by the module."""
    nv, nh = W.shape
    table = torch.empty(2**nv, dtype=torch.float64)
    hiddens = [torch.tensor(h, dtype=torch.float64) for h in itertools.product([0, 1], repeat=nh)]
    for s, v in enumerate(enumerate_states(nv).double()):
        terms = [v @ vbias + h @ hbias + v @ W @ h for h in hiddens]
        table[s] = torch.logsumexp(torch.stack(terms), 0)
    log_z = torch.logsumexp(table, 0)
    return table - log_z, log_z.item()


def test_teacher_logprob_matches_brute_force():
    W, vbias, hbias = random_teacher(torch.Generator().manual_seed(3), 5, 3, 1.0)
    assert W.dtype == vbias.dtype == hbias.dtype == torch.float64
    exact = teacher_logprob(enumerate_states(5), W, vbias, hbias)
    brute, log_z = brute_force_logprob(W, vbias, hbias)
    assert torch.allclose(exact, brute, atol=1e-10)
    assert teacher_log_z(W, vbias, hbias) == pytest.approx(log_z, rel=1e-12)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson chi-square p-value of multinomial counts against probabilities.

    The chi2(K-1) approximation needs expected counts >= 5, so the rarest states are pooled into
    one bin until it reaches 5.
    """
    n = counts.sum().item()
    expected = probs * n
    order = torch.argsort(expected)
    cum = torch.cumsum(expected[order], 0)
    n_pool = int((cum < 5).sum()) + 1 if expected.min() < 5 else 0
    pooled = order[:n_pool]
    kept = order[n_pool:]
    obs = torch.cat([counts[kept].double(), counts[pooled].double().sum().reshape(1)])
    exp = torch.cat([expected[kept], expected[pooled].sum().reshape(1)])
    if n_pool == 0:
        obs, exp = obs[:-1], exp[:-1]
    chi2 = ((obs - exp) ** 2 / exp).sum().item()
    return float(stats.chi2.sf(chi2, df=len(obs) - 1))


def test_teacher_sampler_matches_exact_probabilities():
    gen = torch.Generator().manual_seed(2024)
    W, vbias, hbias = random_teacher(gen, 5, 3, 1.0)
    n = 50_000
    data = teacher_rbm_samples(gen, W, vbias, hbias, n)
    assert data.x.shape == (n, 5) and data.x.dtype == torch.uint8 and data.n_states == 2
    assert data.info["log_z"] == pytest.approx(teacher_log_z(W, vbias, hbias))
    counts = torch.bincount(state_index(data.x), minlength=32)
    probs = teacher_logprob(enumerate_states(5), W, vbias, hbias).exp()
    assert chi_square_p(counts, probs) > P_MIN
    # Total variation as a readable second measure: E[TV] ~ sqrt(K / (2 pi n)) ~ 0.01 here.
    assert 0.5 * (counts.double() / n - probs).abs().sum() < 0.03
    # Power: the same test rejects a teacher whose first visible bias is off by 0.2.
    shifted = vbias.clone()
    shifted[0] += 0.2
    wrong = teacher_logprob(enumerate_states(5), W, shifted, hbias).exp()
    assert chi_square_p(counts, wrong) < P_MIN


def test_teacher_sampling_is_reproducible():
    W, vbias, hbias = random_teacher(torch.Generator().manual_seed(0), 8, 4, 0.5)
    a = teacher_rbm_samples(torch.Generator().manual_seed(5), W, vbias, hbias, 100)
    b = teacher_rbm_samples(torch.Generator().manual_seed(5), W, vbias, hbias, 100)
    assert torch.equal(a.x, b.x)


def test_teacher_too_large_to_enumerate():
    W, vbias, hbias = random_teacher(torch.Generator().manual_seed(0), 21, 2, 0.1)
    with pytest.raises(InputError) as caught:
        teacher_rbm_samples(torch.Generator(), W, vbias, hbias, 10)
    assert "n_visible" in str(caught.value)
    with pytest.raises(InputError):
        teacher_logprob(torch.zeros(1, 21), W, vbias, hbias)


def test_mixture_bad_parameters():
    protos = bimodal_prototypes(4)
    gen = torch.Generator()
    for kwargs, field in [
        ({"weights": torch.tensor([1.0])}, "weights"),
        ({"weights": torch.tensor([-1.0, 2.0])}, "weights"),
        ({"flip_prob": 1.5}, "flip_prob"),
        ({"prototypes": torch.full((2, 4), 2, dtype=torch.uint8)}, "prototypes"),
    ]:
        args = {"prototypes": protos, "weights": torch.tensor([0.5, 0.5]), "flip_prob": 0.1} | kwargs
        with pytest.raises(InputError) as caught:
            prototype_mixture(gen, 10, **args)
        assert field in str(caught.value)

"""Classification accuracy on tiny RBMs whose label posterior and label chain are enumerable."""

from __future__ import annotations

import math

import pytest
import torch

from raybm.metrics.classify import (
    accuracy_exact,
    accuracy_sampled,
    classification_scores,
    predict_exact,
    sample_labels,
)
from raybm.metrics.exact import all_binary_states
from raybm.models.rbm import BernoulliRBM, PottsRBM


def _random_model(seed: int = 0, coupling_std: float = 1.5) -> BernoulliRBM:
    gen = torch.Generator().manual_seed(seed)
    model = BernoulliRBM(6, 4, n_labels=3)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (coupling_std if p.dim() >= 2 else 0.5))
    return model


def _data(model: BernoulliRBM, seed: int = 1, n: int = 400) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, model.n_visible), generator=gen).to(torch.uint8)
    labels = torch.randint(0, model.n_labels, (n,), generator=gen)
    return x, labels


def _posterior_by_enumeration(model: BernoulliRBM, x: torch.Tensor) -> torch.Tensor:
    """``p(l | v)`` from ``sum_h exp(-E(v, h, l))`` over all hidden states (not via F(v, l))."""
    h = all_binary_states(model.n_hidden)
    n, n_h, n_l = len(x), len(h), model.n_labels
    vv = x.repeat_interleave(n_h * n_l, 0)  # rows ordered (sample, label, hidden state)
    hh = h.repeat(n * n_l, 1)
    ll = torch.arange(n_l).repeat_interleave(n_h).repeat(n)
    with torch.no_grad():
        e = model.joint_energy(vv, hh, ll).double().reshape(n, n_l, n_h)
    return torch.softmax(torch.logsumexp(-e, -1), -1)


def _label_chains(model: BernoulliRBM, x: torch.Tensor) -> torch.Tensor:
    """Transition matrices ``T_n[l, l'] = sum_h p(h | v_n, l) p(l' | h)`` of the
    clamped-visible label chain of every row, ``(n, L, L)``, by enumerating the hiddens."""
    h = all_binary_states(model.n_hidden).double()
    n, n_l = len(x), model.n_labels
    with torch.no_grad():
        p_l = model.label_prob(h).double()  # (2^M, L)
        field = model.hidden_field(x.repeat_interleave(n_l, 0), torch.arange(n_l).repeat(n))
        log_p1 = torch.nn.functional.logsigmoid(field.double())  # (n L, M)
        log_p0 = torch.nn.functional.logsigmoid(-field.double())
        p_h = torch.exp(log_p1 @ h.T + log_p0 @ (1 - h).T)  # (n L, 2^M)
    return (p_h @ p_l).reshape(n, n_l, n_l)


def test_exact_accuracy_matches_enumeration():
    model = _random_model()
    x, labels = _data(model)
    post = _posterior_by_enumeration(model, x)
    torch.testing.assert_close(model.label_prob_v(x).double(), post, rtol=0, atol=1e-5)
    expected = float((post.argmax(-1) == labels).double().mean())
    assert accuracy_exact(model, x, labels) == pytest.approx(expected, abs=1e-12)
    # the argmax labels themselves are classified perfectly, whatever the chunking
    assert accuracy_exact(model, x, post.argmax(-1)) == 1.0
    assert torch.equal(predict_exact(model, x, chunk=7), post.argmax(-1))


def test_exact_accuracy_hand_built_model():
    # Hidden j copies visible j, label l is coupled to hidden l: v = e_l has label l.
    model = BernoulliRBM(2, 2, n_labels=2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2) * 8.0)
        model.hbias.fill_(-4.0)
        model.label_weight.copy_(torch.eye(2) * 6.0)
    x = torch.tensor([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=torch.uint8)
    assert accuracy_exact(model, x, torch.tensor([0, 1, 0, 1])) == 1.0
    assert accuracy_exact(model, x, torch.tensor([0, 1, 1, 0])) == 0.5
    assert accuracy_exact(model, x, torch.tensor([1, 0, 1, 0])) == 0.0


@pytest.mark.parametrize("k", [0, 1, 3, 100])
def test_sampled_accuracy_matches_label_chain(k):
    # After k sweeps from uniform labels, row n's label is distributed as u T_n^k, so the
    # expected accuracy is mean_n (u T_n^k)[label_n]. The accuracy is a mean of independent
    # Bernoulli hits; its standard error is sqrt(sum q (1 - q)) / (n sqrt(R)): 4 of them.
    # Strong label couplings and labels that mostly agree with the model, so the expected
    # accuracy moves well away from 1/3 as k grows and the test can tell k's apart.
    model = _random_model(seed=2, coupling_std=3.0)
    x, labels = _data(model, seed=3, n=200)
    labels[:150] = _posterior_by_enumeration(model, x[:150]).argmax(-1)
    n_repeats = 10
    uniform = torch.full((len(x), 1, model.n_labels), 1.0 / model.n_labels, dtype=torch.float64)
    dist = (uniform @ torch.linalg.matrix_power(_label_chains(model, x), k))[:, 0]
    q = dist[torch.arange(len(x)), labels]
    expected = float(q.mean())
    se = math.sqrt(float((q * (1 - q)).sum())) / (len(x) * math.sqrt(n_repeats))
    acc = accuracy_sampled(torch.Generator().manual_seed(k), model, x, labels, k, n_repeats)
    assert abs(acc - expected) < 4 * se, (acc, expected, se)
    if k == 100:  # the label chain has reached p(l | v)
        post = _posterior_by_enumeration(model, x)
        assert expected == pytest.approx(float(post[torch.arange(len(x)), labels].mean()), abs=1e-6)


def test_sample_labels_shape_and_scores_keys():
    model = _random_model()
    x, labels = _data(model, n=50)
    gen = torch.Generator().manual_seed(0)
    lab = sample_labels(gen, model, x, 5)
    assert lab.shape == (50,) and lab.dtype == torch.int64
    assert int(lab.min()) >= 0 and int(lab.max()) < model.n_labels
    scores = classification_scores(gen, model, x, labels, k=5, k_large=50)
    assert set(scores) == {"accuracy_exact", "accuracy_sampled_k", "accuracy_sampled_large_k"}
    assert all(0.0 <= s <= 1.0 for s in scores.values())


def test_potts_model_runs():
    model = PottsRBM(5, 4, 3, n_labels=2)
    model.init_parameters(torch.Generator().manual_seed(0), weight_std=1.0)
    x = torch.randint(0, 4, (30, 5), dtype=torch.uint8)
    labels = predict_exact(model, x)
    assert accuracy_exact(model, x, labels) == 1.0
    assert 0.0 <= accuracy_sampled(torch.Generator().manual_seed(1), model, x, labels, 3) <= 1.0


def test_errors():
    with pytest.raises(ValueError):
        accuracy_exact(BernoulliRBM(3, 2), torch.zeros(4, 3, dtype=torch.uint8), torch.zeros(4))
    model = _random_model()
    with pytest.raises(ValueError):
        accuracy_exact(model, torch.zeros(4, 6, dtype=torch.uint8), torch.zeros(3))
    with pytest.raises(ValueError):
        accuracy_sampled(torch.Generator(), model, torch.zeros(4, 6, dtype=torch.uint8),
                         torch.zeros(4), k=-1)

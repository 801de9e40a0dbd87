"""Contract test for every gradient estimator: its gradient, averaged over chains, equals the
exact expectation computed by enumeration (transition matrices of the Gibbs kernel), and PCD
at equilibrium equals the exact log-likelihood gradient.

Tolerance: each gradient component may differ by at most 5 Monte-Carlo standard errors,
``5 * sqrt(Var_q[dF/dtheta] / n)`` with the variance computed *exactly* under the chains'
distribution ``q``; over the ~50 components of a tiny model a correct estimator exceeds that
with probability below 1e-4, while a wrong sign, a missing phase or a transposed axis does not
come close.
"""

from __future__ import annotations

import pytest
import torch

from raybm.algorithms import Batch, ContrastiveDivergence, KStep, PersistentContrastiveDivergence
from raybm.algorithms.centering import Centering
from raybm.algorithms.base import ENERGY, data_term, walker_term
from raybm.gradients import add_gradients
from raybm.metrics.exact import as_float64
from raybm.walkers import WalkerState
from tests.enumeration import all_visible_states, random_model, transition_matrix

N_CHAINS = 200_000


def flat_grad(model, loss) -> torch.Tensor:
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])


def estimate_grad(model, est) -> torch.Tensor:
    """The energy gradient an estimate gives the trainer: its loss's backward pass plus the
    gradients it hands over (an RBM's closed form), flattened in parameter order."""
    model.zero_grad(set_to_none=True)
    if est.loss.requires_grad:
        est.loss.backward()
    add_gradients(model, est.grads.get(ENERGY, {}), "estimate")
    return torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()])


def per_state_grads(model, vs, labels):
    """dF(v, l)/dtheta for every state, ``(n_states, n_params)``."""
    rows = []
    for i in range(len(vs)):
        lab = None if labels is None else labels[i : i + 1]
        rows.append(flat_grad(model, model.free_energy(vs[i : i + 1], lab).sum()))
    return torch.stack(rows)


def check_negative_phase(model, estimate_grad, data_grad, q, vs, labels, n):
    """``estimate_grad = data_grad - E_q[dF]`` within 5 SE (SE from the exact Var_q)."""
    g = per_state_grads(model, vs, labels)
    mean = q @ g
    var = q @ (g - mean) ** 2
    se = (var / n).sqrt()
    diff = (estimate_grad - (data_grad - mean)).abs()
    assert (diff <= 5 * se + 1e-9).all(), f"max |diff|/se = {float((diff / (se + 1e-12)).max()):.1f}"


def data_batch(model, gen, n, with_labels):
    vs = all_visible_states(model)
    idx = torch.tensor([3, 17, 8, 22])
    rows = idx.repeat(n // len(idx))
    label = torch.tensor([0, 1, 2, 1]).repeat(n // len(idx)) if with_labels else None
    return Batch(vs[rows], label), vs


def uniform_start(model, vs, n_labels):
    return torch.full((len(vs) * max(n_labels, 1),), 1.0 / (len(vs) * max(n_labels, 1)),
                      dtype=torch.float64)


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_kstep_generation_without_labels(kind):
    model = as_float64(random_model(kind, torch.Generator().manual_seed(1), 0, scale=0.6))
    gen = torch.Generator().manual_seed(2)
    batch, vs = data_batch(model, gen, N_CHAINS, False)
    est = KStep(k=2, classification=False).estimate(gen, model, batch, None, "generation")
    grad = estimate_grad(model, est)
    data_grad = flat_grad(model, data_term(model, batch))
    q = uniform_start(model, vs, 0) @ torch.linalg.matrix_power(transition_matrix(model), 2)
    check_negative_phase(model, grad, data_grad, q, vs, None, N_CHAINS)


def test_kstep_with_labels_generation_and_classification():
    model = as_float64(random_model("bernoulli", torch.Generator().manual_seed(3), 3, scale=0.6))
    gen = torch.Generator().manual_seed(4)
    batch, vs = data_batch(model, gen, N_CHAINS, True)
    estimator = KStep(k=3)
    assert estimator.phases == ("generation", "classification")
    data_grad = flat_grad(model, data_term(model, batch))
    # generation: labels clamped to the batch labels, visibles from uniform, k sweeps
    grad = estimate_grad(model, estimator.estimate(gen, model, batch, None, "generation"))
    u = torch.full((len(vs),), 1.0 / len(vs), dtype=torch.float64)
    g_neg = torch.zeros_like(data_grad)
    var = torch.zeros_like(data_grad)
    for lab, share in ((0, 0.25), (1, 0.5), (2, 0.25)):
        q = u @ torch.linalg.matrix_power(transition_matrix(model, "label", lab), 3)
        g = per_state_grads(model, vs, torch.full((len(vs),), lab))
        m = q @ g
        g_neg += share * m
        var += share * (q @ (g - m) ** 2)  # within-class variance: classes are fixed shares
    se = (var / N_CHAINS).sqrt()
    assert ((grad - (data_grad - g_neg)).abs() <= 5 * se + 1e-9).all()
    # classification: visibles clamped to the batch, labels from uniform, k label steps
    grad = estimate_grad(model, estimator.estimate(gen, model, batch, None, "classification"))
    g_neg = torch.zeros_like(data_grad)
    var = torch.zeros_like(data_grad)
    for vi in (3, 17, 8, 22):
        q = torch.full((3,), 1 / 3, dtype=torch.float64) @ torch.linalg.matrix_power(
            transition_matrix(model, "visible", vi), 3)
        g = per_state_grads(model, vs[vi].repeat(3, 1), torch.arange(3))
        m = q @ g
        g_neg += 0.25 * m
        var += 0.25 * (q @ (g - m) ** 2)
    se = (var / N_CHAINS).sqrt()
    assert ((grad - (data_grad - g_neg)).abs() <= 5 * se + 1e-9).all()


@pytest.mark.parametrize("n_labels", [0, 3])
def test_cd_k_chains_start_at_the_data(n_labels):
    model = as_float64(random_model("bernoulli", torch.Generator().manual_seed(5), n_labels,
                                    scale=0.6))
    gen = torch.Generator().manual_seed(6)
    batch, vs = data_batch(model, gen, N_CHAINS, n_labels > 0)
    grad = estimate_grad(model, ContrastiveDivergence(k=2).estimate(gen, model, batch, None,
                                                                    "joint"))
    data_grad = flat_grad(model, data_term(model, batch))
    nl = max(n_labels, 1)
    start = torch.zeros(len(vs) * nl, dtype=torch.float64)
    for vi, li in zip((3, 17, 8, 22), (0, 1, 2, 1)):
        start[vi * nl + (li if n_labels else 0)] += 0.25
    q = start @ torch.linalg.matrix_power(transition_matrix(model), 2)
    states = torch.arange(len(vs) * nl)
    labels = states % nl if n_labels else None
    check_negative_phase(model, grad, data_grad, q, vs[states // nl], labels, N_CHAINS)


@pytest.mark.parametrize("n_labels", [0, 3])
def test_pcd_at_equilibrium_gives_the_exact_log_likelihood_gradient(n_labels):
    """Walkers drawn from the model: E[PCD gradient] = -d/dtheta mean log p(data)."""
    model = as_float64(random_model("bernoulli", torch.Generator().manual_seed(7), n_labels,
                                    scale=0.6))
    gen = torch.Generator().manual_seed(8)
    batch, vs = data_batch(model, gen, 4, n_labels > 0)
    nl = max(n_labels, 1)
    states = torch.arange(len(vs) * nl)
    labels = states % nl if n_labels else None
    f_all = model.free_energy(vs[states // nl], labels)
    log_z = torch.logsumexp(-f_all, 0)
    exact_ll_grad = -flat_grad(model, (-model.free_energy(batch.x, batch.label) - log_z).mean())
    p = torch.softmax(-f_all.detach(), 0)
    draws = torch.multinomial(p, N_CHAINS, replacement=True, generator=gen)
    walkers = WalkerState.unweighted(vs[draws // nl], labels[draws] if n_labels else None)
    est = PersistentContrastiveDivergence(k=1).estimate(gen, model, batch, walkers, "joint")
    grad = estimate_grad(model, est)
    data_grad = flat_grad(model, data_term(model, batch))
    check_negative_phase(model, grad, data_grad, p, vs[states // nl], labels, N_CHAINS)
    # and the expectation itself is the exact log-likelihood gradient
    g = per_state_grads(model, vs[states // nl], labels)
    torch.testing.assert_close(data_grad - p @ g, exact_ll_grad, rtol=1e-9, atol=1e-9)


def test_walker_term_uses_normalised_log_weights():
    model = as_float64(random_model("bernoulli", torch.Generator().manual_seed(9), 0))
    vs = all_visible_states(model)[:3]
    w = WalkerState(vs, torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    expected = (torch.softmax(w.log_weight, 0) * model.free_energy(vs)).sum()
    torch.testing.assert_close(walker_term(model, w), expected)


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_centering_is_the_centred_gradient_of_melchior_et_al(kind):
    """The linear map on .grad equals the centred moments computed directly."""
    model = as_float64(random_model(kind, torch.Generator().manual_seed(10), 3))
    gen = torch.Generator().manual_seed(11)
    vs = all_visible_states(model)
    xd, ld = vs[torch.randint(0, len(vs), (40,), generator=gen)], torch.randint(0, 3, (40,), generator=gen)
    xm, lm = vs[torch.randint(0, len(vs), (50,), generator=gen)], torch.randint(0, 3, (50,), generator=gen)
    c = Centering(model, xd, ld)
    c.hidden_offset = torch.rand(model.n_hidden, generator=gen).double()
    c.visible_offset, c.label_offset = c.visible_offset.double(), c.label_offset.double()
    flat_grad(model, data_term(model, Batch(xd, ld)) - walker_term(model, WalkerState.unweighted(xm, lm)))
    c.transform_(model)

    def moments(x, lab):
        with torch.no_grad():
            ph = torch.sigmoid(model.hidden_field(x, lab))
        v = x.double() if kind == "bernoulli" else torch.nn.functional.one_hot(
            x.long(), model.n_states).reshape(len(x), -1).double()
        onehot = torch.nn.functional.one_hot(lab, 3).double()
        mu, lam, laml = c.hidden_offset, c.visible_offset, c.label_offset
        return ((v - lam).T @ (ph - mu) / len(x), (onehot - laml).T @ (ph - mu) / len(x),
                v.mean(0), ph.mean(0), onehot.mean(0))

    wd, dd, vd, hd, cd = moments(xd, ld)
    wm, dm, vm, hm, cm = moments(xm, lm)
    g_w, g_d = wd - wm, dd - dm
    expected = {
        "weight": g_w, "label_weight": g_d,
        "vbias": (vd - vm) - g_w @ c.hidden_offset,
        "hbias": (hd - hm) - g_w.T @ c.visible_offset - g_d.T @ c.label_offset,
        "lbias": (cd - cm) - g_d @ c.hidden_offset,
    }
    for name, value in expected.items():
        grad = getattr(model, name).grad.reshape(value.shape)
        torch.testing.assert_close(-grad, value, rtol=1e-9, atol=1e-9)

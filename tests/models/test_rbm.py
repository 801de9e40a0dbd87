"""Contract test for every RBM family: energies, free energies and conditionals against
brute-force enumeration of (v, h, l) on tiny models with coprime sizes."""

from __future__ import annotations

import pytest
import torch

from raybm.metrics.exact import all_binary_states, as_float64, log_partition
from raybm.models import BernoulliRBM, PottsRBM
from raybm.samplers.gibbs import generate
from tests.enumeration import all_visible_states, joint_table, random_model
from tests.samplers.test_digits import DIGITS

KINDS = ["bernoulli", "potts"]
LABELS = [0, 4]
TOL = dict(rtol=1e-9, atol=1e-9)  # float64 references: only rounding separates the two


@pytest.fixture(params=[(k, nl) for k in KINDS for nl in LABELS], ids=lambda p: f"{p[0]}-L{p[1]}")
def model(request):
    return _tiny(*request.param)


@pytest.fixture(params=[(k, nl) for k in KINDS for nl in LABELS if nl],
                ids=lambda p: f"{p[0]}-L{p[1]}")
def labelled_model(request):
    """The families of :func:`model` that have a label unit."""
    return _tiny(*request.param)


def _tiny(kind: str, n_labels: int):
    return as_float64(random_model(kind, torch.Generator().manual_seed(11), n_labels))


def _marginal(logp, index, size):
    return torch.zeros(size, dtype=torch.float64).index_add_(0, index, logp.exp())


def test_free_energy_sums_out_hiddens(model):
    vi, hi, li, logp, vs, hs = joint_table(model)
    log_z = torch.logsumexp(-model.joint_energy(vs[vi], hs[hi], li if model.n_labels else None), 0)
    with torch.no_grad():
        if model.n_labels:
            # log p(v, l) from the table against -F(v, l) - log Z
            key = vi * model.n_labels + li
            p_vl = _marginal(logp, key, len(vs) * model.n_labels).reshape(len(vs), model.n_labels)
            torch.testing.assert_close(-model.free_energy_per_label(vs) - log_z, p_vl.log(), **TOL)
            for l in range(model.n_labels):
                lab = torch.full((len(vs),), l)
                torch.testing.assert_close(model.free_energy(vs, lab),
                                           model.free_energy_per_label(vs)[:, l], **TOL)
        p_v = _marginal(logp, vi, len(vs))
        torch.testing.assert_close(-model.free_energy(vs) - log_z, p_v.log(), **TOL)
        assert log_partition(model) == pytest.approx(float(log_z), abs=1e-9)


def test_hidden_conditional(model):
    vi, hi, li, logp, vs, hs = joint_table(model)
    labels = range(max(model.n_labels, 1))
    for l in labels:
        keep = li == l
        for v in range(0, len(vs), 7):
            sel = keep & (vi == v)
            p = logp[sel].exp()
            ph_exact = (hs[hi[sel]].double() * (p / p.sum()).unsqueeze(1)).sum(0)
            lab = torch.tensor([l]) if model.n_labels else None
            with torch.no_grad():
                ph = model.hidden_prob(vs[v : v + 1], lab)[0]
            torch.testing.assert_close(ph, ph_exact, **TOL)


def test_visible_and_label_conditionals(model):
    vi, hi, li, logp, vs, hs = joint_table(model)
    for h in range(len(hs)):
        sel = hi == h
        p = logp[sel].exp()
        p = p / p.sum()
        with torch.no_grad():
            hrow = hs[h : h + 1]
            pv = model.visible_prob(hrow)[0]
            if isinstance(model, BernoulliRBM):
                exact = (vs[vi[sel]].double() * p.unsqueeze(1)).sum(0)
            else:
                onehot = torch.nn.functional.one_hot(vs[vi[sel]].long(), model.n_states).double()
                exact = (onehot * p.view(-1, 1, 1)).sum(0)
            torch.testing.assert_close(pv, exact, **TOL)
            if model.n_labels:
                exact_l = torch.zeros(model.n_labels, dtype=torch.float64).index_add_(0, li[sel], p)
                torch.testing.assert_close(model.label_prob(hrow)[0], exact_l, **TOL)


def test_label_given_visible(labelled_model):
    model = labelled_model
    vi, hi, li, logp, vs, hs = joint_table(model)
    key = vi * model.n_labels + li
    p_vl = _marginal(logp, key, len(vs) * model.n_labels).reshape(len(vs), model.n_labels)
    with torch.no_grad():
        torch.testing.assert_close(model.label_prob_v(vs), p_vl / p_vl.sum(1, keepdim=True), **TOL)


def test_gauge_leaves_distribution_unchanged(model):
    vs = all_visible_states(model)
    with torch.no_grad():
        for p in model.parameters():  # leave the gauge so that fixing it does something
            p.add_(0.3)
        before = -model.free_energy(vs)
        before = before - torch.logsumexp(before, 0)
        model.apply_gauge()
        after = -model.free_energy(vs)
        after = after - torch.logsumexp(after, 0)
    torch.testing.assert_close(before, after, **TOL)
    if model.n_labels:
        assert model.label_weight.sum(0).abs().max() < 1e-9
    if isinstance(model, PottsRBM):
        assert model.weight.sum(1).abs().max() < 1e-9


def test_visible_bias_from_data_is_the_independent_site_model():
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(4000, 6, generator=gen) < torch.linspace(0.1, 0.9, 6)).to(torch.uint8)
    m = BernoulliRBM(6, 2)
    m.init_visible_bias(x)
    torch.testing.assert_close(torch.sigmoid(m.vbias), x.float().mean(0), atol=1e-6, rtol=0)
    xp = torch.randint(0, 4, (3000, 5), generator=gen).to(torch.uint8)
    mp = PottsRBM(5, 4, 2)
    mp.init_visible_bias(xp)
    freq = torch.nn.functional.one_hot(xp.long(), 4).float().mean(0)
    torch.testing.assert_close(torch.softmax(mp.vbias, -1), freq, atol=1e-3, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_returns_compact_visibles(kind):
    m = random_model(kind, torch.Generator().manual_seed(0), 3)
    x = generate(torch.Generator().manual_seed(1), m, 17, 4, label=2)
    assert x.shape == (17, m.n_visible) and x.dtype == torch.uint8
    assert int(x.max()) < m.n_states
    again = generate(torch.Generator().manual_seed(1), m, 17, 4, label=2)
    assert torch.equal(x, again)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        BernoulliRBM(0, 3)
    with pytest.raises(ValueError):
        BernoulliRBM(3, 3, n_labels=1)
    with pytest.raises(ValueError):
        PottsRBM(3, 1, 3)


def test_all_binary_states_is_counting_order():
    s = all_binary_states(3)
    assert s.tolist()[:3] == [[0, 0, 0], [1, 0, 0], [0, 1, 0]]


def _changed(model, gen, step):
    """A copy of ``model`` moved by ``step`` times a standard normal on every parameter."""
    import copy

    new = copy.deepcopy(model)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(step * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return new


@pytest.mark.parametrize("precision", ["fp32", "bf16", "digits"])
def test_energy_change_is_the_difference_of_free_energies(model, precision):
    _check_energy_change(model, False, precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "digits"])
def test_energy_change_of_f_v_with_the_labels_summed_out(labelled_model, precision):
    _check_energy_change(labelled_model, True, precision)


def _check_energy_change(model, summed: bool, precision: str) -> None:
    """The closed-form work (``energy_change``) against the difference of the two free energies
    in float64, every visible state (and label). fp32 (here float64 models), and digits
    (which a float64 model does not take): only rounding separates them. bf16: the
    products from int8 digits, within the error their bound allows
    (``|x| max|w| / 32258`` per product entry; an error in z' moves a unit's term by at most a
    quarter of it times |d|). Without a label given, a labelled RBM's ``F(v)`` (labels summed
    out) takes the difference of the energies itself."""
    gen = torch.Generator().manual_seed(5)
    new = _changed(model, gen, 0.05)
    vs = all_visible_states(model)
    cond = None if summed else (torch.arange(len(vs)) % model.n_labels if model.n_labels
                                else None)
    change = new.energy_change(model.before_change(vs, cond, precision), vs, cond)
    with torch.no_grad():
        exact = new.free_energy(vs, cond) - model.free_energy(vs, cond)
    assert change.dtype == torch.float64
    if precision in ("fp32", "digits") or summed:
        torch.testing.assert_close(change, exact, **TOL)
        return
    ones = float(model.flat_visible(vs, torch.float64).sum(1).max())
    column_max = lambda w: float(w.detach().abs().amax())  # noqa: E731
    d_max = column_max(new.hbias - model.hbias) + ones * column_max(
        new.weight - model.weight) + (column_max(new.label_weight - model.label_weight)
                                      if model.n_labels else 0.0)
    eps_z = ones * column_max(new.weight) / 32258
    eps_d = ones * max(column_max(new.weight - model.weight),
                       column_max(new.vbias - model.vbias)) / 32258
    bound = model.n_hidden * (eps_z * d_max / 4 + eps_d) + eps_d + 1e-6 * float(exact.abs().max())
    assert float((change - exact).abs().max()) <= bound


def test_energy_change_survives_a_large_change_of_the_fields():
    """Fields moved by ~20 where sigmoid(z') and expm1(-d) both saturate in float32: the closed
    form's 1 + sigmoid(z') expm1(-d) would cancel to 0 (log1p(-1) = -inf); the work is finite
    and equals the float64 difference of the free energies."""
    old = BernoulliRBM(6, 4)
    with torch.no_grad():
        old.hbias.fill_(30.0)
    new = _changed(old, torch.Generator().manual_seed(0), 0.0)
    with torch.no_grad():
        new.hbias.add_(-20.0)
    x = all_visible_states(old)
    for precision in ("fp32", "bf16", "digits"):
        change = new.energy_change(old.before_change(x, None, precision), x)
        with torch.no_grad():
            exact = as_float64(new).free_energy(x) - as_float64(old).free_energy(x)
        assert torch.isfinite(change).all()
        torch.testing.assert_close(change, exact, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
@pytest.mark.parametrize("n_labels", [0, 10])
def test_energy_change_keeps_the_precision_of_the_change(precision, n_labels):
    """An MNIST-sized float32 RBM, 2,000 random 0/1 walkers, a training-sized step (|dW| ~
    1e-4 against |W| ~ 0.05). Against float64, the difference of the two float32 free
    energies (the form ``energy_change`` replaced: two ~100-nat values cancelling) is off by
    ~1e-4. The closed form is off by < 1e-7 in fp32 (measured ~1e-8) and, in bf16 (int8
    digits of W' and dW, ~15 bits of each column's largest entry), by at most an eighth of
    the old error (measured 1/25-1/35 of it). In digits (three int8 digits of each column,
    ~2^-22 of its largest entry: float32's class), by < 2e-7, twice fp32's allowance
    (measured 3.5e-8 and 2.9e-8 against fp32's 1.1e-8 and 8.5e-9; AMD EPYC, 2026-12-08)."""
    gen = torch.Generator().manual_seed(3)
    old = BernoulliRBM(784, 512, n_labels)
    with torch.no_grad():
        for p in old.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    new = _changed(old, gen, 1e-4)
    x = (torch.rand(2000, 784, generator=gen) < 0.3).to(torch.uint8)
    cond = torch.randint(0, n_labels, (2000,), generator=gen) if n_labels else None
    change = new.energy_change(old.before_change(x, cond, precision), x, cond)
    with torch.no_grad():
        exact = (as_float64(new).free_energy(x, cond) - as_float64(old).free_energy(x, cond))
        as_before = new.free_energy(x, cond).double() - old.free_energy(x, cond).double()
    error = float((change - exact).abs().max())
    old_error = float((as_before - exact).abs().max())
    assert old_error > 1e-5, "the float32 difference is exact here: the test proves nothing"
    assert error <= {"fp32": 1e-7, "digits": 2e-7}.get(precision, old_error / 8)


@pytest.mark.parametrize("precision", ["fp32", DIGITS])
@pytest.mark.parametrize("n_labels", [0, 5])
def test_energy_change_of_a_float32_potts_rbm_keeps_the_precision_of_the_change(precision,
                                                                                 n_labels):
    """The same check on Potts visibles (200 sites, 4 states: the rows one-hot), where the
    difference of the two float32 free energies is off by ~3e-5: the closed form by < 1e-7
    in fp32 (measured 4e-9) and < 2e-7 in digits (measured 1.8e-8 and 1.5e-8 without and
    with labels; AMD EPYC, 2026-12-08)."""
    gen = torch.Generator().manual_seed(3)
    old = PottsRBM(200, 4, 128, n_labels)
    with torch.no_grad():
        for p in old.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    new = _changed(old, gen, 1e-4)
    x = torch.randint(0, 4, (2000, 200), generator=gen).to(torch.uint8)
    cond = torch.randint(0, n_labels, (2000,), generator=gen) if n_labels else None
    change = new.energy_change(old.before_change(x, cond, precision), x, cond)
    with torch.no_grad():
        exact = (as_float64(new).free_energy(x, cond) - as_float64(old).free_energy(x, cond))
        as_before = new.free_energy(x, cond).double() - old.free_energy(x, cond).double()
    assert float((as_before - exact).abs().max()) > 1e-5, "nothing to keep: proves nothing"
    assert float((change - exact).abs().max()) <= {"fp32": 1e-7, "digits": 2e-7}[precision]

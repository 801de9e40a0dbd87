"""An RBM's closed-form gradient (sufficient statistics as matmuls) against autograd.

The closed form is what every RBM estimator hands the trainer (``Estimator.contrast``); the
autograd gradient of the surrogate loss ``data_term - walker_term`` stays the reference.
Equal to float64 rounding for Bernoulli and Potts visibles, with and without a label unit,
weighted data and weighted walkers; to float32 rounding in float32; within the bf16 rounding
of the couplings and of ``c p`` with the fast path's matmuls. Then whole trainer updates,
centred and not, for PCD, F&F with labels and Jarzynski: the closed form and autograd leave
the same parameters.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from raybm.algorithms.base import (
    CONTRAST_ROW_MULTIPLE,
    ENERGY,
    Batch,
    Estimator,
    contrast_rows,
    contrast_terms,
    data_term,
    walker_term,
)
from raybm.algorithms.centering import Centering
from raybm.algorithms.contrastive import PersistentContrastiveDivergence
from raybm.gradients import add_gradients
from raybm.models.rbm import RBM, BernoulliRBM
from raybm.samplers import digits, gibbs, prepared
from raybm.samplers.gibbs import GibbsKernel
from raybm.walkers import WalkerState
from tests.enumeration import random_model


def _inputs(model: RBM, gen: torch.Generator, n_data: int, n_walkers: int, weighted: bool):
    def states(n):
        x = torch.randint(0, model.n_states, (n, model.n_visible), generator=gen)
        label = (torch.randint(0, model.n_labels, (n,), generator=gen)
                 if model.n_labels else None)
        return x.to(torch.uint8), label

    x, label = states(n_data)
    weight = torch.rand(n_data, generator=gen, dtype=torch.float64) if weighted else None
    batch = Batch(x, label, weight)
    wx, wl = states(n_walkers)
    log_weight = (torch.randn(n_walkers, generator=gen, dtype=torch.float64) if weighted
                  else torch.zeros(n_walkers, dtype=torch.float64))
    return batch, WalkerState(wx, log_weight, wl)


def _autograd(model: RBM, batch: Batch, walkers: WalkerState) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    (data_term(model, batch) - walker_term(model, walkers)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _closed(model: RBM, batch: Batch, walkers: WalkerState, precision: str = "fp32"):
    value, grads = model.weighted_energy_gradient(*contrast_terms(batch, walkers),
                                                  precision=precision)
    return value, grads


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_closed_form_is_the_autograd_gradient_in_float64(kind, n_labels, weighted):
    gen = torch.Generator().manual_seed(11 + n_labels)
    model = random_model(kind, gen, n_labels, scale=0.7).double()
    batch, walkers = _inputs(model, gen, 37, 23, weighted)
    value, grads = _closed(model, batch, walkers)
    loss = data_term(model, batch) - walker_term(model, walkers)
    torch.testing.assert_close(value, loss.detach(), rtol=1e-12, atol=1e-12)
    reference = _autograd(model, batch, walkers)
    assert set(grads) == set(reference)
    for name, g in grads.items():
        assert g.shape == reference[name].shape, name
        torch.testing.assert_close(g, reference[name], rtol=1e-12, atol=1e-12, msg=name)


def _assert_reuse_changes_nothing(est: Estimator, model: RBM, batch: Batch,
                                  walkers: WalkerState, xw: torch.Tensor, rtol: float,
                                  atol: float) -> torch.Tensor:
    """The contrast's value and gradients with the data rows' ``x W`` handed in (``xw``) are
    those it computes without it, within the tolerances, each gradient in the parameters'
    dtype; returns the value."""
    value, grads = est.contrast(model, batch, walkers)
    reused, grads_reused = est.contrast(model, replace(batch, visible_field=xw), walkers)
    torch.testing.assert_close(reused, value, rtol=rtol, atol=atol)
    for name, g in grads[ENERGY].items():
        torch.testing.assert_close(grads_reused[ENERGY][name], g, rtol=rtol, atol=atol,
                                   msg=name)
        assert grads_reused[ENERGY][name].dtype == model.weight.dtype, name
    return value


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_the_centrings_x_w_of_the_data_rows_gives_the_same_gradient(kind, n_labels):
    """The centring's offset update returns the batch's ``x W``; the update's first contrast
    (same parameters) reuses it for the data rows, the walkers' computed there."""
    gen = torch.Generator().manual_seed(31 + n_labels)
    model = random_model(kind, gen, n_labels, scale=0.7).double()
    batch, walkers = _inputs(model, gen, 37, 23, True)
    xw = Centering(model, batch.x, batch.label).update_hidden_offset(model, batch)
    torch.testing.assert_close(xw, model.flat_visible(batch.x, torch.float64)
                               @ model.weight.reshape(-1, model.n_hidden), rtol=1e-12, atol=1e-12)
    est = PersistentContrastiveDivergence(k=1, kernel=GibbsKernel())
    value = _assert_reuse_changes_nothing(est, model, batch, walkers, xw, 1e-12, 1e-12)
    # It is read (a shifted field moves the value), and only where it has a row per batch row.
    shifted, _ = est.contrast(model, replace(batch, visible_field=xw + 0.5), walkers)
    assert abs(float(shifted - value)) > 1e-3
    short, _ = est.contrast(model, replace(batch, visible_field=xw[:-1] + 0.5), walkers)
    torch.testing.assert_close(short, value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_the_centrings_bf16_x_w_is_reused_as_the_product_gives_it(kind, n_labels):
    """With bf16 matmuls the centring hands the contrast its ``x W`` as the product gives it
    (bf16, not a float32 copy), and the contrast's gradient and value with it are those it
    computes alone: the same bf16 products, each cast to float32 exactly where it is read."""
    gen = torch.Generator().manual_seed(41 + n_labels)
    model = random_model(kind, gen, n_labels, scale=0.7)
    batch, walkers = _inputs(model, gen, 37, 23, True)
    centering = Centering(model, batch.x, batch.label)
    xw = centering.update_hidden_offset(model, batch, "bf16")
    assert xw.dtype == torch.bfloat16
    flat = model.flat_visible(batch.x, torch.bfloat16)
    assert torch.equal(xw, flat @ model.weight.reshape(-1, model.n_hidden).bfloat16())
    # The offset moved by the mean of sigmoid(x W + b + D_l), x W read in float32.
    field = xw.float() + model.hbias
    if n_labels:
        field = field + model.label_weight[batch.label]
    expected = 0.5 * (1 - centering.momentum) + centering.momentum * field.sigmoid().mean(0)
    torch.testing.assert_close(centering.hidden_offset, expected, rtol=1e-6, atol=1e-7)
    est = PersistentContrastiveDivergence(k=1, kernel=GibbsKernel(precision="bf16"))
    _assert_reuse_changes_nothing(est, model, batch, walkers, xw, 1e-6, 1e-7)


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_in_float32_and_with_bf16_matmuls_within_their_rounding(kind, n_labels):
    """float32: to float32 rounding of sums of ~100 terms. bf16 (the fast path): the
    couplings and ``c p`` rounded to 8 significant bits, each gradient entry a sum of
    products with relative error <= 2^-8, against the scale of that sum's terms."""
    gen = torch.Generator().manual_seed(21 + n_labels)
    model = random_model(kind, gen, n_labels, scale=0.7)
    batch, walkers = _inputs(model, gen, 64, 48, True)
    reference = _autograd(model.double(), batch, walkers)
    model = model.float()
    for precision, tol in (("fp32", 1e-5), ("bf16", 2.0**-7)):
        _, grads = _closed(model, batch, walkers, precision)
        for name, g in grads.items():
            ref = reference[name].float()
            scale = ref.abs().max() + 1e-3
            assert float((g - ref).abs().max()) <= tol * float(scale), (precision, name)


needs_exact_int8 = pytest.mark.skipif(
    not digits.available(torch.device("cpu")),
    reason="this CPU does not sum int8 products exactly: digits run as fp32")


@needs_exact_int8
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_with_digits_within_the_digits_bound_of_float64(kind, n_labels):
    """``precision="digits"``: the walkers' ``x W`` (and the centring's, reused for the data
    rows) from digits of ``W`` (Bernoulli; Potts' field is a gather, fp32's), and
    ``X^T [c P | c]`` from digits of ``[c P | c]``. A field within the digits' bound ``d``
    of the exact one (``samplers.digits``: ``W``'s own column scale) moves
    ``p = sigmoid(z)`` by at most ``d / 4``, so a gradient entry ``sum_b c_b x_bi p_bj`` by
    at most ``sum_b |c_b| x_bi d_bj / 4``; the product's own digits add at most
    ``n1_i max_b |c_b| / (2 127^3)`` for a column of ``X`` with ``n1_i`` ones (``p <= 1``),
    plus ``2^-23`` of ``sum_b x_bi |c_b|``. Against the float64 gradient, beyond that
    bound, only float32's rounding, which fp32's own path shows (twice its largest error
    on these inputs)."""
    gen = torch.Generator().manual_seed(51 + n_labels)
    model = random_model(kind, gen, n_labels, scale=0.7).float()
    batch, walkers = _inputs(model, gen, 64, 48, True)
    centering = Centering(model, batch.x, batch.label)
    xw = centering.update_hidden_offset(model, batch, "digits")
    exact = model.flat_visible(batch.x, torch.float64) @ model.weight.double().reshape(
        -1, model.n_hidden)
    if kind == "potts":
        assert xw.dtype == torch.float32
        torch.testing.assert_close(xw.double(), exact, rtol=1e-6, atol=1e-6)
    else:
        assert torch.equal(xw, prepared.visible_digit_field(model, batch.x))
    x, cond, coef = contrast_terms(batch, walkers)
    _, g32 = model.weighted_energy_gradient(x, cond, coef, precision="fp32")
    _, gd = model.weighted_energy_gradient(x, cond, coef, precision="digits")
    _, g64 = model.double().weighted_energy_gradient(x, cond, coef.double())
    model.float()
    with torch.no_grad():
        xs = model.flat_visible(x, torch.float64)
        c = coef.double().abs().reshape(len(xs), -1).sum(1, keepdim=True)  # (n, 1)
        w = model.weight.double().reshape(-1, model.n_hidden)
        dp = torch.zeros(len(xs), model.n_hidden, dtype=torch.float64)
        if kind == "bernoulli":
            field = (xs.sum(1, keepdim=True) * w.abs().amax(0) / (2 * 127**3)
                     + (xs @ w.abs()) * 2.0**-23 + (xs @ w).abs() * 2.0**-23)
            dp = c * field / 4
        product = (xs.sum(0) * float(c.max()) / (2 * 127**3)  # (N q,): per column of X
                   + (xs.T @ c).squeeze(1) * 2.0**-23)
        allowed = {"weight": xs.T @ dp + product.unsqueeze(1), "vbias": product,
                   "hbias": dp.sum(0)}
    assert not torch.equal(gd["weight"], g32["weight"])  # the digits were read
    for name, ref in g64.items():
        ref = ref.detach()
        rounding = 2 * float((g32[name].detach().double() - ref).abs().max()) + 1e-12
        diff = (gd[name].detach().double() - ref).abs()
        if name in allowed:
            assert (diff <= allowed[name].reshape(diff.shape) + rounding).all(), name
        else:  # the label parts read no field beyond what p carries
            assert float(diff.max()) <= float(dp.sum()) + rounding, name
    # The walkers' fields computed, the data's reused: what the contrast gives alone.
    est = PersistentContrastiveDivergence(k=1, kernel=GibbsKernel(precision="digits"))
    _assert_reuse_changes_nothing(est, model, batch, walkers, xw, 1e-6, 1e-7)


@needs_exact_int8
def test_with_digits_a_single_visible_unit():
    """One visible column: ``X^T`` is a ``(1, n)`` view that torch counts as contiguous,
    whose int8 product read garbage before ``digits.sums`` made it compact."""
    model = BernoulliRBM(1, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    batch, walkers = _inputs(model, torch.Generator().manual_seed(1), 30, 20, True)
    terms = contrast_terms(batch, walkers)
    _, g32 = model.weighted_energy_gradient(*terms, precision="fp32")
    _, gd = model.weighted_energy_gradient(*terms, precision="digits")
    for name, g in g32.items():
        torch.testing.assert_close(gd[name], g, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("own", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("n", [31, 150])
def test_the_classification_contrast_is_the_autograd_gradient(kind, own, reuse, n):
    """F&F's classification phase: the batch against itself with sampled labels. ``own``:
    the fraction of rows whose sampled label is their own (rows the closed form skips, as
    they add nothing, but for those that round the count up: with 150 rows and half their
    own, 128 of them); ``reuse``: with the ``x W`` of the label chain that drew them."""
    gen = torch.Generator().manual_seed(5)
    model = random_model(kind, gen, 4, scale=0.7).double()
    batch, _ = _inputs(model, gen, n, 1, True)
    labels = (batch.label + torch.randint(1, 4, (n,), generator=gen)) % 4  # none their own
    keep = torch.rand(n, generator=gen) < own
    labels = torch.where(keep, batch.label, labels)
    est = PersistentContrastiveDivergence(k=1, kernel=GibbsKernel())
    field = None
    if reuse:
        _, field = gibbs.label_chain(gen, model, batch.x, labels, 2)
        torch.testing.assert_close(field, model.flat_visible(batch.x, torch.float64)
                                   @ model.weight.reshape(-1, model.n_hidden), rtol=1e-12, atol=1e-12)
    value, grads = est.label_contrast(model, batch, labels, field)
    if reuse and own < 1.0:  # the chain's x W is read (a shifted one moves the value)
        shifted, _ = est.label_contrast(model, batch, labels, field + 0.5)
        assert abs(float(shifted - value)) > 1e-6
    model.zero_grad(set_to_none=True)
    loss = data_term(model, batch) - data_term(model, batch, label=labels)
    loss.backward()
    torch.testing.assert_close(value, loss.detach(), rtol=1e-12, atol=1e-12)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[ENERGY][name], p.grad, rtol=1e-12, atol=1e-12,
                                   msg=name)


def test_an_rbm_with_a_label_unit_and_no_label_falls_back_to_autograd():
    """``F(v)`` with the labels summed out has no such closed form: the estimator takes the
    loss's graph instead, and the gradient is the same as the loss's."""
    gen = torch.Generator().manual_seed(3)
    model = random_model("bernoulli", gen, 3, scale=0.5).double()
    batch, walkers = _inputs(model, gen, 9, 7, False)
    batch = Batch(batch.x)
    walkers = WalkerState.unweighted(walkers.x)
    assert model.weighted_energy_gradient(batch.x, None, torch.ones(9)) is None
    est = PersistentContrastiveDivergence(k=1, kernel=GibbsKernel())
    loss, grads = Estimator.contrast(est, model, batch, walkers)
    assert grads == {} and loss.requires_grad


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("cond", ["none", "one", "two"])
def test_without_the_value_the_gradient_is_the_same_bits(kind, cond):
    """``value=False`` (an update whose loss is not read) returns a zero for the value and
    exactly the gradient computed with it: the value's softplus terms feed nothing else."""
    gen = torch.Generator().manual_seed(21)
    model = random_model(kind, gen, 0 if cond == "none" else 3, scale=0.7)
    x = torch.randint(0, model.n_states, (40, model.n_visible), generator=gen).to(torch.uint8)
    shape = {"none": None, "one": (40,), "two": (40, 2)}[cond]
    labels = None if shape is None else torch.randint(0, 3, shape, generator=gen)
    coef = torch.randn(shape or (40,), generator=gen, dtype=torch.float64)
    value, grads = model.weighted_energy_gradient(x, labels, coef)
    zero, same = model.weighted_energy_gradient(x, labels, coef, value=False)
    assert float(value) != 0.0 and zero.dtype == torch.float64 and float(zero) == 0.0
    assert set(same) == set(grads)
    for name, g in grads.items():
        assert torch.equal(same[name], g), name


@pytest.mark.parametrize("case", [
    ["algorithm.name=pcd", "algorithm.centered=true"],
    ["algorithm.name=kstep", "model.labels=true"],
    ["algorithm.name=jarzynski", "algorithm.resample_after=0"],
])
def test_updates_whose_loss_is_not_read_leave_the_same_parameters(case):
    """The trainer skips the loss's value on updates it does not log
    (``Batch.reports_loss``): three updates logged and three not leave the same bits, and
    a logged update reports a non-zero loss."""
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    sets = ["data.max_samples=300", "model.n_hidden=16", "algorithm.k=2",
            "algorithm.n_walkers=64", "train.batch_size=64", "train.threads=1",
            "train.progress=false", "tracking.enabled=false", "sampler.precision=fp32", *case]
    params = []
    for diagnostics in (True, False):
        config = load_config(None, sets)
        train, _ = load_data(config)
        trainer = make_trainer(config, train)
        for _ in range(3):
            info = trainer.update(diagnostics=diagnostics)
        if diagnostics:
            losses = [v for k, v in info.items() if k.startswith("loss_")]
            assert losses and all(v != 0.0 for v in losses), info
        params.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    for name, p in params[0].items():
        assert torch.equal(p, params[1][name]), name


def _one_update(config_sets: list[str], closed_form: bool, monkeypatch) -> dict:
    from raybm.config import load_config
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    monkeypatch.setattr(RBM, "closed_form_gradient", closed_form)
    config = load_config(None, config_sets)
    train, _ = load_data(config)
    trainer = make_trainer(config, train)
    for _ in range(3):
        trainer.update(diagnostics=False)
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("case", [
    ["algorithm.name=pcd", "algorithm.centered=true"],
    ["algorithm.name=pcd", "algorithm.centered=false"],
    ["algorithm.name=kstep", "model.labels=true"],
    ["algorithm.name=jarzynski", "algorithm.resample_after=0"],
])
def test_trainer_updates_are_the_same_by_closed_form_and_by_autograd(case, monkeypatch):
    """Three whole updates (centring, the optimizer, F&F's two phases, Jarzynski's weights):
    the closed form and autograd leave the same parameters, to float32 rounding."""
    sets = ["data.max_samples=300", "model.n_hidden=16",
            "algorithm.k=2", "algorithm.n_walkers=64", "train.batch_size=64",
            "train.threads=1", "train.progress=false", "tracking.enabled=false",
            "optimizer.lr=0.05", "sampler.precision=fp32", *case]
    closed = _one_update(sets, True, monkeypatch)
    reference = _one_update(sets, False, monkeypatch)
    for name, p in closed.items():
        torch.testing.assert_close(p, reference[name], rtol=1e-5, atol=1e-6, msg=name)


def test_the_classification_contrast_rounds_its_rows_up_with_unmoved_ones():
    """Every moved row, then unmoved ones to a multiple of 64 (a bf16 matmul shape seen
    before), never more than the batch; None where that is the whole batch."""
    gen = torch.Generator().manual_seed(8)
    for n, p in ((2000, 0.9), (2000, 0.5), (2000, 0.02), (150, 0.3), (31, 0.5), (64, 1.0),
                 (2000, 0.0)):
        moved = torch.rand(n, generator=gen) < p
        rows = contrast_rows(moved)
        count = int(moved.sum())
        expect = min(n, -(-count // CONTRAST_ROW_MULTIPLE) * CONTRAST_ROW_MULTIPLE)
        if expect == n:
            assert rows is None, (n, p)
            continue
        assert len(rows) == expect and len(set(rows.tolist())) == expect
        assert bool(moved[rows].sum() == count)  # every moved row is in
        assert bool(moved[rows[:count]].all())

"""``sampler.precision: digits``: Gibbs products from three int8 digits of the couplings.

What the digits must give: the couplings to ``2^-22`` of each column's largest entry, fields
within the module's bound of float64's, the same draws as fp32 from the same words (but where
a uniform falls within that error of its threshold), and, where int8 sums are not exact on
this CPU, the fp32 path with the run told why. The samplers' statistical checks
(``test_gibbs.py``, ``test_fast_path.py``) run every precision, digits included.
"""

from __future__ import annotations

import pytest
import torch

from raybm.models.rbm import build_rbm
from raybm.samplers import digits, gibbs, prepared
from raybm.samplers.scratch import Scratch

needs_exact_int8 = pytest.mark.skipif(
    not digits.available(torch.device("cpu")),
    reason="this CPU does not sum int8 products exactly (no VNNI / AMX-INT8, or oneDNN is "
    "capped below them): digits run as fp32 here")
# The samplers' checks run digits only where they are digits (elsewhere they are fp32's run).
DIGITS = pytest.param("digits", marks=needs_exact_int8)


def _weights(gen: torch.Generator, k: int, m: int) -> torch.Tensor:
    # Columns of very different scales, an all-zero column and one of small integers.
    w = torch.randn(k, m, generator=gen) * torch.logspace(-3, 1, m)
    w[:, 0] = 0.0
    w[:, 1] = torch.arange(k) % 5 - 2.0
    return w


@needs_exact_int8
def test_digits_hold_each_column_to_2_minus_22_of_its_largest_entry():
    """Plus float32's rounding of the column's scale (``2^-24`` of the entry)."""
    w = _weights(torch.Generator().manual_seed(0), 300, 70)
    d = digits.split(w)
    assert d.stacked.dtype == torch.int8 and d.width == 80 and d.stacked.shape == (300, 240)
    q = d.stacked.view(300, 3, d.width)[:, :, :70].double()
    assert q[:, 0].abs().max() <= 127 and q[:, 1:].abs().max() <= 64
    assert (d.stacked.view(300, 3, d.width)[:, :, 70:] == 0).all()  # the padding
    back = ((q[:, 0] * 127 + q[:, 1]) * 127 + q[:, 2]) * d.scale.double()
    colmax = w.double().abs().amax(0)
    bound = colmax / (2 * 127**3) + w.double().abs() * 2.0**-23
    assert ((back - w.double()).abs() <= bound).all()
    assert (back[:, 0] == 0).all()


@needs_exact_int8
@pytest.mark.parametrize("ones", [0.02, 0.5, 1.0])
def test_fields_are_within_the_digits_bound_of_float64(ones):
    """The bound of the module docstring, ``n1 max_i |W_ij| / (2 127^3)`` for a row of
    ``n1`` ones, plus float32's rounding of the result; float32's own product is in the
    same class (checked beside it)."""
    gen = torch.Generator().manual_seed(1)
    w = _weights(gen, 784, 100)
    x = (torch.rand(500, 784, generator=gen) < ones).to(torch.int8)
    d = digits.split(w)
    field = digits.combine(digits.sums(x, d), d).double()
    exact = x.double() @ w.double()
    n1 = x.double().sum(1, keepdim=True)
    colmax = w.double().abs().amax(0)
    bound = n1 * colmax / (2 * 127**3) + exact.abs() * 2.0**-23
    assert ((field - exact).abs() <= bound).all()
    fp32 = (x.float() @ w).double()
    assert (field - exact).abs().max() <= 8 * (fp32 - exact).abs().max() + 1e-12


@needs_exact_int8
@pytest.mark.parametrize("kind,n_labels", [("bernoulli", 0), ("bernoulli", 10), ("potts", 3)])
def test_digits_draw_as_fp32_draws_from_the_same_words(kind, n_labels):
    """Same generator, same words, fields within ~1e-6: the states differ only where a
    uniform falls within that of its threshold (expected ~0.1 of these draws)."""
    model = build_rbm(196 if kind == "bernoulli" else 40, 128,
                      n_states=2 if kind == "bernoulli" else 4, n_labels=n_labels)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
    state = gibbs.init_uniform(torch.Generator().manual_seed(3), model, 400)
    p32, pd = prepared.prepare(model, "fp32"), prepared.prepare(model, "digits")
    assert pd.matmul_dtype == torch.int8 and pd.digits_down is not None
    assert (pd.digits_up is None) == (kind == "potts")  # Potts' hidden field is a gather
    h32 = gibbs._hidden(torch.Generator().manual_seed(4), p32,
                        gibbs._encode(p32, state.x, state.label, Scratch()), Scratch())
    hd = gibbs._hidden(torch.Generator().manual_seed(4), pd,
                       gibbs._encode(pd, state.x, state.label, Scratch()), Scratch())
    assert hd.dtype == torch.int8 and int((h32 != hd.float()).sum()) <= 1  # Potts: a gather
    one32, _ = gibbs.step(torch.Generator().manual_seed(5), state, model, 1, precision="fp32")
    oned, _ = gibbs.step(torch.Generator().manual_seed(5), state, model, 1, precision="digits")
    # One hidden flip would move ~a quarter of the visibles' probabilities by ~0.1 x 0.25.
    assert int((one32.x != oned.x).sum()) <= 30
    if n_labels:
        assert int((one32.label != oned.label).sum()) <= 2


def test_without_exact_int8_sums_digits_are_the_fp32_path_and_the_run_is_told(monkeypatch):
    monkeypatch.setattr(digits, "available", lambda device: False)
    model = build_rbm(12, 5, n_labels=2)
    prepared.clear_cache(model)
    try:
        p = prepared.prepare(model, "digits")
        assert p.digits_up is None and p.digits_down is None
        assert p.matmul_dtype == model.weight.dtype
        state = gibbs.init_uniform(torch.Generator().manual_seed(0), model, 20)
        a, _ = gibbs.step(torch.Generator().manual_seed(1), state, model, 3, precision="digits")
        b, _ = gibbs.step(torch.Generator().manual_seed(1), state, model, 3, precision="fp32")
        assert torch.equal(a.x, b.x) and torch.equal(a.label, b.label)
        (note,) = gibbs.GibbsKernel("digits").notes(use_gpu=False)
        assert "sampler.precision digits" in note and "float32" in note
    finally:
        prepared.clear_cache(model)
    assert gibbs.GibbsKernel("digits").notes(use_gpu=True)[0].count("GPU") == 1


@needs_exact_int8
def test_digits_need_no_note_where_they_are_exact():
    assert gibbs.GibbsKernel("digits").notes(use_gpu=False) == []


@pytest.mark.slow
@needs_exact_int8
@pytest.mark.parametrize("n_labels", [0, 10])
def test_compiled_digit_draws_agree_with_eager(n_labels):
    """The compiled draws combine the int32 sums inside their loop (``fused.DigitField``, its
    own compiled functions) and store int8 walkers: the same states as the eager draws,
    which form the float32 field first, from the same words (but where a sigmoid's last bit
    decides), on both streams. Compiles (tens of seconds from a cold cache): slow."""
    from raybm.samplers import fused

    model = build_rbm(120, 48, n_labels=n_labels)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(6))
    state = gibbs.init_uniform(torch.Generator().manual_seed(7), model, 300)
    for stream in ("sfc64", "splitmix64"):
        eager, _ = gibbs.step(torch.Generator().manual_seed(8), state, model, 3,
                              precision="digits", stream=stream)
        compiled, _ = gibbs.step(torch.Generator().manual_seed(8), state, model, 3,
                                 precision="digits", stream=stream, compiled=True)
        assert not fused.compile_status().startswith("failed"), fused.compile_status()
        assert int((eager.x != compiled.x).sum()) <= 3
        if n_labels:
            assert int((eager.label != compiled.label).sum()) <= 1


@needs_exact_int8
def test_a_failed_compilation_of_a_digit_draw_falls_back_to_the_eager_draw(monkeypatch):
    from raybm.samplers import fused

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    model = build_rbm(30, 12, n_labels=3)
    state = gibbs.init_uniform(torch.Generator().manual_seed(9), model, 40)
    eager, _ = gibbs.step(torch.Generator().manual_seed(10), state, model, 2,
                          precision="digits", stream="splitmix64")
    monkeypatch.setattr(fused, "_cache", {fn: broken for fn in fused.KERNELS})
    fused.set_compile(True)
    try:
        with pytest.warns(RuntimeWarning, match="torch.compile"):
            fallen, _ = gibbs.step(torch.Generator().manual_seed(10), state, model, 2,
                                   precision="digits", stream="splitmix64", compiled=True)
        assert fused.compile_status().startswith("failed: RuntimeError")
    finally:
        fused.set_compile(False)
    assert torch.equal(eager.x, fallen.x) and torch.equal(eager.label, fallen.label)


def test_float64_models_and_layers_too_wide_for_int32_keep_the_fp32_layout():
    """A float64 model (a reference) keeps its own dtype; a layer whose rows could hold more
    ones than ``S1 127 + S2`` fits in int32 is not split."""
    model = build_rbm(12, 5, n_labels=2).double()
    p = prepared.prepare(model, "digits")
    assert p.digits_up is None and p.matmul_dtype == torch.float64
    assert digits.split(torch.zeros(digits._MAX_ONES + 1, 4)) is None


@needs_exact_int8
def test_the_visible_field_outside_the_sweeps_is_the_digits_and_within_their_bound():
    """``prepared.visible_digit_field``: ``x W`` of 0/1 visibles (no label rows) from the
    cached layout's digits of ``W`` alone, within the bound of float64's that ``W``'s own
    columns set (label couplings far larger than ``W`` do not widen it); None where the
    layout has no digits of ``up`` (Potts, float64) or the rows are floats (which need not
    be 0/1)."""
    gen = torch.Generator().manual_seed(7)
    model = build_rbm(784, 100, n_labels=10)
    with torch.no_grad():
        model.weight.copy_(_weights(gen, 784, 100))
        model.label_weight.normal_(0, 5.0, generator=gen)  # larger than any W: its scale
    x = (torch.rand(300, 784, generator=gen) < 0.3).to(torch.uint8)
    field = prepared.visible_digit_field(model, x)
    own = prepared.prepare(model, "digits").digits_visible
    assert field.dtype == torch.float32 and torch.equal(
        field, digits.combine(digits.sums(x.to(torch.int8), own), own))
    exact = x.double() @ model.weight.detach().double()
    colmax = model.weight.detach().double().abs().amax(0)
    bound = (x.double().sum(1, keepdim=True) * colmax / (2 * 127**3)
             + (x.double() @ model.weight.detach().double().abs()) * 2.0**-23
             + exact.abs() * 2.0**-23)
    assert ((field.double() - exact).abs() <= bound).all()
    assert prepared.visible_digit_field(model, x.float()) is None
    assert prepared.visible_digit_field(build_rbm(20, 8, n_states=3), x[:, :20] % 3) is None
    assert prepared.visible_digit_field(model.double(), x) is None


@needs_exact_int8
def test_a_label_chain_takes_its_x_w_from_the_digits_and_draws_as_fp32():
    """Its one product from the digits (what the classification contrast then reuses), its
    sweeps fp32's: the same labels from the same generator but where a uniform sits within
    the fields' ~1e-6 of its threshold; a layout built without down has no digits of it
    (nor float32 down) until a sweep asks."""
    model = build_rbm(196, 128, n_labels=10)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(8))
    prepared.clear_cache(model)
    x = (torch.rand(400, 196, generator=torch.Generator().manual_seed(9)) < 0.4).to(
        torch.uint8)
    start = torch.randint(0, 10, (400,), generator=torch.Generator().manual_seed(10))
    ld, fd = gibbs.label_chain(torch.Generator().manual_seed(11), model, x, start, 5, "digits")
    l32, f32 = gibbs.label_chain(torch.Generator().manual_seed(11), model, x, start, 5, "fp32")
    assert torch.equal(fd, prepared.visible_digit_field(model, x))
    assert (fd - f32).abs().max() <= 1e-5 and not torch.equal(fd, f32)
    assert int((ld != l32).sum()) <= 2
    p = prepared.prepare(model, "digits", down=False)
    assert p.digits_up is not None and p.digits_down is None and p.down is None
    p = prepared.prepare(model, "digits")
    assert p.digits_down is not None and p.down is None and p.has_down
    assert prepared.prepare(model, "digits", down=False) is p  # cached, down kept


@needs_exact_int8
def test_a_non_finite_coupling_gives_non_finite_fields_as_float32_does():
    """The trainer stops a run whose gradients or loss are not finite: the digits must not
    hide a NaN coupling behind finite int8 digits (its column's field is NaN), and an
    all-zero column still gives zeros."""
    w = torch.randn(50, 6, generator=torch.Generator().manual_seed(12))
    w[:, 1] = 0.0
    w[7, 3] = float("nan")
    d = digits.split(w)
    x = torch.ones(4, 50, dtype=torch.int8)
    field = digits.combine(digits.sums(x, d), d)
    assert torch.isnan(field[:, 3]).all() and (field[:, 1] == 0).all()
    assert torch.isfinite(field[:, [0, 2, 4, 5]]).all()

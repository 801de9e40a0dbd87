"""The pieces of the fast Gibbs path: the 16-bit draw, the random words, the prepared
(cached) parameters, the single half-steps and the optional ``torch.compile`` kernel.

The stationarity tests for both precisions live in ``test_gibbs.py``; these pin down the parts
they rely on, most of them exactly (by enumerating all 2^16 uniforms) rather than
statistically.
"""

from __future__ import annotations

import pytest
import torch


from raybm.models import BernoulliRBM
from raybm.samplers import fused, gibbs, prepared, random_bits
from raybm.samplers.random_bits import (
    STREAMS,
    bernoulli_logits,
    bernoulli_u16,
    categorical_index,
    random_words,
    uniform16_pairs,
    unit_uniform24_,
)
from tests.enumeration import random_model
from tests.samplers.test_digits import DIGITS

ALL_U16 = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)


def test_16_bit_draw_has_probability_ceil_2_16_p():
    """Over all 2^16 uniforms, ``[u16 2^-16 + 1/2 < p]`` holds for exactly ceil(2^16 p) of
    them: the draw's probability is p up to 2^-16, and exactly 0 and 1 at the ends."""
    z = torch.cat([torch.linspace(-12, 12, 97), torch.tensor([-200.0, 0.0, 200.0])])
    p = torch.sigmoid(z)
    draws = bernoulli_u16(p.unsqueeze(1), ALL_U16.unsqueeze(0))
    counts = draws.long().sum(1)
    assert torch.equal(counts, torch.ceil(65536 * p.double()).long())
    assert counts[-3] == 0 and counts[-1] == 65536  # p = 0 and p = 1 stay exact


@pytest.mark.parametrize("rows", [64, 63])
def test_field_kernel_matches_the_draw_and_writes_into_out(rows):
    """The kernel's packed uniforms are the int16 halves of the words, rows [0, R) from the
    low halves and [R, rows) from the high ones; only the ``out`` view is written."""
    gen = torch.Generator().manual_seed(0)
    y = (torch.randn(rows, 40, generator=gen) * 3).bfloat16()
    bias = torch.randn(40, generator=gen)
    words = uniform16_pairs(gen, rows, 40)
    r = (rows + 1) // 2
    assert words.shape == (r, 40) and words.dtype == torch.int32
    lo = ((words << 16) >> 16).to(torch.int16)
    hi = (words >> 16).to(torch.int16)[: rows - r]
    ref = bernoulli_u16(torch.sigmoid(y.float() + bias), torch.cat([lo, hi]))
    out = torch.full((rows, 50), 7.0, dtype=torch.bfloat16)
    got = fused.bernoulli_field(y, bias, words, out=out[:, :40])
    assert torch.equal(got.to(torch.uint8), ref)
    assert (out[:, 40:] == 7).all()


@pytest.mark.parametrize("stream", STREAMS)
def test_random_words_use_every_bit(stream):
    words = random_words(torch.Generator().manual_seed(1), 20_000, stream=stream)
    bits = (words.unsqueeze(1) >> torch.arange(64)) & 1  # sign bit included (arithmetic >>)
    freq = bits.double().mean(0)
    assert ((freq - 0.5).abs() < 5 * (0.25 / 20_000) ** 0.5).all()
    # neighbouring bits and words uncorrelated (within 5 SE of 0)
    b = bits.double() - 0.5
    se = 5 * 0.25 / (20_000 * 63) ** 0.5
    assert abs(float((b[:, 1:] * b[:, :-1]).mean())) < se
    assert abs(float((b[1:] * b[:-1]).mean())) < se


def test_sfc64_words_follow_the_generator_state():
    """The words are a function of the generator's state, which they advance by one draw:
    a checkpointed generator continues the same words; another state gives others."""
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    first = random_words(gen, 1000, stream="sfc64")
    after = gen.get_state()
    gen.set_state(state)
    assert torch.equal(random_words(gen, 1000, stream="sfc64"), first)
    assert torch.equal(gen.get_state(), after)
    assert not torch.equal(random_words(gen, 1000, stream="sfc64"), first)
    with pytest.raises(ValueError, match="stream must be one of"):
        random_words(gen, 10, stream="xorshift")


def _splitmix_reference(seed: int, gamma: int, n: int) -> list[int]:
    """SplitMix64 in Python integers modulo 2^64 (Steele, Lea & Flood 2014), signed."""
    mask, words = 2**64 - 1, []
    for i in range(1, n + 1):
        z = (seed + i * gamma) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        words.append(z - 2**64 if z >= 2**63 else z)
    return words


def test_splitmix_words_are_splitmix64_exactly():
    """The torch form (int64, wrapping products, masked shifts) against Python's unbounded
    integers, on keys with the sign bit set and not, as a (rows, cols) grid, row-major."""
    for seed, gamma in ((0, 0x9E3779B97F4A7C15), (2**64 - 5, 0xD1B54A32D192ED03), (12345, 3)):
        signed = [w - 2**64 if w >= 2**63 else w for w in (seed, gamma)]
        key = torch.tensor(signed, dtype=torch.int64)
        grid = random_bits.splitmix_grid(key, 3, 7)
        assert grid.shape == (3, 7)
        assert grid.flatten().tolist() == _splitmix_reference(seed, gamma, 21)
        high = random_bits.high_words(grid)
        assert high.dtype == torch.int32
        assert torch.equal(high.long(), grid >> 32)
    # Known answer: SplitMix64 seeded with 0 (the golden-ratio increment) starts
    # 0xE220A8397B1DCDAF (Vigna's reference splitmix64.c).
    key = torch.tensor([0, 0x9E3779B97F4A7C15 - 2**64], dtype=torch.int64)
    assert int(random_bits.splitmix_grid(key, 1, 1)) & (2**64 - 1) == 0xE220A8397B1DCDAF


def test_stored_splitmix_words_are_the_streams_words():
    """``fused.splitmix_words`` (the words of the bf16 draws on the ``splitmix64`` stream)
    writes words ``0 .. n-1`` of its key's stream into the buffer it is given, as
    ``random_words`` gives them on that stream from the same generator state (eagerly here;
    compiled in ``test_compiled_splitmix_draws_agree_with_eager``)."""
    for n in (1, 2, 7, 1_000):
        gen = torch.Generator().manual_seed(n)
        want = random_words(gen.clone_state(), n, stream="splitmix64")
        buf = torch.full((n + 3,), -1, dtype=torch.int64)
        got = fused.splitmix_words(random_bits.splitmix_key(gen), buf[:n])
        assert got.data_ptr() == buf.data_ptr() and torch.equal(got, want), n
        assert (buf[n:] == -1).all()


def test_bf16_draws_on_splitmix64_read_uniform16_pairs_words():
    """The fast draw's words on the ``splitmix64`` stream (``gibbs._draw_source``: a key,
    then the words stored by ``fused.splitmix_words`` into the draw's reused buffer) are
    ``uniform16_pairs``' on that stream from the same generator state, in its
    ``(ceil(n/2), m)`` int32 layout, for odd and even ``n`` and ``m``; the next draw takes
    fresh words into the same buffer."""
    from raybm.samplers.scratch import Scratch

    for n, m in ((4, 6), (5, 7), (7, 3), (1, 1), (2_000, 784)):
        gen = torch.Generator().manual_seed(n * m)
        want = uniform16_pairs(gen.clone_state(), n, m, stream="splitmix64")
        ws = Scratch(stream="splitmix64")
        got = gibbs._draw_source(gen, True, n, m, ws, torch.device("cpu"))
        assert got.dtype == torch.int32 and got.shape == ((n + 1) // 2, m) == want.shape
        assert torch.equal(got, want), (n, m)
        again = gibbs._draw_source(gen, True, n, m, ws, torch.device("cpu"))
        assert again.data_ptr() == got.data_ptr() and not torch.equal(again, want), (n, m)


def test_paired_words_are_both_halves_of_splitmix_words():
    """``paired_words``: column ``j < h`` takes the high half of word ``i h + j``, column
    ``h + j`` its low half (``h = ceil(m / 2)``), for an even and an odd width."""
    key = torch.tensor([12345, 0x9E3779B97F4A7C15 - 2**64], dtype=torch.int64)
    for m in (8, 7):
        h = (m + 1) // 2
        grid = random_bits.splitmix_grid(key, 3, h)
        words = random_bits.paired_words(key, 3, m)
        assert words.dtype == torch.int32 and words.shape == (3, m)
        assert torch.equal(words[:, :h].long(), grid >> 32)
        low = grid & 0xFFFFFFFF
        assert torch.equal(words[:, h:].long() & 0xFFFFFFFF, low[:, : m - h])


def test_paired_draws_are_uniform_and_independent():
    """The two 24-bit uniforms cut from one SplitMix64 word (``paired_words``, as the label
    sweeps read them): each half uniform (a 16-bin chi-square on its top bits) and the
    two halves independent (the 4 x 4 table of their top two bits, 64,000 pairs), at
    p > 1e-4."""
    from tests.samplers.test_gibbs import P_MIN, chi_square_p

    words = random_bits.paired_words(random_bits.splitmix_key(torch.Generator().manual_seed(5)),
                                     2000, 64)
    top = (words.long() >> 28) & 15  # the top 4 bits of each 32-bit half
    flat = torch.full((16,), 1 / 16, dtype=torch.float64)
    for half in (top[:, :32], top[:, 32:]):
        assert chi_square_p(torch.bincount(half.flatten(), minlength=16), flat) > P_MIN
    pairs = (top[:, :32] >> 2) * 4 + (top[:, 32:] >> 2)
    assert chi_square_p(torch.bincount(pairs.flatten(), minlength=16), flat) > P_MIN


def test_splitmix_keys_are_odd_mixed_and_follow_the_generator():
    """Every key's increment is odd with at least 24 bit transitions (the SplitMix rule for
    a split-off stream); a key is a function of the generator's state, which it advances."""
    gen = torch.Generator().manual_seed(21)
    state = gen.get_state()
    keys = [random_bits.splitmix_key(gen) for _ in range(200)]
    for key in keys:
        gamma = int(key[1]) & (2**64 - 1)
        assert gamma & 1 and bin(gamma ^ (gamma >> 1)).count("1") >= 24
    assert len({tuple(k.tolist()) for k in keys}) == 200
    gen.set_state(state)
    assert torch.equal(random_bits.splitmix_key(gen), keys[0])


def test_uniform_binary_walkers_from_bits_are_uniform_and_independent():
    model = BernoulliRBM(784, 8)
    x = gibbs.init_uniform(torch.Generator().manual_seed(3), model, 2000, stream="sfc64").x
    assert x.dtype == torch.uint8 and x.shape == (2000, 784) and int(x.max()) == 1
    b = x.double() - 0.5
    n = b.numel()
    assert abs(float(b.mean())) < 5 * 0.5 / n ** 0.5
    assert (b.mean(0).abs() < 5 * 0.5 / 2000 ** 0.5).all()  # every unit
    assert abs(float((b[:, 1:] * b[:, :-1]).mean())) < 5 * 0.25 / n ** 0.5


@pytest.mark.parametrize("count", [1, 63, 64, 65, 2000 * 784])
def test_unpack_bits_gives_every_bit_in_memory_order(count):
    """Bit j of byte b at 8 b + j, as the shift-and-mask it replaced gave them (F&F's starts
    are the same walkers as before)."""
    words = random_words(torch.Generator().manual_seed(1), (count + 63) // 64)
    got = random_bits.unpack_bits(words, count)
    shifts = torch.arange(8, dtype=torch.uint8)
    expected = ((words.view(torch.uint8).unsqueeze(1) >> shifts) & 1).reshape(-1)[:count]
    assert got.dtype == torch.uint8 and torch.equal(got, expected)


@pytest.mark.parametrize("fast", [False, True])
def test_bernoulli_logits_keeps_its_input_and_returns_uint8(fast):
    logits = torch.randn(100, 7)
    before = logits.clone()
    draws = bernoulli_logits(torch.Generator().manual_seed(2), logits, fast=fast)
    assert draws.dtype == torch.uint8 and draws.shape == logits.shape
    assert torch.equal(logits, before)


def test_categorical_index_matches_probabilities_on_a_strided_view():
    gen = torch.Generator().manual_seed(3)
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0])
    wide = torch.zeros(50_000, 6)
    wide[:, 1:5] = logits  # the kernel passes slices of a wider field
    idx = categorical_index(gen, wide[:, 1:5])
    freq = torch.bincount(idx, minlength=4).double() / 50_000
    p = torch.softmax(logits.double(), 0)
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / 50_000).sqrt()).all()


# ------------------------------------------------------------------------ prepared params
def test_prepared_params_are_cached_and_follow_in_place_updates():
    model = random_model("bernoulli", torch.Generator().manual_seed(4), 2)
    a = prepared.prepare(model, "bf16")
    assert prepared.prepare(model, "bf16") is a
    assert prepared.prepare(model, "fp32") is not a
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # in-place update: bumps the version counters
    b = prepared.prepare(model, "bf16")
    assert b is not a
    w = torch.cat([model.weight, model.label_weight]).detach()
    assert torch.equal(b.up, w.bfloat16())
    assert torch.equal(b.hbias, model.hbias.detach())


@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_a_layout_without_down_gets_it_when_asked_for_the_parameters_it_was_built_on(kind):
    """``prepare(down=False)`` (the label chain's compiled sweeps) leaves the transposed
    layout out; a later call that needs it adds exactly what a full build has, for the
    same parameters; after a step, a fresh layout."""
    model = random_model(kind, torch.Generator().manual_seed(6), 3)
    prepared.clear_cache(model)
    for precision in ("fp32", "bf16"):
        lean = prepared.prepare(model, precision, down=False)
        assert lean.down is None
        assert prepared.prepare(model, precision, down=False) is lean
        full = prepared.prepare(model, precision)
        assert torch.equal(full.up, lean.up)
        assert torch.equal(full.down, prepared._build(model, precision).down)
        assert prepared.prepare(model, precision, down=False) is full  # kept with it
    with torch.no_grad():
        model.weight.add_(1.0)
    fresh = prepared.prepare(model, "bf16", down=False)
    assert fresh.down is None and not torch.equal(fresh.up, full.up)


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
def test_step_sees_parameter_changes_between_calls(precision):
    """Saturated biases make the sampler deterministic: flipping them in place must flip the
    walkers on the next call (a stale cached copy would not)."""
    model = BernoulliRBM(6, 3)
    gen = torch.Generator().manual_seed(5)
    state = gibbs.init_uniform(gen, model, 50)
    with torch.no_grad():
        model.vbias.fill_(40.0)
    on, _ = gibbs.step(gen, state, model, 1, precision=precision)
    with torch.no_grad():
        model.vbias.fill_(-40.0)
    off, _ = gibbs.step(gen, state, model, 1, precision=precision)
    assert (on.x == 1).all() and (off.x == 0).all()


# ------------------------------------------------------------------------ half-steps
def _rows(kind: str):
    if kind == "bernoulli":
        return torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.uint8)
    return torch.tensor([[2, 0, 1, 2], [0, 1, 1, 0]], dtype=torch.uint8)


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_single_half_steps_match_the_conditionals(kind, n_labels, precision):
    """``sample_hidden`` / ``sample_visible`` frequencies against the model's exact
    conditionals; bf16 is allowed its rounding (2^-9 of the field) on top of 5 s.e."""
    model = random_model(kind, torch.Generator().manual_seed(6), n_labels, scale=1.0)
    gen = torch.Generator().manual_seed(7)
    reps = 20_000
    v = _rows(kind).repeat_interleave(reps, 0)
    label = torch.tensor([2, 1]).repeat_interleave(reps) if n_labels else None
    slack = 0.01 if precision == "bf16" else 0.0
    h = gibbs.sample_hidden(gen, model, v, label, precision=precision)
    assert h.dtype == torch.uint8 and h.shape == (len(v), model.n_hidden)
    with torch.no_grad():
        ph = torch.sigmoid(model.hidden_field(v[::reps], None if label is None else label[::reps]))
    freq = h.view(2, reps, -1).double().mean(1)
    se = (ph * (1 - ph) / reps).sqrt().double()
    assert ((freq - ph.double()).abs() <= 5 * se + slack + 1e-12).all()

    hs = torch.tensor([[1, 0, 1], [0, 1, 1]] if kind == "bernoulli" else
                      [[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=torch.uint8)
    x = gibbs.sample_visible(gen, model, hs.repeat_interleave(reps, 0), precision=precision)
    assert x.dtype == torch.uint8 and x.shape == (2 * reps, model.n_visible)
    with torch.no_grad():
        pv = model.visible_prob(hs.float())
    if kind == "bernoulli":
        freq = x.view(2, reps, -1).double().mean(1)
    else:
        onehot = torch.nn.functional.one_hot(x.long(), model.n_states)
        freq = onehot.view(2, reps, model.n_visible, -1).double().mean(1)
    se = (pv * (1 - pv) / reps).sqrt().double()
    assert ((freq - pv.double()).abs() <= 5 * se + slack + 1e-12).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "digits"])  # digits: float64 kept
def test_zero_sweeps_and_float64_models(precision):
    model = random_model("potts", torch.Generator().manual_seed(8), 2).double()
    gen = torch.Generator().manual_seed(9)
    state = gibbs.init_uniform(gen, model, 30)
    same, _ = gibbs.step(gen, state, model, 0, precision=precision)
    assert same.x is state.x
    new, _ = gibbs.step(gen, state, model, 3, precision=precision)
    assert new.x.dtype == torch.uint8 and int(new.x.max()) < model.n_states
    assert new.label.dtype == torch.int64 and int(new.label.max()) < model.n_labels


# ------------------------------------------------------------------------ torch.compile
def test_compile_failure_falls_back_to_the_eager_kernel(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused, "_cache", {fn: broken for fn in fused.KERNELS})
    fused.set_compile(True)
    try:
        model = random_model("potts", torch.Generator().manual_seed(10), 0)
        gen = torch.Generator().manual_seed(11)
        state = gibbs.init_uniform(gen, model, 20)
        with pytest.warns(RuntimeWarning, match="torch.compile"):
            new, _ = gibbs.step(gen, state, model, 2, precision="bf16")
        assert fused.compile_status().startswith("failed: RuntimeError")
        assert new.x.shape == state.x.shape
    finally:
        fused.set_compile(False)
    fused.set_compile(True)  # the fp32 reference draw falls back the same way
    try:
        with pytest.warns(RuntimeWarning, match="torch.compile"):
            new, _ = gibbs.step(gen, state, model, 2, precision="fp32")
        assert new.x.shape == state.x.shape
    finally:
        fused.set_compile(False)
    assert fused.compile_status() == "off"
    # The SplitMix64 draws (words made inside the compiled fp32 loop, or stored by a
    # compiled loop for bf16) fall back to making the same words eagerly, in both precisions.
    binary = random_model("bernoulli", torch.Generator().manual_seed(12), 2)
    start = gibbs.init_uniform(gen, binary, 20)
    for precision in ("fp32", "bf16"):
        fused.set_compile(True)
        try:
            with pytest.warns(RuntimeWarning, match="torch.compile"):
                new, _ = gibbs.step(gen, start, binary, 2, precision=precision,
                                    stream="splitmix64", compiled=True)
            assert new.x.shape == start.x.shape
        finally:
            fused.set_compile(False)
    # A label chain hands its draws the clamped field unformed (fused.ClampedField): the
    # eager fallback forms it, and the closed-form gradient's statistics fall back too.
    labelled = random_model("bernoulli", torch.Generator().manual_seed(13), 3)
    x = gibbs.init_uniform(gen, labelled, 20).x
    start = torch.zeros(20, dtype=torch.int64)
    coef = torch.ones(20, dtype=torch.float64)
    for precision, stream in (("fp32", "splitmix64"), ("fp32", "sfc64"), ("bf16", "sfc64")):
        fused.set_compile(True)
        try:
            with pytest.warns(RuntimeWarning, match="torch.compile"):
                labels, field = gibbs.label_chain(gen, labelled, x, start, 2, precision, stream,
                                                  compiled=True)
            assert labels.shape == (20,) and field.shape == (20, labelled.n_hidden)
            fused.set_compile(True)
            with pytest.warns(RuntimeWarning, match="torch.compile"):
                _, grads = labelled.weighted_energy_gradient(x, start, coef, precision,
                                                             compiled=True)
            assert grads["weight"].shape == labelled.weight.shape
        finally:
            fused.set_compile(False)


@pytest.mark.slow
def test_compiled_kernel_agrees_with_eager():
    """Compiles (tens of seconds): run with ``-m slow``."""
    gen = torch.Generator().manual_seed(12)
    wide = (torch.randn(256, 100, generator=gen) * 3).bfloat16()
    bias = torch.randn(96, generator=gen)
    words = uniform16_pairs(gen, 256, 96)
    for y in (wide[:, :96], wide[:, :96].float().contiguous()):  # a strided bf16 slice; float
        eager = fused.bernoulli_field(y, bias, words)
        # also stored by the loop into a column block of a layout (a labelled walker's x)
        layout = torch.full((256, 100), 7.0, dtype=torch.bfloat16)
        fused.set_compile(True)
        try:
            compiled = fused.bernoulli_field(y, bias, words)
            into = fused.bernoulli_field(y, bias, words, out=layout[:, :96])
            assert fused.compile_status() == "on"
        finally:
            fused.set_compile(False)
        # Vectorised and scalar sigmoid may differ in the last bit: a draw can flip only where
        # the uniform sits exactly on the threshold, at most a handful out of 24,576.
        assert compiled.dtype == torch.bfloat16 and (compiled != eager).sum() <= 3
        assert into.data_ptr() == layout.data_ptr() and (layout[:, 96:] == 7.0).all()
        assert (layout[:, :96] != eager).sum() <= 3


@pytest.mark.slow
def test_compiled_exact_draw_agrees_with_eager():
    """The fp32 reference draw, compiled, from the same words: the same states up to a
    sigmoid's last bit, also written into a column block of a wider buffer."""
    gen = torch.Generator().manual_seed(15)
    z = torch.randn(256, 100, generator=gen) * 3
    words = random_words(gen, 256 * 48).view(torch.int32).view(256, 96)
    bias = torch.randn(96, generator=gen)
    eager = torch.empty(256, 96)
    gibbs_words = words.clone()  # unit_uniform24_ shifts its words in place
    unit_uniform24_(gibbs_words, out=eager).lt_(z[:, :96].sigmoid())
    eager_biased = torch.empty(256, 96)
    unit_uniform24_(words.clone(), out=eager_biased).lt_((z[:, :96] + bias).sigmoid())
    wide = torch.full((256, 100), 7.0)
    biased = torch.empty(256, 96)
    fused.set_compile(True)
    try:
        out = fused.exact_field(z[:, :96], words, wide[:, :96])
        # the bias added by the loop (the product then needs no addmm)
        fused.exact_field(z[:, :96], words, biased, bias=bias)
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    assert out is not None and out.data_ptr() == wide.data_ptr()
    assert (wide[:, 96:] == 7.0).all()  # nothing beyond the block written
    assert (wide[:, :96] != eager).sum() <= 3
    assert (biased != eager_biased).sum() <= 3 and (biased != eager).sum() > 100


@pytest.mark.slow
def test_compiled_splitmix_draws_agree_with_eager():
    """The keyed fp32 draw, whose words the compiled loop makes itself, against the eager
    form that makes the same words first, into a column block of a wider buffer; the same
    states up to a sigmoid's last bit. The bf16 draws on that stream read its words stored
    by a compiled loop: the same words as eagerly, and a bf16 sweep draws as the eager one."""
    gen = torch.Generator().manual_seed(16)
    key = random_bits.splitmix_key(gen)
    z = torch.randn(256, 100, generator=gen) * 3
    eager = fused.exact_field_keyed(z[:, :96], key, torch.empty(256, 96))
    shift = torch.randn(96, generator=gen)
    eager_biased = fused.exact_field_keyed(z[:, :96], key, torch.empty(256, 96), bias=shift)
    wide = torch.full((256, 100), 7.0)
    model = random_model("bernoulli", torch.Generator().manual_seed(18), 2)
    start = gibbs.init_uniform(gen, model, 4_000)
    sweep_gen = torch.Generator().manual_seed(19)
    eager_sweep, _ = gibbs.step(sweep_gen.clone_state(), start, model, 1, precision="bf16",
                                stream="splitmix64")
    fused.set_compile(True)
    try:
        out = fused.exact_field_keyed(z[:, :96], key, wide[:, :96])
        biased = fused.exact_field_keyed(z[:, :96], key, torch.empty(256, 96), bias=shift)
        stored = {n: fused.splitmix_words(key, torch.empty(n, dtype=torch.int64),
                                          compiled=True) for n in (1, 5, 4_001, 392_000)}
        sweep, _ = gibbs.step(sweep_gen.clone_state(), start, model, 1, precision="bf16",
                              stream="splitmix64", compiled=True)
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    assert out.data_ptr() == wide.data_ptr() and (wide[:, 96:] == 7.0).all()
    assert (wide[:, :96] != eager).sum() <= 3
    assert (biased != eager_biased).sum() <= 3 and (biased != eager).sum() > 100
    for n, words in stored.items():
        assert torch.equal(words, random_bits.splitmix_grid(key, 1, n).view(n)), n
    # one sweep of 4,000 walkers (5 visible, 3 hidden units, 2 labels) from the same
    # generator state: the same states up to a sigmoid's last bit
    assert (sweep.x != eager_sweep.x).sum() <= 3
    # and the draws follow their probabilities: 24,576 fair coins
    half = fused.exact_field_keyed(torch.zeros(256, 96), key, torch.empty(256, 96))
    assert abs(float(half.mean()) - 0.5) < 5 * (0.25 / half.numel()) ** 0.5


@pytest.mark.slow
def test_compiled_categorical_agrees_with_eager():
    gen = torch.Generator().manual_seed(13)
    y = (torch.randn(300, 7 * 5, generator=gen) * 2).bfloat16()
    bias = torch.randn(7 * 5, generator=gen)
    u = torch.rand(300, 7, generator=gen)
    eager = fused.categorical_field(y, bias, u)
    fused.set_compile(True)
    try:
        compiled = fused.categorical_field(y, bias, u)
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    assert compiled.dtype == torch.int64 and compiled.shape == (300, 7)
    assert (compiled != eager).sum() <= 3  # only where u is within rounding of a CDF value


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["sfc64", "splitmix64"])
@pytest.mark.parametrize("precision", ["bf16", "fp32", DIGITS])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_compiled_path_samples_the_model(kind, precision, stream):
    """The chi-square check of ``test_gibbs.py`` with the compiled kernels (labels included),
    from stored SFC64 words and from SplitMix64 words (made in the fp32 draw's loop, stored
    by a loop of their own for the bf16 draw)."""
    from tests.enumeration import visible_distribution
    from tests.samplers.test_gibbs import P_MIN, chi_square_p, histogram

    model = random_model(kind, torch.Generator().manual_seed(2), 3, scale=0.5)
    gen = torch.Generator().manual_seed(3)
    fused.set_compile(True)
    try:
        state = gibbs.init_uniform(gen, model, 100_000)
        state, _ = gibbs.step(gen, state, model, 60, precision=precision, stream=stream,
                              compiled=True)
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    pval = chi_square_p(histogram(model, state.x), visible_distribution(model))
    assert pval > P_MIN, f"chi-square p = {pval:.2e}"


def test_bf16_field_error_is_bounded_by_bf16_rounding():
    """What separates the fast path from the reference: rounding the couplings to bf16 (2^-9
    relative each) and the matmul's output to bf16 (2^-9 of the field); the biases stay
    float32. Checked on a mid-sized model against float64."""
    gen = torch.Generator().manual_seed(14)
    model = BernoulliRBM(200, 64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(200, 64, generator=gen) * 0.3)
        model.hbias.copy_(torch.randn(64, generator=gen))
    v = torch.randint(0, 2, (256, 200), generator=gen, dtype=torch.uint8)
    p = prepared.prepare(model, "bf16")
    fast = (v.bfloat16() @ p.up).float() + p.hbias
    w = model.weight.detach().double()
    exact = v.double() @ w + model.hbias.detach().double()
    bound = 2.0**-9 * (v.double() @ w.abs() + (exact - model.hbias.detach().double()).abs())
    assert ((fast.double() - exact).abs() <= bound * 1.01 + 1e-6).all()


def test_unit_uniform24_is_torch_rand_grid():
    words = torch.tensor([-(2**31), -1, 0, 2**31 - 1, 255, 256], dtype=torch.int32)
    u = unit_uniform24_(words.clone(), out=torch.empty(6))
    step = 2.0**-24
    expected = torch.tensor([0.0, 0.5 - step, 0.5, 1 - step, 0.5, 0.5 + step])
    assert torch.equal(u, expected)


@pytest.mark.slow
def test_compiled_clamped_fields_agree_with_eager():
    """The draws on a label chain's field ``D[l] + fixed`` formed inside the compiled loop
    (``fused.ClampedField``) against the eager kernels on the formed field: the same
    states up to a sigmoid's last bit, for the three draws (the reference from stored and
    keyed words, the fast one from stored words)."""
    gen = torch.Generator().manual_seed(17)
    fixed = torch.randn(256, 96, generator=gen) * 3
    rows = torch.randn(5, 96, generator=gen)
    label = torch.randint(0, 5, (256,), generator=gen)
    clamped = fused.ClampedField(fixed, rows, label)
    z = fused.formed(clamped)
    torch.testing.assert_close(z, rows[label] + fixed, rtol=0, atol=0)
    bias = torch.randn(96, generator=gen)
    key = random_bits.splitmix_key(gen)
    words = random_words(gen, 256 * 48).view(torch.int32).view(256, 96)
    pairs = uniform16_pairs(gen, 256, 96)
    eager = {
        "exact": unit_uniform24_(words.clone(), out=torch.empty(256, 96)).lt_(z.sigmoid()),
        "exact keyed": fused.exact_field_keyed(z, key, torch.empty(256, 96)),
        "fast": fused.bernoulli_field(z, bias, pairs),
    }
    fused.set_compile(True)
    try:
        compiled = {
            "exact": fused.exact_field(clamped, words, torch.empty(256, 96)),
            "exact keyed": fused.exact_field_keyed(clamped, key, torch.empty(256, 96)),
            "fast": fused.bernoulli_field(clamped, bias, pairs),
        }
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    for name, want in eager.items():
        assert (compiled[name].float() != want.float()).sum() <= 3, name


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["sfc64", "splitmix64"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("kind", ["bernoulli", "bernoulli_even", "potts"])
def test_compiled_label_chain_samples_p_label_given_v(kind, precision, stream):
    """The label chain with the compiled label sweeps (the clamped field formed in their
    loop, two draws per SplitMix64 word) samples ``p(l | v)``: the chi-square check of
    ``test_gibbs.py``, for odd hidden widths (3, 5) and an even one (4), where the sweep's
    one reduction reads both halves of each word."""
    from tests.samplers.test_gibbs import P_MIN, chi_square_p

    if kind == "bernoulli_even":
        model = BernoulliRBM(5, 4, 4)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(6)
            for param in model.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.8)
        kind = "bernoulli"
    else:
        model = random_model(kind, torch.Generator().manual_seed(6), 4, scale=0.8)
    gen = torch.Generator().manual_seed(7)
    row = [1, 0, 1, 1, 0] if kind == "bernoulli" else [2, 0, 1, 2]
    v = torch.tensor([row], dtype=torch.uint8).repeat(80_000, 1)
    start = torch.randint(0, 4, (len(v),), generator=gen)
    fused.set_compile(True)
    try:
        labels, _ = gibbs.label_chain(gen, model, v, start, 30, precision, stream,
                                      compiled=True)
        assert fused.compile_status() == "on"
    finally:
        fused.set_compile(False)
    with torch.no_grad():
        exact = model.double().label_prob_v(v[:1])[0]
    pval = chi_square_p(torch.bincount(labels, minlength=4), exact)
    assert pval > P_MIN, f"chi-square p = {pval:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("m", [96, 97])
def test_compiled_label_sweeps_agree_with_their_eager_form(m):
    """A compiled label sweep (draw, logits and label in one loop over the paired words,
    ``fused.label_sweep``) against its eager form (the same words made first, then the
    draw, the product and the categorical draw), on a float32 and on a bf16 field, for an
    even hidden width (one reduction over both halves) and an odd one (two): the same
    labels but where a uniform sits within rounding of a threshold (<= 3 rows of 4,000)."""
    gen = torch.Generator().manual_seed(3)
    n, n_labels = 4000, 4
    rows = torch.randn(n_labels, m, generator=gen)
    start = torch.randint(0, n_labels, (n,), generator=gen)
    bias = torch.randn(m, generator=gen)
    down = torch.randn(n_labels, m, generator=gen) * 0.5
    lbias = torch.randn(n_labels, generator=gen)
    u = torch.rand(n, generator=gen)
    key = random_bits.splitmix_key(gen)
    fixed = torch.randn(n, m, generator=gen) * 2
    for field in (fixed, fixed.bfloat16()):
        clamped = fused.ClampedField(field, rows, start)
        eager = fused.label_sweep(clamped, bias, key, down, lbias, u)
        fused.set_compile(True)
        try:
            with torch.no_grad():  # as label chains run it (one graph per grad mode)
                compiled = fused.label_sweep(clamped, bias, key, down, lbias, u,
                                             compiled=True)
            assert fused.compile_status() == "on"
        finally:
            fused.set_compile(False)
        assert int((eager != start).sum()) > 1000  # the sweep does move labels
        assert int((compiled != eager).sum()) <= 3, field.dtype


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_gradient_statistics_agree_with_eager(precision):
    """``RBM.weighted_energy_gradient`` with its elementwise part compiled
    (``fused.stats_fields``) against the eager form: without labels, one label per row and
    two (F&F's classification contrast), float32 to rounding."""
    gen = torch.Generator().manual_seed(18)
    for n_labels, cond_shape in ((0, None), (4, (300,)), (4, (300, 2))):
        model = random_model("bernoulli", gen, n_labels, scale=0.7)
        x = torch.randint(0, 2, (300, model.n_visible), generator=gen, dtype=torch.uint8)
        cond = None if cond_shape is None else torch.randint(0, 4, cond_shape, generator=gen)
        coef = torch.randn(cond_shape or (300,), generator=gen, dtype=torch.float64)
        value, grads = model.weighted_energy_gradient(x, cond, coef, precision)
        fused.set_compile(True)
        try:
            value_c, grads_c = model.weighted_energy_gradient(x, cond, coef, precision,
                                                              compiled=True)
            assert fused.compile_status() == "on"
        finally:
            fused.set_compile(False)
        torch.testing.assert_close(value_c, value, rtol=1e-5, atol=1e-5)
        for name, g in grads.items():
            torch.testing.assert_close(grads_c[name], g, rtol=1e-4, atol=1e-5, msg=name)
        # Without the value (no softplus kernel run): a zero value and the compiled gradient
        # to the last bit, as a resumed run that logs at other updates needs.
        fused.set_compile(True)
        try:
            zero, grads_n = model.weighted_energy_gradient(x, cond, coef, precision,
                                                           compiled=True, value=False)
            assert fused.compile_status() == "on"
        finally:
            fused.set_compile(False)
        assert float(zero) == 0.0
        for name, g in grads_c.items():
            assert torch.equal(grads_n[name], g), name

"""Contract test for the Gibbs kernel: it samples the exact distribution.

Each test draws many independent walkers and compares their histogram over every visible state
with the exact probabilities by a chi-square test. Under a correct sampler the statistic is
chi-square distributed with (#states - 1) degrees of freedom, so ``p < 1e-4`` flags a wrong
kernel while a correct one fails one seed in 10,000 (the seeds are fixed, so a failure is
reproducible, never flaky). A fp32 path error as small as 1% in one state probability is
visible at these walker counts.
"""

from __future__ import annotations

import pytest
import torch

from scipy.stats import chi2

from raybm.models import BernoulliRBM
from raybm.samplers import gibbs
from raybm.samplers.random_bits import (
    bernoulli_logits,
    categorical_inverse_cdf,
    categorical_logits,
    uniform16,
)
from raybm.walkers import WalkerState
from tests.enumeration import random_model, state_index, visible_distribution
from tests.samplers.test_digits import DIGITS

P_MIN = 1e-4


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of observed ``counts`` under ``probs`` (states with tiny expectation pooled)."""
    n = counts.sum()
    expected = probs * n
    big = expected >= 5  # the chi-square approximation needs >= 5 expected per cell
    obs = torch.cat([counts[big].double(), counts[~big].double().sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    return float(chi2.sf(stat, int(keep.sum()) - 1))


def histogram(model, x):
    n_states = model.n_states ** model.n_visible
    return torch.bincount(state_index(model, x), minlength=n_states)


def seven_visible_rbm(n_labels: int = 0) -> BernoulliRBM:
    gen = torch.Generator().manual_seed(5)
    m = BernoulliRBM(7, 4, n_labels)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.8)
    return m


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
def test_stationary_on_seven_visible_rbm(precision):
    """Walkers drawn from p(v) stay distributed as p(v) after Gibbs sweeps."""
    model = seven_visible_rbm()
    p = visible_distribution(model)
    gen = torch.Generator().manual_seed(1)
    n = 200_000
    x0 = torch.multinomial(p, n, replacement=True, generator=gen)
    from raybm.metrics.exact import all_binary_states

    state = WalkerState.unweighted(all_binary_states(7)[x0])
    state, _ = gibbs.step(gen, state, model, 3, precision=precision)
    pval = chi_square_p(histogram(model, state.x), p)
    assert pval > P_MIN, f"{precision}: chi-square p = {pval:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
@pytest.mark.parametrize("n_labels", [0, 3])
def test_converges_from_uniform(kind, n_labels, precision):
    """From uniform noise, enough sweeps reach p(v) (labels sampled jointly and summed out)."""
    model = random_model(kind, torch.Generator().manual_seed(2), n_labels, scale=0.5)
    gen = torch.Generator().manual_seed(3)
    state = gibbs.init_uniform(gen, model, 100_000)
    state, _ = gibbs.step(gen, state, model, 60, precision=precision)
    pval = chi_square_p(histogram(model, state.x), visible_distribution(model))
    assert pval > P_MIN, f"{precision}: chi-square p = {pval:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_clamped_label_samples_the_class_conditional(kind, precision):
    model = random_model(kind, torch.Generator().manual_seed(4), 3, scale=0.5)
    gen = torch.Generator().manual_seed(5)
    label = torch.full((100_000,), 2)
    state = gibbs.init_uniform(gen, model, 100_000, label=label)
    state, _ = gibbs.step(gen, state, model, 60, clamp_label=True, precision=precision)
    assert torch.equal(state.label, label)
    pval = chi_square_p(histogram(model, state.x), visible_distribution(model, label=2))
    assert pval > P_MIN, f"{precision}: chi-square p = {pval:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_clamped_visible_samples_labels_from_p_label_given_v(kind, precision):
    model = random_model(kind, torch.Generator().manual_seed(6), 4, scale=0.8)
    gen = torch.Generator().manual_seed(7)
    row = [1, 0, 1, 1, 0] if kind == "bernoulli" else [2, 0, 1, 2]
    v = torch.tensor([row], dtype=torch.uint8).repeat(80_000, 1)
    state = gibbs.init_uniform(gen, model, len(v))
    state, _ = gibbs.step(gen, state.replace(x=v), model, 30, clamp_visible=True,
                          precision=precision)
    assert torch.equal(state.x, v)
    counts = torch.bincount(state.label, minlength=4)
    with torch.no_grad():
        exact = model.double().label_prob_v(v[:1])[0]
    pval = chi_square_p(counts, exact)
    assert pval > P_MIN, f"chi-square p = {pval:.2e}"


@pytest.mark.parametrize("precision", ["fp32", "bf16", DIGITS])
@pytest.mark.parametrize("kind", ["bernoulli", "potts"])
def test_splitmix_stream_samples_the_model(kind, precision):
    """The SplitMix64 words (made eagerly here; by the compiled loops in
    ``test_fast_path``) draw the exact distribution too, labels sampled jointly."""
    model = random_model(kind, torch.Generator().manual_seed(8), 3, scale=0.5)
    gen = torch.Generator().manual_seed(9)
    state = gibbs.init_uniform(gen, model, 50_000, stream="splitmix64")
    state, _ = gibbs.step(gen, state, model, 40, precision=precision, stream="splitmix64")
    pval = chi_square_p(histogram(model, state.x), visible_distribution(model))
    assert pval > P_MIN, f"{precision}: chi-square p = {pval:.2e}"


def test_bernoulli_draws_match_probabilities():
    """Both paths: frequencies within 5 standard errors of p; the fast path's 2^-16
    quantisation is far below that resolution."""
    gen = torch.Generator().manual_seed(8)
    logits = torch.linspace(-6, 6, 25)
    p = torch.sigmoid(logits)
    n = 40_000
    for fast in (False, True):
        draws = bernoulli_logits(gen, logits.repeat(n, 1), fast=fast)
        assert draws.dtype == torch.uint8
        freq = draws.double().mean(0)
        se = (p * (1 - p) / n).sqrt().double()
        assert ((freq - p.double()).abs() <= 5 * se + 1e-12).all(), fast


def test_categorical_draws_match_probabilities():
    gen = torch.Generator().manual_seed(9)
    logits = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0])
    draws = categorical_logits(gen, logits.repeat(100_000, 1))
    counts = torch.bincount(draws.long(), minlength=5)
    assert chi_square_p(counts, torch.softmax(logits.double(), 0)) > P_MIN


def test_categorical_inverse_cdf_at_the_edges_of_u_and_of_the_logits():
    """The unnormalised cumulative weights scaled by ``u``: the ends of ``u``'s grid land on
    the first and last states that have weight, a state whose weight underflows is not drawn
    (``u = 0`` exactly draws the first state whatever its weight), and large logits do not
    overflow (the max is subtracted first)."""
    logits = torch.tensor([[0.0, -200.0, 0.0, -200.0],  # states 1 and 3: exp underflows
                           [1e4, 1e4 - 1.0, -1e4, 1e4 - 3.0]])
    top = 1.0 - 2.0**-24  # the largest uniform on the 24-bit grid
    for u, want in ((0.0, [0, 0]), (top, [2, 3]), (0.5 - 1e-7, [0, 0]), (0.5 + 1e-7, [2, 0])):
        got = categorical_inverse_cdf(logits, torch.full((2,), u))
        assert got.tolist() == want, (u, got)
    rows = torch.tensor([0.3, -0.2, 1.1]).repeat(60_000, 1)
    draws = categorical_inverse_cdf(rows, torch.rand(60_000, generator=torch.Generator()
                                                     .manual_seed(4)))
    counts = torch.bincount(draws, minlength=3)
    assert chi_square_p(counts, torch.softmax(rows[0].double(), 0)) > P_MIN


def test_uniform16_covers_the_int16_range_uniformly():
    gen = torch.Generator().manual_seed(10)
    u = uniform16(gen, (1000, 333))
    assert u.dtype == torch.int16 and u.shape == (1000, 333)
    counts = torch.bincount(((u.long() + 32768) // 4096).reshape(-1), minlength=16)
    assert chi_square_p(counts, torch.full((16,), 1 / 16, dtype=torch.float64)) > P_MIN


def test_step_keeps_log_weights_and_rejects_bad_options():
    model = seven_visible_rbm(2)
    gen = torch.Generator().manual_seed(0)
    state = gibbs.init_uniform(gen, model, 10)
    state = state.replace(log_weight=torch.arange(10, dtype=torch.float64))
    new, info = gibbs.step(gen, state, model, 2)
    assert torch.equal(new.log_weight, state.log_weight) and isinstance(info, dict)
    with pytest.raises(ValueError):
        gibbs.step(gen, state, model, 1, precision="fp16")
    with pytest.raises(ValueError):
        gibbs.step(gen, state, model, 1, clamp_label=True, clamp_visible=True)
    with pytest.raises(ValueError, match="need labels"):
        gibbs.step(gen, state.replace(label=None), model, 1)


def test_bf16_instructions_are_read_from_the_cpu_flags(tmp_path):
    from raybm.samplers.gibbs import cpu_has_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_bf16(info, {}) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_bf16(info, {}) is True
    # ... less what a cap on oneDNN withholds (raybm.cpu)
    assert cpu_has_bf16(info, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}) is False
    info.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert cpu_has_bf16(info, {}) is True
    assert cpu_has_bf16(tmp_path / "absent", {}) is None


def test_for_run_resolves_auto_by_machine_size_and_length():
    """``precision: auto`` is bf16 only with native bf16 and a model wide enough
    (``bf16_width``); ``compile: auto`` only for runs whose draws repay compiling, by what
    it saves in the precision chosen; explicit settings are kept."""
    from raybm.samplers.base import MatmulSupport
    from raybm.samplers.gibbs import (AUTO_BF16_MIN_WIDTH, COMPILE_COST_S, COMPILE_SAVES_S,
                                      GibbsKernel, bf16_width)

    # What every rank of the run multiplies natively (bf16) or exactly (int8)
    bf16_only, int8_only = MatmulSupport(bf16=True), MatmulSupport(int8=True)
    both, neither = MatmulSupport(bf16=True, int8=True), MatmulSupport()

    big, small = BernoulliRBM(784, 512), BernoulliRBM(12, 8)
    assert bf16_width(big) == pytest.approx(784 * 512 / 1296)
    assert bf16_width(small) < AUTO_BF16_MIN_WIDTH <= bf16_width(big)
    auto = GibbsKernel("auto", compile="auto")
    long_run = 2 * COMPILE_COST_S / COMPILE_SAVES_S["bf16"]
    assert auto.for_run(big, bf16_only, long_run) == GibbsKernel(
        "bf16", compile=True, stream="splitmix64",
        chosen="sampler.precision auto: bf16 (native bf16 matmuls on every rank)")
    assert auto.for_run(big, bf16_only, long_run / 3).compile is False
    assert auto.for_run(big, neither, long_run).precision == "fp32"
    # the saving is per precision: a run between the two thresholds compiles in one only
    fp32_long = 2 * COMPILE_COST_S / COMPILE_SAVES_S["fp32"]
    between = (long_run + fp32_long) / 2
    fp32_saves_more = COMPILE_SAVES_S["fp32"] > COMPILE_SAVES_S["bf16"]
    assert auto.for_run(big, neither, between).compile is fp32_saves_more
    assert auto.for_run(big, bf16_only, between).compile is not fp32_saves_more
    # compiled draws take SplitMix64's words (fp32 makes them in its loop, bf16 reads them
    # from a compiled loop that stores them); eager runs read SFC64's; a checkpoint's stream
    # comes back, and SplitMix64 brings compilation to the fp32 draw (eagerly its words
    # cost ~10x), not to a bf16 one (its stored words cost ~2.3x eagerly)
    fp32_run = auto.for_run(big, neither, fp32_long)
    assert fp32_run.compile is True and fp32_run.stream == "splitmix64"
    bf16_run = auto.for_run(big, bf16_only, long_run)
    assert bf16_run.stream == "splitmix64"
    assert GibbsKernel("bf16", compile=True).for_run(big, neither).stream == "splitmix64"
    assert auto.for_run(big, neither, fp32_long / 3).stream == "sfc64"
    resumed = GibbsKernel("fp32").with_state(fp32_run.state_dict())
    assert resumed.stream == "splitmix64" and resumed.compile is True
    resumed = GibbsKernel("bf16").with_state(bf16_run.state_dict())
    assert resumed.stream == "splitmix64" and resumed.compile is False
    assert GibbsKernel("auto").with_state(bf16_run.state_dict()).compile is True
    assert GibbsKernel("fp32").with_state({}).stream == "mt19937"
    assert auto.for_run(small, bf16_only, long_run).precision == "fp32"
    assert GibbsKernel("bf16").for_run(small, neither) == GibbsKernel("bf16")
    assert GibbsKernel("fp32", compile=True).for_run(big, bf16_only).compile is True
    # digits: where bf16 is not native and int8 sums are exact on every rank, wide models only
    from raybm.samplers.gibbs import AUTO_DIGITS_MIN_WIDTH

    assert bf16_width(small) < AUTO_DIGITS_MIN_WIDTH <= bf16_width(big)
    assert auto.for_run(big, int8_only, long_run).precision == "digits"
    assert auto.for_run(big, both, long_run).precision == "bf16"
    assert auto.for_run(small, int8_only, long_run).precision == "fp32"
    digits_run = auto.for_run(big, int8_only, fp32_long)
    assert digits_run.compile is True and digits_run.stream == "splitmix64"
    assert "exact int8 sums on every rank" in digits_run.chosen
    assert GibbsKernel("digits").for_run(big, int8_only) == GibbsKernel("digits")
    # an explicit digits where some rank has no exact int8 sums: the run is fp32, and says so
    fallen = GibbsKernel("digits").for_run(big, bf16_only)
    assert fallen.precision == "fp32" and "as with sampler.precision=fp32" in fallen.chosen
    assert fallen.notes(use_gpu=True) == [fallen.chosen]

"""Run configuration: YAML validated by pydantic, every key documented in docs/config.md.

A config has sections ``data / model / algorithm / optimizer / train / tracking /
distributed``; an unknown key or a wrong type is an :class:`InputError` naming the key, e.g.
``cfg.yaml: algorithm.k: Input should be greater than 0``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Literal, Union

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from raybm.errors import InputError


# Seeds stay below 2^31: streams are derived from them in int64 arithmetic.
SEED_MAX = 2**31 - 1

# Declared on each field (``json_schema_extra``): what a continued run may change.
# RESUME: ``--resume --set`` applies it from the next update (moved data, the workers);
# TUNE: that, and a PBT exploit may mutate it while a trial trains (learning rates, k, ...).
# A field without a mark describes how the run was built (model, data, seed, population) and
# cannot change (``is_resumable``, ``is_mutable``).
RESUME = {"resumable": True}
TUNE = {"resumable": True, "mutable": True}


class _Section(BaseModel):
    # allow_inf_nan=False: no float of the config means anything when infinite or NaN (not a
    # bound, a std, a step size, a learning rate, a box edge, a mixture centre or weight, nor
    # a timeout: an endless wait for a lost node is a hang, not a setting), and such a value
    # only surfaced later as a "diverged" run. Pydantic refuses them while it parses a float,
    # before the field's bounds, so NaN is reported as NaN, not as "less than or equal to
    # 10000"; and only in float (and int) fields: the string "nan", which is what YAML makes
    # of ``--set optimizer.lr=nan``, is a float there but stays a name in a str field, which
    # a walk over the raw values could not tell apart. The message is non_finite_message's.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def non_finite_message(value: Any) -> str:
    """What is wrong with ``value``, a number pydantic refused as not finite (its
    ``finite_number`` error): ``not a number`` for NaN, else ``must be finite, got -inf``.
    ``value`` is the input as given: a float, or a string pydantic read as one ("nan",
    "-inf", "1e400")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return f"must be finite, got {value!r}"
    return "not a number" if math.isnan(number) else f"must be finite, got {number}"


class SyntheticConfig(_Section):
    """``data.format: bimodal``: two complementary prototypes, bits flipped with ``flip_prob``,
    mixed with ``weights`` (the Jarzynski research's two-mode test, small enough to enumerate)."""

    n_visible: int = Field(20, ge=2, le=64)
    n_samples: int = Field(6000, ge=2)
    flip_prob: float = Field(0.03, ge=0, lt=0.5)
    weights: tuple[float, float] = (0.75, 0.25)
    seed: int = Field(0, ge=0, le=SEED_MAX)

    @pydantic.field_validator("weights")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError("both weights must be > 0")
        return value


class MixtureDataConfig(_Section):
    """``data.format: gaussian_mixture``: ``n_samples`` draws of isotropic Gaussians in ``dim``
    dimensions (one ``std``, or ``stds`` one per center); defaults: the Jarzynski research's
    d = 50 study (centres -10 e1 and +6 e1, weights 1/4 and 3/4, unit variance, 10^4
    points)."""

    dim: int = Field(50, ge=1, le=100_000)
    centers: list[list[float]] = Field(default_factory=lambda: [[-10.0], [6.0]], min_length=1)
    weights: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.25, 0.75])
    std: float = Field(1.0, gt=0)
    # One std per center (components of unequal widths), in place of std when given.
    stds: list[Annotated[float, Field(gt=0)]] | None = None
    n_samples: int = Field(10_000, ge=2)
    seed: int = Field(0, ge=0, le=SEED_MAX)

    @pydantic.model_validator(mode="after")
    def _fits(self) -> "MixtureDataConfig":
        if len(self.weights) != len(self.centers):
            raise ValueError(f"{len(self.weights)} weights for {len(self.centers)} centers")
        if self.stds is not None and len(self.stds) != len(self.centers):
            raise ValueError(f"{len(self.stds)} stds for {len(self.centers)} centers")
        if any(len(c) > self.dim for c in self.centers):
            raise ValueError(f"a center has more than dim={self.dim} coordinates")
        return self


class ToyDataConfig(_Section):
    """``data.format: toy2d``: a 2-D toy set of the EBM literature (``raybm.data.toy2d``)."""

    name: Literal["8gaussians", "two_modes", "rings", "moons", "swissroll", "checkerboard",
                  "pinwheel", "2spirals"] = "8gaussians"
    n_samples: int = Field(10_000, ge=2)
    seed: int = Field(0, ge=0, le=SEED_MAX)
    # The mixtures' mode weights (normalised): 2 for two_modes (default 0.2, 0.8), 8 for
    # 8gaussians (default equal); None: the set's default.
    weights: list[Annotated[float, Field(gt=0)]] | None = None

    @pydantic.model_validator(mode="after")
    def _weights_fit(self) -> "ToyDataConfig":
        if self.weights is not None:
            from raybm.data.toy2d import N_MODES

            modes = N_MODES.get(self.name)
            if modes is None:
                raise ValueError(f"weights are for the mixtures {' and '.join(N_MODES)}, "
                                 f"not {self.name}")
            if len(self.weights) != modes:
                raise ValueError(f"{len(self.weights)} weights for the {modes} modes of "
                                 f"{self.name}")
        return self


# Formats whose samples are float vectors or images (continuous models); the others are
# discrete (RBMs). "auto" goes with either: the file decides.
CONTINUOUS_FORMATS = ("gaussian_mixture", "toy2d", "floats", "mnist")
BUILT_IN_FORMATS = ("digits", "bimodal", "gaussian_mixture", "toy2d")


class DataConfig(_Section):
    path: str | None = Field(None, json_schema_extra=RESUME)  # None: scikit-learn's digits (the embedded default)
    format: Literal["auto", "idx", "hapt", "fasta", "csv", "matrix", "digits", "bimodal",
                    "gaussian_mixture", "toy2d", "floats", "mnist"] = "auto"
    labels_path: str | None = Field(None, json_schema_extra=RESUME)
    panel_path: str | None = Field(None, json_schema_extra=RESUME)
    label: str | None = None  # hapt: panel column (super_pop | pop); csv: label column
    threshold: float = Field(0.5, gt=0, lt=1)
    alphabet: str = "auto"  # alignments: protein | rna | dna | auto | explicit letters
    nonstandard: Literal["gap", "drop"] = "gap"
    reweight_identity: float | None = Field(None, gt=0, le=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_seed: int = Field(0, ge=0, le=SEED_MAX)
    max_samples: int | None = Field(None, gt=0)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    mixture: MixtureDataConfig = Field(default_factory=MixtureDataConfig)
    toy: ToyDataConfig = Field(default_factory=ToyDataConfig)
    # format mnist (images as floats in [-1, 1]): keep these digits, at these proportions
    # (e.g. [2, 3, 6] at [4, 2, 1], the Jarzynski research's MNIST study)
    digits: list[Annotated[int, Field(ge=0, le=255)]] | None = Field(None, min_length=1)
    proportions: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=1)

    @pydantic.model_validator(mode="after")
    def _proportions_fit(self) -> "DataConfig":
        if self.proportions is not None and (self.digits is None
                                             or len(self.proportions) != len(self.digits)):
            raise InputError("", "data.proportions", "one proportion per entry of data.digits")
        if self.digits is not None and self.format != "mnist":
            raise InputError("", "data.digits", f"applies to data.format mnist, not {self.format}")
        return self


class _ModelSection(_Section):
    @property
    def start_kick(self) -> float:
        """The std of a fresh run's last change to an exactly-sampled initial model
        (``Estimator.start``: Jarzynski's kick); 0: none."""
        return 0.0


class RBMModelConfig(_ModelSection):
    """An RBM (Bernoulli or Potts visibles, from the data) with an optional label unit."""

    kind: Literal["rbm"] = "rbm"
    n_hidden: int = Field(200, gt=0, le=1_000_000)
    labels: bool = True  # use a label unit when the data has labels
    weight_std: float = Field(0.01, ge=0)

    @property
    def start_kick(self) -> float:
        # Zero couplings with data-fitted biases are a stationary point: Jarzynski's walkers
        # start exactly there and the couplings are kicked by weight_std.
        return self.weight_std


class GaussianMixtureModelConfig(_ModelSection):
    """Isotropic Gaussian components of fixed ``std`` with trainable means and log-weights
    (the Jarzynski research's mode-weight student); log Z in closed form."""

    kind: Literal["gaussian_mixture"] = "gaussian_mixture"
    n_components: int = Field(2, ge=1, le=10_000)
    std: float = Field(1.0, gt=0)
    # One trainable width per component, started at std (mixtures of unequal widths)
    learn_std: bool = False
    # Initial means: these centers (each padded with zeros to the data's dimension), "kmeans"
    # (k-means++ then Lloyd on the training data), or when unset distinct training samples
    # drawn with the init stream; plus N(0, init_noise^2) noise. Initial weights equal. The
    # research's GMM student starts at the origin, split along e1: init_means [[-0.1],
    # [0.1]], init_noise 0.01.
    init_means: list[list[float]] | Literal["kmeans"] | None = Field(None, min_length=1)
    init_noise: float = Field(0.0, ge=0)

    @pydantic.model_validator(mode="after")
    def _means_fit(self) -> "GaussianMixtureModelConfig":
        if isinstance(self.init_means, list) and len(self.init_means) != self.n_components:
            raise InputError("", "model.init_means", f"{len(self.init_means)} means for "
                             f"n_components={self.n_components}")
        return self


class _NeuralModelConfig(_ModelSection):
    activation: Literal["silu", "swish", "softplus", "elu"] = "silu"
    # E(x) = net(x) + base_scale |x|^2 / 2: keeps exp(-E) normalisable, and with the read-out
    # at zero makes the model exactly N(0, I / base_scale) (Jarzynski's exact start).
    base_scale: float = Field(1.0, ge=0, le=1e6)
    # E(x) = net(x) / temperature + base: a small temperature lets an exact Langevin kernel
    # take the large gradient steps of short-run image samplers (models/neural.py)
    temperature: float = Field(1.0, gt=0, le=1e6)


class MLPModelConfig(_NeuralModelConfig):
    """A fully-connected energy on vectors (images are flattened)."""

    kind: Literal["mlp"] = "mlp"
    widths: list[Annotated[int, Field(gt=0, le=1_000_000)]] = Field(
        default_factory=lambda: [128, 128], max_length=64)


class ConvModelConfig(_NeuralModelConfig):
    """The Jarzynski research's MNIST energy on square images (channels and size from the
    data; ``(n, 784)`` rows are read as 1 x 28 x 28)."""

    kind: Literal["conv"] = "conv"


MODEL_CONFIGS: dict[str, type[_Section]] = {
    "rbm": RBMModelConfig, "gaussian_mixture": GaussianMixtureModelConfig,
    "mlp": MLPModelConfig, "conv": ConvModelConfig}
ModelConfig = Annotated[RBMModelConfig | GaussianMixtureModelConfig | MLPModelConfig
                        | ConvModelConfig, Field(discriminator="kind")]


class SamplerSection(_Section):
    """What every ``sampler:`` section declares (a plugin kernel's section derives from it)."""

    # Jarzynski can weight the kernel's moves exactly (samplers.base.Kernel.exact_weights)
    exact_weights: ClassVar[bool] = True
    # Trained modules the kernel's builder needs from the run (a flow it proposes from)
    needs_modules: ClassVar[tuple[str, ...]] = ()


class GibbsSamplerConfig(SamplerSection):
    """Block Gibbs for RBMs: ``fp32`` (exact reference), ``bf16`` (fast path), ``digits``
    (float32-class products from int8 digits of the couplings, ``samplers.digits``), or
    ``auto`` (the default: bf16 where every worker's CPU or GPU multiplies bf16 natively,
    else digits where every worker sums int8 exactly, else fp32; both for wide models only)."""

    name: Literal["gibbs"] = "gibbs"
    precision: Literal["auto", "fp32", "bf16", "digits"] = Field("auto", json_schema_extra=TUNE)
    # torch.compile of the sweeps' elementwise draws (both precisions): auto (on for a run
    # long enough to repay the ~15 s it takes to compile), true, false (YAML reads on / off
    # as these too)
    compile: Literal["auto"] | bool = "auto"


class _BoxedSamplerConfig(SamplerSection):
    """A continuous kernel's section: its walkers may be kept in a box (images in [-1, 1])."""

    box: tuple[float, float] | None = None

    @pydantic.field_validator("box")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("(low, high) with low < high")
        return value


class _LangevinSamplerConfig(_BoxedSamplerConfig):
    step_size: float = Field(0.01, gt=0, le=1e6, json_schema_extra=TUNE)
    # The proposal noise's standard deviation; None: sqrt(2 step_size), the Langevin
    # diffusion of exp(-E). Another value keeps the moves exactly weighted (ULA) or
    # corrected (MALA) for exp(-E), with a proposal that targets another temperature.
    noise_std: float | None = Field(None, gt=0, le=1e6, json_schema_extra=TUNE)
    # (low, high) in box: the target restricted to the box, e.g. [-1, 1]
    # How a proposal is kept in the box: reflected at its faces, or each coordinate that
    # leaves it reverted to its old value (the Jarzynski research's MNIST code); both with
    # their exact densities (samplers.langevin)
    box_rule: Literal["reflect", "revert"] = "reflect"

    @pydantic.model_validator(mode="after")
    def _rule_needs_box(self) -> "_LangevinSamplerConfig":
        if self.box_rule != "reflect" and self.box is None:
            raise InputError("", "sampler.box_rule", f"{self.box_rule} applies to a box: set "
                             "sampler.box")
        return self


class ULASamplerConfig(_LangevinSamplerConfig):
    """Unadjusted Langevin (Jarzynski adds its log-weight increment)."""

    name: Literal["ula"] = "ula"


class MALASamplerConfig(_LangevinSamplerConfig):
    """Metropolis-adjusted Langevin (exactly invariant)."""

    name: Literal["mala"] = "mala"
    # Adapt step_size after every update towards this acceptance (0.574 is optimal for MALA
    # in high dimension, Roberts & Rosenthal 1998): log h += adapt_rate * (acceptance -
    # target). None: a fixed step size.
    target_acceptance: float | None = Field(None, gt=0, lt=1, json_schema_extra=TUNE)
    adapt_rate: float = Field(0.05, gt=0, le=1, json_schema_extra=TUNE)


class ShortRunSamplerConfig(_BoxedSamplerConfig):
    """Short-run Langevin (samplers.short_run): ``x += noise_std xi``, then ``x -= step_size
    clamp(grad E, +-grad_clamp)``, clamped to the box. Biased, with no Jarzynski weights: for
    PCD with a persistent buffer (configs/mnist236_conv_buffer.yaml)."""

    name: Literal["short_run"] = "short_run"
    exact_weights: ClassVar[bool] = False  # Jarzynski cannot weight its moves
    step_size: float = Field(10.0, gt=0, le=1e6, json_schema_extra=TUNE)
    noise_std: float = Field(0.005, ge=0, le=1e6, json_schema_extra=TUNE)
    # per-coordinate bound on the gradient a step follows; None: unclamped
    grad_clamp: float | None = Field(0.03, gt=0, json_schema_extra=TUNE)
    # (box: the walkers are clamped to it, e.g. [-1, 1])


class FlowMCSamplerConfig(SamplerSection):
    """FlowMC (samplers/flowmc.py): per round one IMH step with proposals from the run's
    trained flow, then ``n_mala`` MALA steps of ``step_size``; exactly invariant."""

    name: Literal["flowmc"] = "flowmc"
    # The trained module the kernel proposes from: the run's algorithm must train it.
    needs_modules: ClassVar[tuple[str, ...]] = ("flow",)
    step_size: float = Field(0.01, gt=0, le=1e6, json_schema_extra=TUNE)
    n_mala: int = Field(10, ge=0, le=100_000, json_schema_extra=TUNE)
    # Adapt the MALA step towards this acceptance after every update (as sampler mala does);
    # None: a fixed step
    target_acceptance: float | None = Field(None, gt=0, lt=1, json_schema_extra=TUNE)
    adapt_rate: float = Field(0.05, gt=0, le=1, json_schema_extra=TUNE)


SAMPLER_CONFIGS: dict[str, type[SamplerSection]] = {
    "gibbs": GibbsSamplerConfig, "ula": ULASamplerConfig, "mala": MALASamplerConfig,
    "short_run": ShortRunSamplerConfig, "flowmc": FlowMCSamplerConfig}
SamplerConfig = Annotated[GibbsSamplerConfig | ULASamplerConfig | MALASamplerConfig
                          | ShortRunSamplerConfig | FlowMCSamplerConfig,
                          Field(discriminator="name")]


class _AlgorithmOptions(_Section):
    """Options every algorithm has (k, the population, the centred gradient of RBMs)."""

    name: str  # each algorithm narrows it to its own name (the union's tag)
    k: int = Field(10, gt=0, json_schema_extra=TUNE)  # kernel steps per update (Gibbs sweeps, Langevin steps)
    n_walkers: int | None = Field(None, gt=0)  # persistent walkers (default: batch size)
    centered: bool | None = None  # None: the centred gradient where the model offers it (RBMs)
    hidden_offset_momentum: float = Field(0.01, gt=0, le=1, json_schema_extra=TUNE)
    # alpha of the energy penalty alpha (<E^2>_data + <E^2>_walkers) added to the surrogate
    # loss (Du & Mordatch 2019): keeps an image energy from running away
    energy_penalty: float = Field(0.0, ge=0, le=1e6, json_schema_extra=TUNE)
    # std of Gaussian noise added to each minibatch (the data jitter of image EBMs)
    data_noise: float = Field(0.0, ge=0, le=1e6, json_schema_extra=TUNE)
    # Declared by an algorithm whose walkers carry Jarzynski weights: its kernel's moves
    # must be weighted exactly (sampler sections declare exact_weights).
    needs_exact_weights: ClassVar[bool] = False
    # Declared by an algorithm whose walkers start as exact draws of the initial model (a
    # neural energy at its Gaussian base: Estimator.starts_exact).
    starts_exact: ClassVar[bool] = False
    # Declared by an algorithm for continuous models only (a flow on the walkers).
    continuous_only: ClassVar[bool] = False

    def check_sampler(self, sampler: SamplerSection) -> None:
        """Raise an InputError when ``sampler`` cannot serve this algorithm's options (called
        for every config; any sampler by default)."""


class KStepConfig(_AlgorithmOptions):
    """F&F out-of-equilibrium k-step training."""

    name: Literal["kstep"] = "kstep"
    classification: bool = Field(True, json_schema_extra=TUNE)  # also apply the label-sampling (classification) update


class PCDConfig(_AlgorithmOptions):
    name: Literal["pcd"] = "pcd"
    # Where the persistent walkers start: the kernel's initial distribution (uniform bits,
    # N(0, I)) or random training samples (the research's GMM study starts PCD at the data).
    walker_init: Literal["kernel", "data"] = "kernel"
    # A persistent buffer: n_walkers walkers are kept, and each update moves this many of
    # them, drawn at random (None: all of them, classic PCD)
    walkers_per_update: int | None = Field(None, gt=0, json_schema_extra=TUNE)
    # the fraction of the walkers an update moves that first start afresh from the kernel's
    # start distribution (each with this probability; 0.05 in buffer recipes)
    reinit_fraction: float = Field(0.0, ge=0, le=1, json_schema_extra=TUNE)


class CDConfig(_AlgorithmOptions):
    name: Literal["cd"] = "cd"


class JarzynskiConfig(_AlgorithmOptions):
    name: Literal["jarzynski"] = "jarzynski"
    ess_threshold: float = Field(0.5, gt=0, le=1, json_schema_extra=TUNE)  # resample when ESS / n is below
    resampling: Literal["systematic", "multinomial"] = Field("systematic", json_schema_extra=TUNE)
    # no resampling before this update (the Jarzynski research's MNIST runs wait)
    # (Fixed for the run: the estimator counts updates towards it only when it is set.)
    resample_after: int = Field(0, ge=0)
    needs_exact_weights: ClassVar[bool] = True
    starts_exact: ClassVar[bool] = True


class FlowMCEBMConfig(_AlgorithmOptions):
    """FlowMC-EBM (algorithms/flowmc.py): PCD whose walkers move by FlowMC, with the flow
    fitted to them as a second trained module (its optimizer: ``optimizers.flow``)."""

    name: Literal["flowmc_ebm"] = "flowmc_ebm"
    starts_exact: ClassVar[bool] = True
    continuous_only: ClassVar[bool] = True
    # zuko's affine (MAF) or spline (NSF) autoregressive flow, or affine coupling (RealNVP)
    flow_family: Literal["maf", "nsf", "realnvp"] = "maf"
    flow_transforms: int = Field(3, ge=1, le=64)
    flow_hidden: list[Annotated[int, Field(gt=0, le=100_000)]] = Field(
        default_factory=lambda: [64, 64], min_length=1, max_length=16)
    flow_steps: int = Field(2, ge=1, le=100, json_schema_extra=RESUME)  # flow steps per energy step
    # lambda of (1 - lambda) NLL(walkers) + lambda NLL(data), the flow's loss
    flow_data_weight: float = Field(0.0, ge=0, le=1, json_schema_extra=TUNE)
    # Adam steps fitting the flow to exact draws of the initial model before training (for a
    # model that does not start at the flow's identity, e.g. a mixture at k-means centres),
    # at this learning rate
    flow_warmup: int = Field(0, ge=0, le=1_000_000)
    flow_warmup_lr: float = Field(1e-3, gt=0, le=1)
    # A log window whose mean IMH acceptance is below this is reported as the flow lagging
    # behind the energy (flow_lagging = 1, a line in the run's log)
    imh_floor: float = Field(0.05, ge=0, lt=1, json_schema_extra=TUNE)


class DCDConfig(_AlgorithmOptions):
    """DCD-VE (algorithms/dcd.py): diffusion contrastive divergence with a variance-exploding
    perturbation; walker-less (``k``: the posterior route's Langevin steps, with the run's
    ``sampler``)."""

    name: Literal["dcd_ve"] = "dcd_ve"
    continuous_only: ClassVar[bool] = True
    k: int = Field(5, gt=0, json_schema_extra=TUNE)
    # taylor: the heat-equation expansion (one step, second derivatives); posterior: k
    # Langevin steps on the noise-conditioned posterior
    route: Literal["taylor", "posterior"] = Field("taylor", json_schema_extra=TUNE)
    # the noise scale, in units of sigma_unit
    sigma: float = Field(0.05, gt=0, le=1e6, json_schema_extra=TUNE)
    # with it, sigma_t = sigma (sigma_max / sigma)^t, t ~ U(0, 1) per point (taylor only)
    sigma_max: float | None = Field(None, gt=0, le=1e6, json_schema_extra=TUNE)
    # width: sigma and sigma_max are multiples of the training data's width (the RMS of its
    # per-coordinate standard deviations), so one default fits data of any scale; absolute:
    # in the data's units
    sigma_unit: Literal["width", "absolute"] = "width"
    # the posterior route's Langevin step as a fraction of sigma^2 (the posterior's width
    # squared: steps beyond it diverge); unset: the sampler's own step_size
    posterior_step: float | None = Field(0.1, gt=0, lt=2, json_schema_extra=TUNE)
    # Hutchinson probes of the Laplacian (taylor); 0: the exact Laplacian (d backward passes)
    probes: int = Field(0, ge=0, le=10_000, json_schema_extra=TUNE)
    # where the posterior chains start: the noised data (the research's) or the clean data
    # (then noising + posterior sampling is a Gibbs sweep that leaves the model invariant)
    posterior_start: Literal["noised", "data"] = "noised"

    @pydantic.model_validator(mode="after")
    def _schedule_fits(self) -> "DCDConfig":
        if self.sigma_max is not None:
            if self.sigma_max <= self.sigma:
                raise ValueError(f"sigma_max {self.sigma_max} must exceed sigma {self.sigma}")
            if self.route == "posterior":
                raise ValueError("a noise schedule (sigma_max) is for route taylor: the "
                                 "posterior route's Langevin step is tied to one sigma")
        return self

    def check_sampler(self, sampler: SamplerSection) -> None:
        """The posterior route's step is set as a fraction of sigma^2: its kernel must be a
        Langevin kernel with a fixed step (ula, or mala without adaptation)."""
        if self.route != "posterior" or self.posterior_step is None:
            return
        if not isinstance(sampler, _LangevinSamplerConfig):
            raise InputError("", "sampler.name", f"algorithm.posterior_step sets a Langevin "
                             f"step: use ula or mala, not {sampler.name} (or unset "
                             "posterior_step)")
        if isinstance(sampler, MALASamplerConfig) and sampler.target_acceptance is not None:
            raise InputError("", "sampler.target_acceptance", "adapts the step that "
                             "algorithm.posterior_step fixes: unset one of them")
        if sampler.noise_std is not None:
            # a noise of its own would sample the posterior at a temperature that moves with
            # sigma and the data's width
            raise InputError("", "sampler.noise_std", "the posterior route samples the "
                             "posterior itself (noise sqrt(2 step)): unset noise_std, or "
                             "algorithm.posterior_step")


# ``algorithm:`` is one of these, chosen by ``name`` (a pydantic discriminated union): a key
# of another algorithm is refused instead of silently ignored.
ALGORITHM_CONFIGS: dict[str, type[_AlgorithmOptions]] = {
    c.model_fields["name"].default: c
    for c in (KStepConfig, PCDConfig, CDConfig, JarzynskiConfig, FlowMCEBMConfig, DCDConfig)
}
ALGORITHM_NAMES = tuple(ALGORITHM_CONFIGS)  # the built-in ones (plugins add to the dict)
AlgorithmConfig = Annotated[
    KStepConfig | PCDConfig | CDConfig | JarzynskiConfig | FlowMCEBMConfig | DCDConfig,
    Field(discriminator="name")]


def register_section(section: str, member: type[BaseModel]) -> None:
    """Add a member to a tagged section's union (``algorithm`` or ``sampler``: the config of
    an estimator or a kernel a plugin registers); configs validated from now on accept its
    tag and keys."""
    from pydantic.fields import FieldInfo

    tag, _, members = TAGGED_SECTIONS[section]
    members[member.model_fields[tag].default] = member
    union = Annotated[Union[tuple(members.values())], Field(discriminator=tag)]
    Config.model_fields[section] = FieldInfo.merge_field_infos(
        Config.model_fields[section], annotation=union)
    Config.model_rebuild(force=True)


def _tagged_section(section: str, raw: Any, tag: str, default: str,
                    members: dict[str, type[BaseModel]]) -> Any:
    """The raw mapping of a section chosen by its ``tag`` key (``algorithm.name``,
    ``model.kind``, ``sampler.name``), ready for its union: the tag defaults to ``default``,
    and a key of another member is dropped when it holds that member's default (configs
    written before the union recorded every member's keys) or refused when it does not."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    chosen = raw.setdefault(tag, default)
    own = members.get(chosen) if isinstance(chosen, str) else None
    if own is None:
        return raw  # the union reports the bad tag
    for key in [k for k in raw if k not in own.model_fields]:
        owners = [n for n, c in members.items() if key in c.model_fields]
        if not owners:
            continue  # an unknown key: reported as such
        if raw[key] == members[owners[0]].model_fields[key].default:
            del raw[key]
            continue
        raise InputError("", f"{section}.{key}",
                         f"applies to {section}.{tag} {' or '.join(owners)} only, not {chosen}")
    return raw


def _check_sampler_fits(kind: str, sampler: str) -> None:
    """RBMs are sampled with Gibbs, continuous models with every other kernel (Langevin,
    short-run, FlowMC, a plugin's). The message names the built-in ones: the same line
    whichever plugins a process has loaded."""
    rbm = kind == "rbm"
    if rbm != (sampler == "gibbs"):
        want = "gibbs" if rbm else "ula, mala, short_run or flowmc"
        raise InputError("", "sampler.name", f"model.kind {kind} is sampled with {want}, "
                         f"not {sampler}")


def _raw_tag(raw: dict[str, Any], section: str) -> str | None:
    """The tag a raw config gives a tagged section (its default when the section is left
    out), or None when it is not one of the section's members (the union reports it)."""
    tag, default, members = TAGGED_SECTIONS[section]
    if section not in raw:
        return default
    value = raw[section]
    chosen = value.get(tag, default) if isinstance(value, dict) else None
    return chosen if isinstance(chosen, str) and chosen in members else None


# The tagged sections: key -> (tag, default member, members).
TAGGED_SECTIONS = {
    "algorithm": ("name", "kstep", ALGORITHM_CONFIGS),
    "model": ("kind", "rbm", MODEL_CONFIGS),
    "sampler": ("name", "gibbs", SAMPLER_CONFIGS),
}


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Configs written before ``sampler:`` existed kept the Gibbs precision as
    ``algorithm.precision``: it is ``sampler.precision`` now."""
    algorithm = raw.get("algorithm")
    if not (isinstance(algorithm, dict) and "precision" in algorithm):
        return raw
    algorithm = dict(algorithm)
    precision = algorithm.pop("precision")
    given = raw.get("sampler")
    sampler = dict(given or {}) if isinstance(given, dict) or given is None else None
    if sampler is None or sampler.get("name", "gibbs") != "gibbs":
        if precision == "fp32":  # the old key's default: nothing was asked of it
            return {**raw, "algorithm": algorithm}
        raise InputError("", "algorithm.precision",
                         "is the Gibbs sampler's precision: set sampler.precision")
    if sampler.get("precision", precision) != precision:
        raise InputError("", "algorithm.precision", "the old name of sampler.precision; "
                         "set only sampler.precision")
    sampler["precision"] = precision
    return {**raw, "algorithm": algorithm, "sampler": sampler}


class ScheduleConfig(_Section):
    """A learning-rate schedule: factors of ``lr`` over the updates (``raybm.optim``)."""

    name: Literal["constant", "linear", "cosine"] = Field("constant", json_schema_extra=TUNE)
    warmup: int = Field(0, ge=0, json_schema_extra=TUNE)  # updates of linear warm-up from lr / warmup to lr
    start: float = Field(0.0, ge=0, lt=1, json_schema_extra=TUNE)  # where the decay begins, a fraction of the horizon
    final: float = Field(0.0, ge=0, le=1, json_schema_extra=TUNE)  # the factor at the horizon's end
    updates: int | None = Field(None, gt=0, json_schema_extra=TUNE)  # the horizon; None: train.n_updates


class OptimizerConfig(_Section):
    name: Literal["sgd", "adam"] = "sgd"
    # Upper bounds far above any working value: a step of 1e39 overflows float32 in the
    # optimizer itself (a traceback, not a divergence).
    lr: float = Field(0.01, gt=0, le=1e4, json_schema_extra=TUNE)
    # Learning rates of named parameters that differ from lr, e.g. {log_weights: 0.0125} for a
    # mixture's weights (the Jarzynski research's GMM: means 0.0025, weights 0.0125).
    # (Fixed for the run: it decides the optimizer's parameter groups, which its state follows.)
    param_lr: dict[str, Annotated[float, Field(gt=0, le=1e4)]] = Field(default_factory=dict)
    momentum: float = Field(0.0, ge=0, lt=1, json_schema_extra=TUNE)
    weight_decay: float = Field(0.0, ge=0, le=1e4, json_schema_extra=TUNE)
    # Adam's moment decays (the Jarzynski research's MNIST runs use (0, 0.999))
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), json_schema_extra=TUNE)
    clip_norm: float | None = Field(None, gt=0, json_schema_extra=TUNE)  # scale the summed gradient to this norm at most
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)  # its fields declare
    # A module beside the energy (optimizers.<name>) only: its rate is lr_ratio times the
    # energy's optimizer.lr, on the energy's schedule (its own lr and schedule unused): the
    # two rates co-adjusted, as FlowMC-EBM's flow and energy must be (arXiv 2306.00684, 4.1)
    lr_ratio: float | None = Field(None, gt=0, le=1e6, json_schema_extra=TUNE)


class TrainConfig(_Section):
    n_updates: int = Field(3000, gt=0, json_schema_extra=TUNE)
    batch_size: int = Field(100, gt=0, json_schema_extra=TUNE)
    seed: int = Field(0, ge=0, le=SEED_MAX)  # generators derive streams from it in int64
    # (Resumable, never mutated by PBT: every trial reports and checkpoints at the same steps.)
    log_every: int = Field(50, gt=0, json_schema_extra=RESUME)
    checkpoint_every: int = Field(1000, gt=0, json_schema_extra=RESUME)
    eval_t: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [1, 10, 100, 1000],
                                                      json_schema_extra=TUNE)
    eval_samples: int = Field(1000, ge=2, json_schema_extra=TUNE)  # the generation scores compare >= 2 samples
    eval_k_long: int = Field(1000, gt=0, json_schema_extra=TUNE)  # label-sampling steps for the "many steps" accuracy
    # Rounds of k kernel steps run on from a continuous run's final walkers with the model
    # fixed (R-hat, the chains' mode weights: metrics.modes), at most train.n_updates; 0: none
    eval_chain_rounds: int = Field(100, ge=0, json_schema_extra=TUNE)
    ais_betas: int = Field(0, ge=0, json_schema_extra=TUNE)  # >= 2: AIS log Z (this many temperatures), large models
    ais_chains: int = Field(200, gt=0, json_schema_extra=TUNE)
    # torch intra-op threads: a count, or auto (one for small per-update work, every CPU the
    # process holds for large: train.auto_threads); None: torch's default (older configs)
    threads: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field("auto", json_schema_extra=TUNE)
    progress: bool = Field(True, json_schema_extra=TUNE)

    @pydantic.field_validator("ais_betas")
    @classmethod
    def _betas(cls, value: int) -> int:
        if value == 1:
            raise ValueError("0 (no AIS) or at least 2 temperatures")
        return value


class TrackingConfig(_Section):
    enabled: bool = True
    uri: str | None = None  # default: absolute sqlite:///<cwd>/mlflow.db; MLFLOW_TRACKING_URI wins
    experiment: str = Field("raybm", min_length=1)
    run_name: str | None = Field(None, min_length=1)

    @pydantic.field_validator("run_name")
    @classmethod
    def _one_name(cls, value: str | None) -> str | None:
        # The default run directory is runs/<run_name>: a name must not leave that folder.
        if value is not None and ("/" in value or "\\" in value or value in (".", "..")):
            raise ValueError("a run name, not a path (use --out for the directory)")
        return value


class DistributedConfig(_Section):
    workers: int = Field(0, ge=0, json_schema_extra=RESUME)  # 0: in-process, no Ray; N: N Ray Train workers (shards)
    use_gpu: bool = Field(False, json_schema_extra=RESUME)
    max_failures: int = Field(2, ge=0, json_schema_extra=RESUME)  # worker-group restarts from the last checkpoint
    keep_checkpoints: int = Field(2, ge=1, json_schema_extra=RESUME)  # Ray keeps this many under <run>/ray
    # Ray's placement strategies for the workers' bundles: pack fills a node first (shard
    # exchange stays on one host), spread puts shards on different nodes (one per GPU node).
    placement: Literal["pack", "spread"] = Field("pack", json_schema_extra=RESUME)
    # CPUs each worker reserves (and its torch threads); None: the cluster's CPUs shared
    # among the workers, at most one node's worth (a bundle never spans nodes).
    cpus_per_worker: int | None = Field(None, ge=1, json_schema_extra=RESUME)
    # How long a worker group may wait for its resources (a lost node's replacement, an
    # autoscaler's new node) before that start counts as a failure.
    start_timeout_s: float = Field(600.0, gt=0, json_schema_extra=RESUME)


# Keys of the centred gradient, which only RBMs offer (Config.model_dump leaves them out of
# other models' configs).
RBM_ONLY_KEYS: dict[str, set[str]] = {"algorithm": {"centered", "hidden_offset_momentum"}}


class Config(_Section):
    @pydantic.model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = _migrate(raw)
        # Model and sampler first: with the wrong sampler for the model, the sampler's keys
        # are another sampler's (step_size under gibbs), and the error is the sampler's name.
        kind, sampler = _raw_tag(raw, "model"), _raw_tag(raw, "sampler")
        if kind is not None and sampler is not None:
            _check_sampler_fits(kind, sampler)
        for section, (tag, default, members) in TAGGED_SECTIONS.items():
            if section in raw:
                raw = {**raw, section: _tagged_section(section, raw[section], tag, default,
                                                       members)}
        return raw

    # Modules imported before the rest is validated, which register estimators (and their
    # config sections) beyond the built-in ones: a new method as files plus a registration.
    plugins: list[str] = Field(default_factory=list)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=RBMModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=KStepConfig)
    sampler: SamplerConfig = Field(default_factory=GibbsSamplerConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    # The optimizers of trained modules an estimator declares beside the energy, by name
    # (e.g. optimizers.flow); a module left out gets the section's defaults.
    optimizers: dict[str, OptimizerConfig] = Field(default_factory=dict)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    @pydantic.model_validator(mode="after")
    def _compatible(self) -> "Config":
        rbm = self.model.kind == "rbm"
        _check_sampler_fits(self.model.kind, self.sampler.name)  # also on assignment
        if not rbm and self.algorithm.centered:
            raise InputError("", "algorithm.centered", "the centred gradient is defined for "
                             f"RBMs, not model.kind {self.model.kind}")
        momentum = self.algorithm.hidden_offset_momentum
        if not rbm and momentum != _AlgorithmOptions.model_fields[
                "hidden_offset_momentum"].default:  # the default: an older run's config.yaml
            raise InputError("", "algorithm.hidden_offset_momentum", "the hidden offset is "
                             f"the centred gradient's, defined for RBMs, not model.kind "
                             f"{self.model.kind}")
        if (type(self.algorithm).needs_exact_weights
                and not type(self.sampler).exact_weights):
            raise InputError("", "sampler.name", f"{self.sampler.name} moves walkers with no "
                             f"known transition density, so {self.algorithm.name} cannot "
                             "weight them: use ula or mala")
        a = self.algorithm
        if isinstance(a, PCDConfig) and a.walkers_per_update is not None:
            # The buffer's size must not follow train.batch_size (a resume may change that),
            # and every worker moves at least one of its walkers.
            if a.n_walkers is None:
                raise InputError("", "algorithm.walkers_per_update", "a buffer needs its size:"
                                 " set algorithm.n_walkers")
            if a.walkers_per_update > a.n_walkers:
                raise InputError("", "algorithm.walkers_per_update", f"{a.walkers_per_update} "
                                 f"is more than the {a.n_walkers} walkers kept "
                                 "(algorithm.n_walkers)")
            if a.walkers_per_update < self.distributed.workers:
                raise InputError("", "algorithm.walkers_per_update", f"{a.walkers_per_update} "
                                 f"for {self.distributed.workers} workers: each moves at "
                                 "least one of its walkers")
        a.check_sampler(self.sampler)
        if rbm and type(a).continuous_only:
            raise InputError("", "algorithm.name", f"{a.name} trains continuous models, not "
                             "model.kind rbm")
        if rbm and a.data_noise:
            raise InputError("", "algorithm.data_noise", "jitters continuous data, not the "
                             "states of model.kind rbm")

        f = self.data.format
        if f != "auto" and rbm == (f in CONTINUOUS_FORMATS):
            raise InputError("", "data.format", f"{f} data does not fit "
                             f"model.kind {self.model.kind}")
        if (type(self.algorithm).starts_exact and self.model.kind in ("mlp", "conv")
                and self.model.base_scale == 0):
            raise InputError("", "model.base_scale", f"{self.algorithm.name} walkers start as "
                             "exact draws of N(0, I / base_scale): set base_scale > 0")
        return self

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        """Pydantic's dump, less the keys the model kind does not use: the centred gradient's
        options (``algorithm.centered``, ``hidden_offset_momentum``) exist for RBMs only, and
        a continuous run's ``config.yaml``, checkpoints and MLflow params should not show them
        (every dump of a config goes through here)."""
        if self.model.kind != "rbm" and "exclude" not in kwargs:
            kwargs["exclude"] = RBM_ONLY_KEYS
        return super().model_dump(**kwargs)

    def flat(self) -> dict[str, Any]:
        """``{"algorithm.k": 10, ...}``: the params MLflow records."""
        out: dict[str, Any] = {}

        def walk(prefix: str, values: dict[str, Any]) -> None:
            for key, value in values.items():
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)
                else:
                    out[f"{prefix}{key}"] = value

        walk("", self.model_dump())
        return out


def parse_config(raw: dict[str, Any] | None, source: str = "<config>") -> Config:
    """Validate a raw mapping; errors name ``source`` and the dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(source, "", "a config must be a mapping of sections")
    try:
        # Plugins before the schema is used: the algorithms they register must be members
        # of the union this validation runs with.
        from raybm.plugins import load_plugins

        load_plugins(raw.get("plugins"))
        return Config.model_validate(raw)
    except InputError as err:  # raised by a section hook, without the source
        raise InputError(source, err.field, err.message) from None
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        # pydantic names the member of a plain union a value failed in ("list[list[float]]",
        # "literal['kmeans']"): never a key, so left out of it
        loc = [p for p in first["loc"] if not (isinstance(p, str) and "[" in p)]
        tagged = TAGGED_SECTIONS.get(str(loc[0])) if loc else None
        if tagged and len(loc) > 1 and loc[1] in tagged[2]:
            del loc[1]  # the union's tag: the key is <section>.<field>
        key = ".".join(str(p) for p in loc) or "<root>"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        elif first["type"] == "finite_number":
            msg = non_finite_message(first["input"])
        elif first["type"] == "union_tag_invalid" and tagged:
            key = f"{loc[0]}.{tagged[0]}"
            msg = f"Input should be one of {', '.join(tagged[2])}"
        return _raise(InputError(source, key, msg))


def _raise(err: Exception):
    raise err


def read_config_file(path: str | Path, kind: str = "config") -> dict[str, Any]:
    """The raw mapping of a YAML config file (``safe_load``); errors name the file.

    An empty file (no bytes, or only blanks and comments) is refused: it is a truncated or
    forgotten file far more often than a wish for every default (``{}`` says that, and no
    file at all gives the defaults). ``kind`` names the file in that message (``space``)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(path, "", "config file not found") from None
    except IsADirectoryError:
        raise InputError(path, "", "is a directory, not a config file") from None
    except OSError as err:
        raise InputError(path, "", f"cannot read config: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise InputError(path, where, "not valid YAML") from None
    if raw is None:
        raise InputError(path, "", f"the {kind} file is empty")
    # Not ``or {}``: a file holding 0 or false is no mapping either.
    if not isinstance(raw, dict):
        raise InputError(path, "", "a config must be a mapping of sections")
    return raw


def set_dotted(raw: dict[str, Any], key: str, value: Any, source: str = "--set") -> None:
    """``raw["a"]["b"] = value`` for ``key == "a.b"`` (sections created as needed)."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(source, key, f"{part} is not a section")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set key=value`` items (values parsed as YAML) to a copy of ``raw``."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--set", item, "expected key=value, e.g. algorithm.k=10")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        set_dotted(raw, key, parsed)
    return raw


def config_from(raw: dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Config:
    """Validate ``raw`` with ``--set`` overrides applied; an error in an overridden key names
    ``--set`` (where the value came from), any other names ``source``."""
    overrides = list(overrides)
    try:
        return parse_config(apply_overrides(raw, overrides), source)
    except InputError as err:
        keys = {item.partition("=")[0] for item in overrides}
        if err.where != "--set" and any(_same_key(err.field, k) for k in keys):
            raise InputError("--set", err.field, err.message) from None
        raise


def _same_key(field: str, key: str) -> bool:
    """``train.eval_t.0`` (an item of a list) or ``foo`` (an unknown section) came from the
    ``--set`` of ``train.eval_t`` or ``foo.bar``."""
    return field == key or field.startswith(key + ".") or key.startswith(field + ".")


def load_config(path: str | Path | None, overrides: Iterable[str] = (),
                use_default: bool = False) -> Config:
    """Read a YAML file (``safe_load``), apply ``--set key=value`` overrides, validate.

    With no file, the schema defaults apply, or, with ``use_default``, the embedded main job
    (``raybm/configs/ff10_digits.yaml``: F&F-10 with labels on digits), which ``raybm train``
    uses when given no config.
    """
    if path is None and use_default:
        path = DEFAULT_CONFIG
    raw = read_config_file(path) if path is not None else {}
    return config_from(raw, str(path) if path is not None else "--set", overrides)


DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ff10_digits.yaml"


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


# ---------------------------------------------------------------------- run-time resolution
PATH_KEYS = ("data.path", "data.labels_path", "data.panel_path")


def data_paths(config: Config) -> dict[str, Path]:
    """The data files a run reads, by config key (the keys that are set)."""
    values = {key: get_dotted(config, key) for key in PATH_KEYS}
    return {key: Path(value) for key, value in values.items() if value is not None}


def get_dotted(config: Config, key: str, default: Any = None) -> Any:
    """The value of a dotted key, through sections and dict-valued sections
    (``optimizers.flow.lr``); ``default`` where a dict has no such entry."""
    node: Any = config
    for part in key.split("."):
        if isinstance(node, dict):
            if part not in node:
                return default
            node = node[part]
        else:
            node = getattr(node, part)
    return node


def with_values(config: Config, values: dict[str, Any], source: str = "--set") -> Config:
    """A copy of ``config`` with dotted ``values`` set, validated (errors name ``source``)."""
    raw = config.model_dump()
    for key, value in values.items():
        set_dotted(raw, key, value, source)
    return parse_config(raw, source)



def _marks(key: str) -> dict[str, Any]:
    """The marks (:data:`RESUME`, :data:`TUNE`) declared on the config field a dotted key
    names: walked through sections, the members of tagged unions and dict-valued sections
    (``optimizers.<module>.lr``); an entry of a dict or list field shares its field's."""
    import typing

    def models(annotation: Any) -> tuple[list[type[BaseModel]], bool]:
        """The sections an annotation holds, and whether they sit under dict keys."""
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation], False
        if typing.get_origin(annotation) is dict:
            found, _ = models(typing.get_args(annotation)[1])
            return found, True
        found: list[type[BaseModel]] = []
        keyed = False
        for arg in typing.get_args(annotation):
            more, k = models(arg)
            found += more
            keyed = keyed or k
        return found, keyed

    parts = key.split(".")
    sections: list[type[BaseModel]] = [Config]
    i = 0
    while i < len(parts):
        info = next((c.model_fields[parts[i]] for c in sections
                     if parts[i] in c.model_fields), None)
        if info is None:
            return {}
        inner, keyed = models(info.annotation)
        if i == len(parts) - 1 or not inner:
            return dict(info.json_schema_extra or {})
        sections = inner
        i += 2 if keyed else 1  # under a dict, the next part is the entry's key
    return {}


def is_resumable(key: str) -> bool:
    """A continued run can apply a change of ``key`` (declared :data:`RESUME` or
    :data:`TUNE` on its field)."""
    return bool(_marks(key).get("resumable"))


def is_mutable(key: str) -> bool:
    """A PBT exploit may mutate ``key`` while a trial trains (declared :data:`TUNE`)."""
    return bool(_marks(key).get("mutable"))


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = old.flat(), new.flat()
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_resumable(old: Config, new: Config, source: str = "--set") -> None:
    """Refuse a continued run's change that training could not apply (one line, the key)."""
    for key in changed_keys(old, new):
        if not is_resumable(key):
            raise InputError(source, key, f"cannot change when resuming (the run was built "
                                          f"with {get_dotted(old, key)!r})")

"""Run configuration: YAML validated by pydantic, every key documented in docs/config.md.

A config has sections ``data / model / algorithm / optimizer / train / tracking /
distributed``; an unknown key or a wrong type is an :class:`InputError` naming the key, e.g.
``cfg.yaml: algorithm.k: Input should be greater than 0``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from raybm.errors import InputError


# Seeds stay below 2^31: streams are derived from them in int64 arithmetic.
SEED_MAX = 2**31 - 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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


class DataConfig(_Section):
    path: str | None = None  # None: scikit-learn's digits (the embedded default)
    format: Literal["auto", "idx", "hapt", "fasta", "csv", "matrix", "digits", "bimodal"] = "auto"
    labels_path: str | None = None
    panel_path: str | None = None
    label: str | None = None  # hapt: panel column (super_pop | pop); csv: label column
    threshold: float = Field(0.5, gt=0, lt=1)
    alphabet: str = "auto"  # alignments: protein | rna | dna | auto | explicit letters
    nonstandard: Literal["gap", "drop"] = "gap"
    reweight_identity: float | None = Field(None, gt=0, le=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_seed: int = Field(0, ge=0, le=SEED_MAX)
    max_samples: int | None = Field(None, gt=0)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class ModelConfig(_Section):
    n_hidden: int = Field(200, gt=0, le=1_000_000)
    labels: bool = True  # use a label unit when the data has labels
    weight_std: float = Field(0.01, ge=0)


class _AlgorithmOptions(_Section):
    """Options every algorithm has (the RBM sampler's precision and the centred gradient)."""

    name: str  # each algorithm narrows it to its own name (the union's tag)
    k: int = Field(10, gt=0)
    n_walkers: int | None = Field(None, gt=0)  # persistent walkers (default: batch size)
    precision: Literal["fp32", "bf16"] = "fp32"
    centered: bool = True
    hidden_offset_momentum: float = Field(0.01, gt=0, le=1)


class KStepConfig(_AlgorithmOptions):
    """F&F out-of-equilibrium k-step training."""

    name: Literal["kstep"] = "kstep"
    classification: bool = True  # also apply the label-sampling (classification) update


class PCDConfig(_AlgorithmOptions):
    name: Literal["pcd"] = "pcd"


class CDConfig(_AlgorithmOptions):
    name: Literal["cd"] = "cd"


class JarzynskiConfig(_AlgorithmOptions):
    name: Literal["jarzynski"] = "jarzynski"
    ess_threshold: float = Field(0.5, gt=0, le=1)  # resample when ESS / n is below
    resampling: Literal["systematic", "multinomial"] = "systematic"


# ``algorithm:`` is one of these, chosen by ``name`` (a pydantic discriminated union): a key
# of another algorithm is refused instead of silently ignored.
ALGORITHM_CONFIGS: dict[str, type[_AlgorithmOptions]] = {
    c.model_fields["name"].default: c
    for c in (KStepConfig, PCDConfig, CDConfig, JarzynskiConfig)
}
ALGORITHM_NAMES = tuple(ALGORITHM_CONFIGS)
AlgorithmConfig = Annotated[
    KStepConfig | PCDConfig | CDConfig | JarzynskiConfig, Field(discriminator="name")]


def _algorithm_section(raw: Any) -> Any:
    """The raw ``algorithm:`` mapping ready for the union: ``name`` defaults to ``kstep``, and a
    key of another algorithm is dropped when it holds that algorithm's default (configs
    written before the union recorded every algorithm's keys) or refused when it does not."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    name = raw.setdefault("name", "kstep")
    own = ALGORITHM_CONFIGS.get(name) if isinstance(name, str) else None
    if own is None:
        return raw  # the union reports the bad name
    for key in [k for k in raw if k not in own.model_fields]:
        owners = [n for n, c in ALGORITHM_CONFIGS.items() if key in c.model_fields]
        if not owners:
            continue  # an unknown key: reported as such
        if raw[key] == ALGORITHM_CONFIGS[owners[0]].model_fields[key].default:
            del raw[key]
            continue
        raise InputError("", f"algorithm.{key}",
                         f"applies to algorithm.name {' or '.join(owners)} only, not {name}")
    return raw


class OptimizerConfig(_Section):
    name: Literal["sgd", "adam"] = "sgd"
    # Upper bounds far above any working value: a step of 1e39 overflows float32 in the
    # optimizer itself (a traceback, not a divergence).
    lr: float = Field(0.01, gt=0, le=1e4)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=1e4)


class TrainConfig(_Section):
    n_updates: int = Field(3000, gt=0)
    batch_size: int = Field(100, gt=0)
    seed: int = Field(0, ge=0, le=SEED_MAX)  # generators derive streams from it in int64
    log_every: int = Field(50, gt=0)
    checkpoint_every: int = Field(1000, gt=0)
    eval_t: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [1, 10, 100, 1000])
    eval_samples: int = Field(1000, ge=2)  # the generation scores compare >= 2 samples
    eval_k_long: int = Field(1000, gt=0)  # label-sampling steps for the "many steps" accuracy
    ais_betas: int = Field(0, ge=0)  # >= 2: AIS log Z (this many temperatures), large models
    ais_chains: int = Field(200, gt=0)
    threads: int | None = Field(None, gt=0)  # torch intra-op threads (None: torch's default)
    progress: bool = True

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
    workers: int = Field(0, ge=0)  # 0: in-process, no Ray; N: N Ray Train workers (shards)
    use_gpu: bool = False
    max_failures: int = Field(2, ge=0)  # worker-group restarts from the last checkpoint
    keep_checkpoints: int = Field(2, ge=1)  # Ray keeps this many under <run>/ray


class Config(_Section):
    @pydantic.model_validator(mode="before")
    @classmethod
    def _algorithm(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "algorithm" in raw:
            raw = {**raw, "algorithm": _algorithm_section(raw["algorithm"])}
        return raw

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=KStepConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

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
        return Config.model_validate(raw)
    except InputError as err:  # raised by a section hook, without the source
        raise InputError(source, err.field, err.message) from None
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = list(first["loc"])
        if loc[:1] == ["algorithm"] and len(loc) > 1 and loc[1] in ALGORITHM_CONFIGS:
            del loc[1]  # the union's tag: the key is algorithm.<field>
        key = ".".join(str(p) for p in loc) or "<root>"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        elif first["type"] == "union_tag_invalid":
            key = "algorithm.name"
            msg = f"Input should be one of {', '.join(ALGORITHM_NAMES)}"
        return _raise(InputError(source, key, msg))


def _raise(err: Exception):
    raise err


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file (``safe_load``); errors name the file."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise InputError(path, "", "config file not found") from None
    except IsADirectoryError:
        raise InputError(path, "", "is a directory, not a config file") from None
    except OSError as err:
        raise InputError(path, "", f"cannot read config: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise InputError(path, where, "not valid YAML") from None
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


def get_dotted(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def with_values(config: Config, values: dict[str, Any], source: str = "--set") -> Config:
    """A copy of ``config`` with dotted ``values`` set, validated (errors name ``source``)."""
    raw = config.model_dump()
    for key, value in values.items():
        set_dotted(raw, key, value, source)
    return parse_config(raw, source)


def resolve_paths(config: Config, base: str | Path | None = None) -> Config:
    """``config`` with every file path made absolute against ``base`` (the working directory).

    Resolved on the driver, before anything else runs: Ray workers and Tune trials run in
    other working directories (and on other nodes), where a relative path means something
    else or nothing. The run's ``config.yaml`` records the resolved paths.
    """
    base = Path.cwd() if base is None else Path(base)
    values: dict[str, Any] = {}
    for key in PATH_KEYS:
        value = get_dotted(config, key)
        if value is not None:
            values[key] = str((base / Path(value).expanduser()).resolve())
    from raybm.tracking import resolve_uri

    values["tracking.uri"] = resolve_uri(config.tracking.uri, base)
    a = config.algorithm
    if a.n_walkers is None and a.name in PERSISTENT_ALGORITHMS:
        # Recorded explicitly: a later change of train.batch_size must not seem to resize the
        # population that the checkpoints hold.
        values["algorithm.n_walkers"] = config.train.batch_size
    return with_values(config, values, "<resolved>")


PERSISTENT_ALGORITHMS = ("pcd", "jarzynski")

# Keys a continued run applies from its next update (``--resume --set``, and the values a
# PBT exploit mutates): everything that acts through the config while training. Any other
# key describes how the run was built (model, data, seed, population) and cannot change.
RESUMABLE_KEYS = frozenset({
    "data.path", "data.labels_path", "data.panel_path",  # moved data (same contents)
    "algorithm.k", "algorithm.precision", "algorithm.classification",
    "algorithm.ess_threshold", "algorithm.resampling", "algorithm.hidden_offset_momentum",
    "optimizer.lr", "optimizer.momentum", "optimizer.weight_decay",
    "train.n_updates", "train.batch_size", "train.log_every", "train.checkpoint_every",
    "train.eval_t", "train.eval_samples", "train.eval_k_long", "train.ais_betas",
    "train.ais_chains", "train.threads", "train.progress",
    "distributed.workers", "distributed.use_gpu", "distributed.max_failures",
    "distributed.keep_checkpoints",
})


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = old.flat(), new.flat()
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_resumable(old: Config, new: Config, source: str = "--set") -> None:
    """Refuse a continued run's change that training could not apply (one line, the key)."""
    for key in changed_keys(old, new):
        if key not in RESUMABLE_KEYS:
            raise InputError(source, key, f"cannot change when resuming (the run was built "
                                          f"with {get_dotted(old, key)!r})")

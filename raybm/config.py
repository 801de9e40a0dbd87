"""Run configuration: YAML validated by pydantic, every key documented in docs/config.md.

A config has sections ``data / model / algorithm / optimizer / train / tracking /
distributed``; an unknown key or a wrong type is an :class:`InputError` naming the key, e.g.
``cfg.yaml: algorithm.k: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from raybm.errors import InputError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    path: str | None = None  # None: scikit-learn's digits (the embedded default)
    format: Literal["auto", "idx", "hapt", "fasta", "csv", "matrix", "digits"] = "auto"
    labels_path: str | None = None
    panel_path: str | None = None
    label: str | None = None  # hapt: panel column (super_pop | pop); csv: label column
    threshold: float = Field(0.5, gt=0, lt=1)
    alphabet: str = "auto"  # alignments: protein | rna | dna | auto | explicit letters
    nonstandard: Literal["gap", "drop"] = "gap"
    reweight_identity: float | None = Field(None, gt=0, le=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    split_seed: int = 0
    max_samples: int | None = Field(None, gt=0)


class ModelConfig(_Section):
    n_hidden: int = Field(200, gt=0)
    labels: bool = True  # use a label unit when the data has labels
    weight_std: float = Field(0.01, ge=0)


class AlgorithmConfig(_Section):
    name: Literal["kstep", "pcd", "cd", "jarzynski"] = "kstep"
    k: int = Field(10, gt=0)
    n_walkers: int | None = Field(None, gt=0)  # PCD: persistent walkers (default: batch size)
    precision: Literal["fp32", "bf16"] = "fp32"
    classification: bool = True  # F&F: also apply the label-sampling (classification) update
    centered: bool = True
    ess_threshold: float = Field(0.5, gt=0, le=1)  # jarzynski: resample when ESS / n is below
    resampling: Literal["systematic", "multinomial"] = "systematic"
    hidden_offset_momentum: float = Field(0.01, gt=0, le=1)


class OptimizerConfig(_Section):
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)


class TrainConfig(_Section):
    n_updates: int = Field(3000, gt=0)
    batch_size: int = Field(100, gt=0)
    seed: int = 0
    log_every: int = Field(50, gt=0)
    checkpoint_every: int = Field(1000, gt=0)
    eval_t: list[int] = Field(default_factory=lambda: [1, 10, 100, 1000])
    eval_samples: int = Field(1000, gt=0)
    eval_k_long: int = Field(1000, gt=0)  # label-sampling steps for the "many steps" accuracy
    ais_betas: int = Field(0, ge=0)  # > 0: AIS log Z (this many temperatures) for large models
    ais_chains: int = Field(200, gt=0)
    threads: int | None = Field(None, gt=0)  # torch intra-op threads (None: torch's default)
    progress: bool = True


class TrackingConfig(_Section):
    enabled: bool = True
    uri: str | None = None  # default: absolute sqlite:///<cwd>/mlflow.db; MLFLOW_TRACKING_URI wins
    experiment: str = "raybm"
    run_name: str | None = None


class DistributedConfig(_Section):
    workers: int = Field(0, ge=0)  # 0: in-process, no Ray; N: N Ray Train workers (shards)
    use_gpu: bool = False
    max_failures: int = Field(2, ge=0)  # worker-group restarts from the last checkpoint
    keep_checkpoints: int = Field(2, ge=1)  # Ray keeps this many under <run>/ray


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    def flat(self) -> dict[str, Any]:
        """``{"algorithm.k": 10, ...}``: the params MLflow records."""
        out: dict[str, Any] = {}
        for section, values in self.model_dump().items():
            for key, value in values.items():
                out[f"{section}.{key}"] = value
        return out


def parse_config(raw: dict[str, Any] | None, source: str = "<config>") -> Config:
    """Validate a raw mapping; errors name ``source`` and the dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(source, "", "a config must be a mapping of sections")
    try:
        return Config.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "<root>"
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        return _raise(InputError(source, key, msg))


def _raise(err: Exception):
    raise err


def load_config(path: str | Path | None, overrides: list[str] = (),
                use_default: bool = False) -> Config:
    """Read a YAML file (``safe_load``), apply ``--set key=value`` overrides, validate.

    With no file, the schema defaults apply, or, with ``use_default``, the embedded main job
    (``raybm/configs/ff10_digits.yaml``: F&F-10 with labels on digits), which ``raybm train``
    uses when given no config.
    """
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is None and use_default:
        path = DEFAULT_CONFIG
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise InputError(path, "", "config file not found") from None
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
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError("--set", item, "expected key=value, e.g. algorithm.k=10")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError("--set", key, f"{part} is not a section")
        node[parts[-1]] = parsed
    try:
        return parse_config(raw, source if not overrides or path else "--set")
    except InputError as err:
        # A bad value given with --set is named as such, not as the file it overrode.
        keys = {item.partition("=")[0] for item in overrides}
        if err.field in keys and err.where != "--set":
            raise InputError("--set", err.field, err.message) from None
        raise


DEFAULT_CONFIG = Path(__file__).parent / "configs" / "ff10_digits.yaml"


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(), sort_keys=False)

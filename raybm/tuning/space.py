"""Search-space files: a YAML description of a sweep, validated before Ray starts.

A space file holds a base config (inline, or a path relative to the space file), the searched
keys with their domains, the metric, the search algorithm, the scheduler and the resources of
a trial; every key is documented in docs/tune.md. Nothing in it is evaluated as code: domains
are one-key mappings named like Ray Tune's constructors (``{loguniform: [1e-4, 1e-1]}``), and
every value a domain can produce is checked against the config schema before any trial runs.
A bad file is one line naming the file and the key (:class:`~raybm.errors.InputError`).
"""

from __future__ import annotations

import math
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from raybm.config import (ALGORITHM_CONFIGS, PATH_KEYS, Config, config_from, is_mutable,
                          get_dotted, non_finite_message, read_config_file, with_values)
from raybm.errors import InputError

DOMAINS = ("loguniform", "uniform", "quniform", "randint", "lograndint", "choice",
           "grid_search")


@dataclass(frozen=True)
class Domain:
    """One searched key's domain: ``kind`` is a Tune constructor's name, ``args`` its
    arguments as written (bounds, or the list of values)."""

    kind: str
    args: tuple[Any, ...]

    def extremes(self) -> list[Any]:
        """The values to check against the config: every listed value, or both bounds (for
        ``randint`` / ``lograndint`` the upper bound is exclusive, as in Tune)."""
        if self.kind in ("choice", "grid_search"):
            return list(self.args)
        lo, hi = self.args[0], self.args[1]
        if self.kind in ("randint", "lograndint"):
            return [lo, hi - 1]
        if self.kind == "quniform":
            q = self.args[2]
            return [math.ceil(lo / q) * q, math.floor(hi / q) * q]
        return [lo, hi]

    def to_tune(self):
        from ray import tune

        if self.kind in ("choice", "grid_search"):
            return getattr(tune, self.kind)(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def is_numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool)
                   for v in self.extremes())


def parse_domain(value: Any, where: str, key: str) -> Domain | Any:
    """A domain from its YAML form, or ``value`` itself when it is a constant."""
    if not isinstance(value, dict):
        return value  # a constant passes through (config values are scalars or lists)
    if len(value) != 1:
        raise InputError(where, key, f"a domain is one of {', '.join(DOMAINS)} with its "
                         f"arguments, e.g. {{loguniform: [0.001, 0.1]}}; got {value}")
    (kind, args), = value.items()
    if kind not in DOMAINS:
        raise InputError(where, key, f"unknown domain {kind!r} (one of {', '.join(DOMAINS)})")
    if kind in ("choice", "grid_search"):
        if not isinstance(args, list) or not args:
            raise InputError(where, key, f"{kind} takes a non-empty list of values")
        return Domain(kind, tuple(args))
    arity = 3 if kind == "quniform" else 2
    if (not isinstance(args, list) or len(args) != arity
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
        raise InputError(where, key, f"{kind} takes {shape} numbers, got {args!r}")
    for arg in args:  # .inf or .nan: Tune would draw infinities or NaN (or fail inside Ray)
        if not math.isfinite(arg):
            raise InputError(where, key, f"{kind}: {non_finite_message(arg)}")
    lo, hi = args[0], args[1]
    if kind in ("randint", "lograndint") and not all(isinstance(a, int) for a in args):
        raise InputError(where, key, f"{kind} takes integer bounds, got {args!r}")
    if not lo < hi:
        raise InputError(where, key, f"{kind}: low {lo} must be below high {hi}")
    if kind.startswith("log") and lo <= 0:
        raise InputError(where, key, f"{kind}: low must be > 0, got {lo}")
    if kind == "quniform" and not args[2] > 0:
        raise InputError(where, key, f"quniform: q must be > 0, got {args[2]}")
    return Domain(kind, tuple(args))


# ---------------------------------------------------------------------- the file's schema
class _Strict(BaseModel):
    # As the config's sections: no float of a space file (a reduction factor, a quantile,
    # perturbation factors, bounds, CPUs and GPUs) means anything when infinite or NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SearchAlg(_Strict):
    name: Literal["random", "optuna", "hyperopt"] = "random"
    seed: int | None = 0


class Fifo(_Strict):
    name: Literal["fifo"] = "fifo"


class Asha(_Strict):
    """Asynchronous successive halving; times are in updates (``train`` steps)."""

    name: Literal["asha"]
    max_t: int | None = Field(None, gt=0)  # default: train.n_updates
    grace_period: int = Field(1, gt=0)
    reduction_factor: float = Field(4, gt=1)
    brackets: int = Field(1, gt=0)


class CoupledMove(_Strict):
    """A PBT move of ``key`` by a factor drawn from ``factors``, with every key of ``moves``
    multiplied in the same step by the factor at the same position (halve k, lr x 0.5)."""

    key: str
    factors: list[float] = Field(min_length=1)
    moves: dict[str, list[float]] = Field(default_factory=dict)
    bounds: tuple[float, float] | None = None  # kept inside; ints stay ints


class Pbt(_Strict):
    name: Literal["pbt"]
    perturbation_interval: int = Field(gt=0)  # updates between exploit/explore decisions
    hyperparam_mutations: dict[str, Any] = Field(default_factory=dict)
    quantile_fraction: float = Field(0.25, ge=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    perturbation_factors: tuple[float, float] = (1.2, 0.8)
    coupled: list[CoupledMove] = Field(default_factory=list)
    burn_in_period: int = Field(0, ge=0)
    synch: bool = False  # wait for every trial at each perturbation step (Tune's synch mode)
    seed: int = 0


Scheduler = Annotated[Union[Fifo, Asha, Pbt], Field(discriminator="name")]
SCHEDULERS = ("fifo", "asha", "pbt")  # the union's tags (pydantic puts them in an error's loc)


class Resources(_Strict):
    """Per trial: ``workers`` Ray Train workers (0: the trial process trains), each with these
    CPUs and GPUs."""

    workers: int | None = Field(None, ge=0)  # default: the base config's distributed.workers
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    driver_cpus: float = Field(0.01, gt=0)  # a distributed trial's own process: it only waits


class SpaceFile(_Strict):
    name: str | None = None
    base: str | dict[str, Any] | None = None
    param_space: dict[str, Any] = Field(default_factory=dict)
    metric: str
    mode: Literal["min", "max"]
    num_samples: int = Field(1, gt=0)
    search_alg: SearchAlg = Field(default_factory=SearchAlg)
    scheduler: Scheduler = Field(default_factory=Fifo)
    max_concurrent_trials: int | None = Field(None, gt=0)
    resources: Resources = Field(default_factory=Resources)


@dataclass
class Sweep:
    """A validated space file: what ``raybm tune`` runs."""

    path: Path  # the space file (absolute)
    name: str
    base: Config  # paths resolved, overrides applied
    params: dict[str, Domain | Any]  # dotted key -> domain or constant
    spec: SpaceFile
    reported: dict[str, str]  # metric -> "live" | "final", for every trial

    @property
    def searched(self) -> list[str]:
        return [k for k, v in self.params.items() if isinstance(v, Domain)]

    @property
    def n_trials(self) -> int:
        """How many trials the sweep runs: each sample of the space, once per grid point."""
        n = self.spec.num_samples
        for value in self.params.values():
            if isinstance(value, Domain) and value.kind == "grid_search":
                n *= len(value.args)
        return n

    def trial_config(self, values: dict[str, Any]) -> Config:
        """The config of a trial: the base with the trial's values of the searched keys."""
        return with_values(self.base, values, str(self.path))


# ---------------------------------------------------------------------- loading
def load_sweep(path: str | Path, overrides: list[str] = (),
               machine: dict[str, float] | None = None, base: Config | None = None) -> Sweep:
    """Read and check a space file; ``overrides`` (``--set``) apply to its base config.

    ``machine`` is what the Ray cluster offers (``{"CPU": n, "GPU": m}``): resources a trial
    could never get are refused here, not after Ray hangs (None: not known yet, not checked).
    ``base`` replaces the file's base config (a resumed sweep's recorded one).
    """
    path = Path(path).resolve()
    where = str(path)
    raw = read_config_file(path, kind="space")
    try:
        spec = SpaceFile.model_validate(raw)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        loc = [str(p) for p in first["loc"] if not str(p).startswith("function-")]
        if loc[:1] == ["scheduler"] and len(loc) > 2 and loc[1] in SCHEDULERS:
            del loc[1]  # the union's tag: the key is scheduler.<field>, as the user wrote it
        key = ".".join(loc)
        msg = {"extra_forbidden": "unknown key",
               "finite_number": non_finite_message(first["input"])}.get(first["type"],
                                                                        first["msg"])
        raise InputError(where, key or "<root>", msg) from None
    if base is None:
        base = _base_config(spec, path, overrides)
    if spec.resources.workers is not None:
        base = with_values(base, {"distributed.workers": spec.resources.workers}, where)
    if spec.resources.gpus_per_worker > 0:
        base = with_values(base, {"distributed.use_gpu": True}, where)
    params = {}
    overridden = {item.partition("=")[0] for item in overrides}
    name = spec.param_space.get("algorithm.name")
    if isinstance(name, str) and "algorithm.name" not in overridden:
        # A fixed algorithm: its own keys are the ones the space may set.
        base = with_values(base, {"algorithm.name": name}, where)
    for key, value in spec.param_space.items():
        _check_key(base, key, where, f"param_space.{key}")
        params[key] = _resolved(key, parse_domain(value, where, f"param_space.{key}"), where)
        if key in overridden:
            if isinstance(params[key], Domain):
                raise InputError("--set", key, f"is searched in {path.name}; it cannot also be "
                                 "fixed")
            params[key] = get_dotted(base, key)  # the command line wins over a constant
        _check_values(base, key, params[key], where, f"param_space.{key}")
    # Constants hold for every trial: the base carries them, so that every check below (and
    # each trial) sees the values that really run.
    base = with_values(base, {k: v for k, v in params.items() if not isinstance(v, Domain)},
                       where)
    _check_searches(spec, params, where)
    _check_search_alg(spec, params, where)
    if isinstance(spec.scheduler, Pbt):
        params = _check_pbt(spec.scheduler, base, params, where)
    if isinstance(spec.scheduler, Asha):
        if spec.scheduler.max_t is None:
            spec.scheduler.max_t = base.train.n_updates
        if spec.scheduler.grace_period > spec.scheduler.max_t:
            raise InputError(where, "scheduler.grace_period", f"{spec.scheduler.grace_period} "
                             f"is beyond max_t ({spec.scheduler.max_t} updates)")
    reported = _reported(base, params)
    _check_metric(spec, reported, where)
    if machine is not None:
        check_resources(spec, base, machine, where)
    name = spec.name or path.stem
    return Sweep(path, name, base, params, spec, reported)


def _base_config(spec: SpaceFile, path: Path, overrides: list[str]) -> Config:
    """The base config, paths resolved (a base file's relative to the space file's folder;
    data paths inside it relative to the working directory, as for ``raybm train``)."""
    from raybm.run import resolve_paths

    if spec.base is None:
        raw, source = {}, str(path)
    elif isinstance(spec.base, str):
        base_path = (path.parent / spec.base).resolve()
        if not base_path.is_file():
            raise InputError(path, "base", f"{base_path} not found")
        raw, source = read_config_file(base_path), str(base_path)
    else:
        raw, source = spec.base, f"{path}: base"
    return resolve_paths(config_from(raw, source, overrides))


def _field(base: Config, key: str):
    """The pydantic field of a dotted config key (``data.synthetic.seed``) in ``base``, or None.

    Walks the config itself, not its class: ``algorithm`` is a union chosen by its name, and
    its keys are those of the base config's algorithm."""
    node, info = base, None
    for part in key.split("."):
        if isinstance(node, dict):  # a dict-valued section (optimizers.<module>)
            if part not in node:
                return None
            node = node[part]
            continue
        fields = type(node).model_fields if isinstance(node, BaseModel) else None
        if not fields or part not in fields:
            return None
        info = fields[part]
        node = getattr(node, part)
    return None if isinstance(node, (BaseModel, dict)) else info


def _is_int(info) -> bool:
    """An int (or int | None) field: a float domain would produce values it refuses."""
    kinds = typing.get_args(info.annotation) or (info.annotation,)
    return int in kinds and float not in kinds


def _resolved(key: str, value: Domain | Any, where: str) -> Domain | Any:
    """Data paths among the searched values, made absolute against the working directory as
    a config's are: trials run in their own directories."""
    if key not in PATH_KEYS:
        return value

    def absolute(v: Any) -> Any:
        return v if v is None else str((Path.cwd() / Path(str(v)).expanduser()).resolve())

    if not isinstance(value, Domain):
        return absolute(value)
    if value.kind not in ("choice", "grid_search"):
        raise InputError(where, f"param_space.{key}", f"a path is chosen from a list "
                         f"(choice or grid_search), not drawn from {value.kind}")
    return Domain(value.kind, tuple(absolute(v) for v in value.args))


def _check_key(base: Config, key: str, where: str, field: str) -> None:
    if "." not in key or _field(base, key) is None:
        section, _, option = key.partition(".")
        owners = [n for n, c in ALGORITHM_CONFIGS.items() if option in c.model_fields]
        if section == "algorithm" and owners:
            raise InputError(where, field, f"applies to algorithm.name {' or '.join(owners)} "
                             f"only; the trials run {base.algorithm.name}")
        raise InputError(where, field, f"{key!r} is not a config key (docs/config.md)")
    if key.startswith("tracking.") or key in ("distributed.workers", "distributed.use_gpu"):
        raise InputError(where, field, f"{key} is set by the sweep itself (resources, "
                         "--tracking-uri), not searched")


def _check_values(base: Config, key: str, value: Domain | Any, where: str, field: str) -> None:
    """Every value the domain can produce must be one the config accepts."""
    if (isinstance(value, Domain) and value.kind in ("uniform", "loguniform", "quniform")
            and _is_int(_field(base, key))):
        raise InputError(where, field, f"{key} takes integers: {value.kind} draws fractions "
                         "(use randint, lograndint or choice)")
    values = value.extremes() if isinstance(value, Domain) else [value]
    for v in values:
        try:
            with_values(base, {key: v}, where)
        except InputError as err:
            raise InputError(where, field, f"value {v!r} is refused by the config: "
                             f"{err.message}") from None


def _check_searches(spec: SpaceFile, params: dict[str, Any], where: str) -> None:
    """A sweep searches something: with no domain in ``param_space`` every trial would run
    the same config (with the same seed, the same result), a sweep in name only. PBT
    searches through its own mutations (checked with them)."""
    if isinstance(spec.scheduler, Pbt) or any(isinstance(v, Domain) for v in params.values()):
        return
    raise InputError(where, "param_space", "no hyperparameter to search: give at least one "
                     "key a domain, e.g. optimizer.lr: {loguniform: [0.001, 0.1]}")


def _check_search_alg(spec: SpaceFile, params: dict[str, Any], where: str) -> None:
    grids = [k for k, v in params.items() if isinstance(v, Domain) and v.kind == "grid_search"]
    if grids and spec.search_alg.name != "random":
        raise InputError(where, f"param_space.{grids[0]}", f"grid_search cannot be used with "
                         f"search_alg {spec.search_alg.name} (use choice, or search_alg random)")
    if spec.search_alg.name != "random" and not any(isinstance(v, Domain)
                                                    for v in params.values()):
        raise InputError(where, "search_alg.name", f"{spec.search_alg.name} needs at least "
                         "one searched key in param_space")


def _check_pbt(pbt: Pbt, base: Config, params: dict[str, Any], where: str) -> dict[str, Any]:
    """PBT may only change what a continued run applies; its mutations must be valid values.
    Mutated keys that ``param_space`` leaves out start from their mutation domain."""
    params = dict(params)
    if not pbt.hyperparam_mutations and not pbt.coupled:
        raise InputError(where, "scheduler.hyperparam_mutations", "PBT needs at least one "
                         "mutated key (or a coupled move)")
    for key, value in pbt.hyperparam_mutations.items():
        field = f"scheduler.hyperparam_mutations.{key}"
        _check_key(base, key, where, field)
        _check_mutable(key, where, field)
        if isinstance(value, list):  # Tune's shorthand: a list of values to choose from
            value = {"choice": value}
        domain = parse_domain(value, where, field)
        if not isinstance(domain, Domain) or domain.kind == "grid_search":
            raise InputError(where, field, "a mutation is a domain or a list of values")
        _check_values(base, key, domain, where, field)
        pbt.hyperparam_mutations[key] = domain
        params.setdefault(key, domain)
    for i, move in enumerate(pbt.coupled):
        field = f"scheduler.coupled.{i}"
        for key in [move.key, *move.moves]:
            _check_key(base, key, where, f"{field}.{key}")
            _check_mutable(key, where, f"{field}.{key}")
            if not isinstance(get_dotted(base, key), (int, float)):
                raise InputError(where, f"{field}.{key}", "a coupled move multiplies a number")
        for key, factors in move.moves.items():
            if len(factors) != len(move.factors):
                raise InputError(where, f"{field}.moves.{key}", f"needs one factor per factor "
                                 f"of {move.key} ({len(move.factors)})")
        if any(f <= 0 for f in move.factors + [f for fs in move.moves.values() for f in fs]):
            raise InputError(where, field, "factors must be > 0")
        for key in [move.key, *move.moves]:
            if key not in params:
                raise InputError(where, f"{field}.{key}", f"{key} needs a starting value in "
                                 "param_space (a coupled move changes a trial's own value)")
        if move.bounds is not None:
            _check_values(base, move.key, Domain("choice", tuple(move.bounds)), where,
                          f"{field}.bounds")
    every = base.train.checkpoint_every
    for name in ("perturbation_interval", "burn_in_period"):
        if getattr(pbt, name) % every:
            raise InputError(where, f"scheduler.{name}", f"must be a multiple of "
                             f"train.checkpoint_every ({every}): an exploit clones the donor's "
                             "checkpoint at the step it is judged")
    for key in ("train.checkpoint_every", "train.log_every"):
        if key in pbt.hyperparam_mutations or isinstance(params.get(key), Domain):
            raise InputError(where, f"scheduler.hyperparam_mutations.{key}"
                             if key in pbt.hyperparam_mutations else f"param_space.{key}",
                             "PBT needs the same report and checkpoint steps in every trial")
    return params


def _check_mutable(key: str, where: str, field: str) -> None:
    if not is_mutable(key):
        raise InputError(where, field, f"{key} cannot change while a trial trains, so PBT "
                         "cannot mutate it (search it in param_space instead)")


def _variants(base: Config, params: dict[str, Any]) -> list[Config]:
    """Configs covering what decides which metrics a trial reports: every listed value of the
    keys that change it, both bounds of the others."""
    variants = [base]
    for key in ("algorithm.name", "model.labels", "model.n_hidden", "train.ais_betas",
                "algorithm.classification", "train.eval_t"):
        value = params.get(key)
        options = value.extremes() if isinstance(value, Domain) else (
            [value] if key in params else [])
        if options:
            variants = [with_values(c, {key: v}) for c in variants for v in options]
    return variants


def _reported(base: Config, params: dict[str, Any]) -> dict[str, str]:
    """The metrics every trial reports: live only where every trial reports it live."""
    from raybm.evaluate import reported_metrics
    from raybm.data.load import load_data

    train, test = load_data(base)
    out: dict[str, str] | None = None
    for config in _variants(base, params):
        got = reported_metrics(config, train, test.n_samples > 0)
        if out is None:
            out = got
        else:
            out = {k: ("live" if v == "live" and got[k] == "live" else "final")
                   for k, v in out.items() if k in got}
    return out or {}


def _check_metric(spec: SpaceFile, reported: dict[str, str], where: str) -> None:
    if spec.metric not in reported:
        live = sorted(k for k, v in reported.items() if v == "live")
        raise InputError(where, "metric", f"{spec.metric!r} is never reported by these "
                         f"trials; live metrics: {', '.join(live)}")
    if not isinstance(spec.scheduler, Fifo) and reported[spec.metric] != "live":
        raise InputError(where, "metric", f"{spec.metric!r} is computed only when a trial "
                         f"ends; {spec.scheduler.name} compares trials while they run, so it "
                         "needs a live metric (docs/tune.md)")


def local_machine() -> dict[str, float]:
    """What a local Ray would offer: this machine's cores and GPUs."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch without CUDA support
        pass
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def trial_bundle(spec: SpaceFile, workers: int) -> dict[str, float]:
    """The resources a trial's own process reserves (the Train workers reserve theirs)."""
    r = spec.resources
    if workers == 0:
        bundle = {"CPU": r.cpus_per_worker}
        if r.gpus_per_worker:
            bundle["GPU"] = r.gpus_per_worker
        return bundle
    return {"CPU": r.driver_cpus}


def trial_need(spec: SpaceFile, workers: int) -> dict[str, float]:
    """All the resources one running trial holds (its process and its workers)."""
    r = spec.resources
    n = max(workers, 1)
    need = {"CPU": n * r.cpus_per_worker + (r.driver_cpus if workers else 0.0),
            "GPU": n * r.gpus_per_worker}
    return need


def check_resources(spec: SpaceFile, base: Config, machine: dict[str, float],
                    where: str) -> None:
    need = trial_need(spec, base.distributed.workers)
    if isinstance(spec.scheduler, Pbt) and base.distributed.workers:
        # PBT pauses and resumes trials to rank a population; trials that drive worker groups
        # reserve their workers outside Tune's accounting, so the population must all run at
        # once (raybm cannot let Tune swap them in and out).
        fits = concurrency(spec, base, machine)
        if spec.num_samples > fits:
            raise InputError(where, "num_samples", f"PBT with trials on Ray workers needs its "
                             f"whole population running at once: {spec.num_samples} trials, "
                             f"{fits} fit on this cluster")
    for kind in ("CPU", "GPU"):
        if need[kind] > machine.get(kind, 0.0) + 1e-9:
            raise InputError(where, _blamed(spec, base.distributed.workers, kind,
                                            machine.get(kind, 0.0)),
                             f"a trial needs {need[kind]:g} {kind}s "
                             f"({max(base.distributed.workers, 1)} worker(s)), the cluster has "
                             f"{machine.get(kind, 0.0):g}")


def _blamed(spec: SpaceFile, workers: int, kind: str, have: float) -> str:
    """The key to name when a trial needs more ``kind`` (CPU or GPU) than the cluster's
    ``have``: a size per worker (or of the trial's own process) that alone does not fit, else
    the number of workers, where it was written (``resources.workers``, or the base config's
    ``distributed.workers``)."""
    r = spec.resources
    if kind == "GPU":
        if r.gpus_per_worker > have + 1e-9:
            return "resources.gpus_per_worker"
    elif workers and r.driver_cpus > have + 1e-9:
        return "resources.driver_cpus"
    elif r.cpus_per_worker + (r.driver_cpus if workers else 0.0) > have + 1e-9:
        return "resources.cpus_per_worker"
    return "resources.workers" if r.workers is not None else "base.distributed.workers"


def concurrency(spec: SpaceFile, base: Config, machine: dict[str, float]) -> int:
    """How many trials fit at once: the file's ``max_concurrent_trials``, capped by what the
    cluster holds (Ray Train V2 reserves each trial's workers in a placement group of its own,
    so Tune cannot count them; raybm does)."""
    need = trial_need(spec, base.distributed.workers)
    fits = min(int((machine.get(k, 0.0) + 1e-9) // v) for k, v in need.items() if v > 0)
    fits = max(fits, 1)
    if spec.max_concurrent_trials is not None:
        return min(spec.max_concurrent_trials, fits)
    return fits

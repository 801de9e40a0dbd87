"""Search-space files: every shipped space validates; each bad file is one line naming the
file and the key, exit code 2, and nothing is created (no sweep directory, no MLflow store)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raybm.cli import main
from raybm.errors import InputError
from raybm.tuning.explore import CoupledExplore
from raybm.tuning.space import Domain, concurrency, load_sweep, parse_domain
from tests.conftest import shared_data_file

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "tune_spaces").glob("*.yaml"))
SMALL = {"base": {"model": {"n_hidden": 8}, "train": {"n_updates": 20}}}


# Spaces whose base config reads a real data set: (key, file of ../shared/data).
DATA = {"ff_vs_pcd_mnist.yaml": [("data.path", "mnist/t10k-images-idx3-ubyte.gz"),
                                 ("data.labels_path", "mnist/t10k-labels-idx1-ubyte.gz")]}


@pytest.mark.parametrize("path", SPACES, ids=[p.name for p in SPACES])
def test_every_shipped_space_file_validates(path):
    machine = {"CPU": 64.0, "GPU": 0.0}  # ff_vs_pcd_mnist is sized for a cluster
    data = [f"{key}={shared_data_file(file)}" for key, file in DATA.get(path.name, [])]
    sweep = load_sweep(path, data, machine=machine)
    assert sweep.searched, "a space file searches something"
    assert sweep.spec.metric in sweep.reported
    text = path.read_text()
    assert text.startswith("#") and "raybm tune" in text  # documented at its top


def test_there_are_the_four_spaces_the_docs_name():
    names = {p.name for p in SPACES}
    assert {"ff_digits_k_lr.yaml", "jarzynski_bimodal.yaml", "pbt_lr_k.yaml",
            "ff_vs_pcd_mnist.yaml"} <= names


def write(tmp: Path, body: dict, name: str = "space.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(body))
    return path


def space(**changes) -> dict:
    body = {**SMALL, "param_space": {"optimizer.lr": {"loguniform": [0.001, 0.1]}},
            "metric": "test_accuracy", "mode": "max"}
    body.update(changes)
    return body


BAD = {
    "unknown domain": (space(param_space={"optimizer.lr": {"lognormal": [0, 1]}}),
                       "param_space.optimizer.lr", "unknown domain 'lognormal'"),
    "not a config key": (space(param_space={"optimizer.learning_rate": {"choice": [0.1]}}),
                         "param_space.optimizer.learning_rate", "not a config key"),
    "value the config refuses": (space(param_space={"algorithm.k": {"randint": [0, 5]}}),
                                 "param_space.algorithm.k", "value 0 is refused"),
    "choice value refused": (space(param_space={"algorithm.name": {"choice": ["pcd", "gibbs"]}}),
                             "param_space.algorithm.name", "'gibbs' is refused"),
    "loguniform from zero": (space(param_space={"optimizer.lr": {"loguniform": [0, 0.1]}}),
                             "param_space.optimizer.lr", "low must be > 0"),
    "bounds reversed": (space(param_space={"optimizer.lr": {"uniform": [0.1, 0.01]}}),
                        "param_space.optimizer.lr", "must be below high"),
    "grid with optuna": (space(param_space={"algorithm.k": {"grid_search": [1, 2]}},
                               search_alg={"name": "optuna", "seed": 0}),
                         "param_space.algorithm.k", "grid_search cannot be used with search_alg"),
    "metric never reported": (space(metric="test_loglik_jarzynski"), "metric",
                              "never reported"),
    "final metric with ASHA": (space(metric="test_accuracy_long",
                                     scheduler={"name": "asha", "grace_period": 5}),
                               "metric", "needs a live metric"),
    "PBT mutates a fixed key": (space(scheduler={"name": "pbt", "perturbation_interval": 10,
                                                 "hyperparam_mutations": {
                                                     "model.n_hidden": [8, 16]}}),
                                "scheduler.hyperparam_mutations.model.n_hidden",
                                "PBT cannot mutate it"),
    "PBT off the checkpoints": (space(base={"train": {"checkpoint_every": 10}},
                                      scheduler={"name": "pbt", "perturbation_interval": 15,
                                                 "hyperparam_mutations": {
                                                     "optimizer.lr": [0.01, 0.1]}}),
                                "scheduler.perturbation_interval", "multiple of"),
    "coupled key without a start": (space(scheduler={
        "name": "pbt", "perturbation_interval": 1000,
        "coupled": [{"key": "algorithm.k", "factors": [0.5, 2],
                     "moves": {"optimizer.lr": [0.5, 2]}}]}),
        "scheduler.coupled.0.algorithm.k", "needs a starting value"),
    "resources never available": (space(resources={"workers": 2, "cpus_per_worker": 64}),
                                  "resources.cpus_per_worker", "the cluster has"),
    "GPUs on a CPU machine": (space(resources={"workers": 0, "gpus_per_worker": 1}),
                              "resources.gpus_per_worker", "the cluster has 0"),
    "unknown top-level key": (space(sampler="tpe"), "sampler", "unknown key"),
    "mode misspelt": (space(mode="maximise"), "mode", "'min' or 'max'"),
    "a tracking key searched": (space(param_space={"tracking.experiment": {"choice": ["a"]}}),
                                "param_space.tracking.experiment", "set by the sweep itself"),
    "missing base file": (space(base="nowhere.yaml"), "base", "not found"),
    "fractions for an integer key": (space(param_space={"algorithm.k": {"uniform": [1, 10]}}),
                                     "param_space.algorithm.k", "takes integers"),
    "grace period beyond max_t": (space(scheduler={"name": "asha", "grace_period": 50}),
                                  "scheduler.grace_period", "beyond max_t (20 updates)"),
    "PBT burn-in off the checkpoints": (space(
        base={"train": {"checkpoint_every": 10, "n_updates": 40}},
        scheduler={"name": "pbt", "perturbation_interval": 20, "burn_in_period": 15,
                   "hyperparam_mutations": {"optimizer.lr": [0.01, 0.1]}}),
        "scheduler.burn_in_period", "multiple of"),
    "another algorithm's option": (space(param_space={
        "algorithm.ess_threshold": {"uniform": [0.2, 0.9]}}),
        "param_space.algorithm.ess_threshold",
        "applies to algorithm.name jarzynski only; the trials run kstep"),
    "PBT population that cannot run at once": (space(
        num_samples=4, resources={"workers": 2, "cpus_per_worker": 0.49},
        scheduler={"name": "pbt", "perturbation_interval": 1000,
                   "hyperparam_mutations": {"optimizer.lr": [0.01, 0.1]}}),
        "num_samples", "whole population running at once: 4 trials, 2 fit"),
    # Too many workers (each of a size that fits): the key the user wrote, not cpus_per_worker.
    "too many workers": (space(resources={"workers": 1000}), "resources.workers",
                         "1000 worker(s)), the cluster has"),
    "too many workers in the base": (space(base={**SMALL["base"],
                                                 "distributed": {"workers": 1000}}),
                                     "base.distributed.workers", "the cluster has"),
    "a driver larger than the cluster": (space(resources={"workers": 1, "driver_cpus": 100}),
                                         "resources.driver_cpus", "the cluster has"),
    "empty param_space": (space(param_space={}), "param_space", "no hyperparameter to search"),
    "only constants in param_space": (space(param_space={"train.n_updates": 10}),
                                      "param_space", "no hyperparameter to search"),
    "infinite domain bound": (space(param_space={"optimizer.lr": {"uniform": [0.001,
                                                                             float("inf")]}}),
                              "param_space.optimizer.lr", "uniform: must be finite, got inf"),
    "NaN domain bound": (space(param_space={"optimizer.lr": {"loguniform": [float("nan"), 0.1]}}),
                         "param_space.optimizer.lr", "loguniform: not a number"),
    "infinite choice": (space(param_space={"optimizer.lr": {"choice": [0.1, float("-inf")]}}),
                        "param_space.optimizer.lr",
                        "value -inf is refused by the config: must be finite, got -inf"),
    "NaN constant": (space(param_space={"optimizer.lr": {"choice": [0.1, 0.2]},
                                        "optimizer.momentum": float("nan")}),
                     "param_space.optimizer.momentum", "refused by the config: not a number"),
    "NaN CPUs": (space(resources={"workers": 0, "cpus_per_worker": float("nan")}),
                 "resources.cpus_per_worker", "not a number"),
    "infinite reduction factor": (space(scheduler={"name": "asha",
                                                   "reduction_factor": float("inf")}),
                                  "scheduler.reduction_factor", "must be finite, got inf"),
    "NaN PBT factor": (space(scheduler={"name": "pbt", "perturbation_interval": 10,
                                        "perturbation_factors": [1.2, float("nan")],
                                        "hyperparam_mutations": {"optimizer.lr": [0.01, 0.1]}}),
                       "scheduler.perturbation_factors.1", "not a number"),
    "PBT without its interval": (space(scheduler={"name": "pbt"}),
                                 "scheduler.perturbation_interval", "Field required"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_space_file_is_one_line_naming_file_and_key(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body, key, words = BAD[name]
    path = write(tmp_path, body)
    with pytest.raises(InputError) as err:
        load_sweep(path, machine={"CPU": 2.0, "GPU": 0.0})
    assert err.value.where == str(path) and err.value.field == key, str(err.value)
    assert words in err.value.message, str(err.value)
    # Through the CLI: exit 2, one line, nothing created (Ray is never started either).
    code = main(["tune", str(path), "--out", str(tmp_path / "sweep")])
    out, errout = capsys.readouterr()
    assert code == 2
    lines = errout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"raybm: error: {path}: {key}: "), errout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_a_fixed_algorithm_in_the_space_brings_its_own_options(tmp_path):
    path = write(tmp_path, space(param_space={
        "algorithm.name": "jarzynski", "model.labels": False,
        "algorithm.ess_threshold": {"uniform": [0.2, 0.9]}}, metric="test_loglik_jarzynski"))
    sweep = load_sweep(path)
    assert sweep.base.algorithm.name == "jarzynski"
    assert "algorithm.ess_threshold" in sweep.searched


def test_not_yaml_and_not_a_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("param_space: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_sweep(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="a config must be a mapping"):
        load_sweep(tmp_path / "b.yaml")


def test_set_replaces_a_constant_but_not_a_searched_key(tmp_path):
    path = write(tmp_path, space(param_space={"optimizer.lr": {"loguniform": [0.001, 0.1]},
                                              "train.n_updates": 40}))
    sweep = load_sweep(path, ["train.n_updates=12"], machine={"CPU": 2.0})
    assert sweep.base.train.n_updates == 12 and sweep.params["train.n_updates"] == 12
    with pytest.raises(InputError) as err:
        load_sweep(path, ["optimizer.lr=0.1"], machine={"CPU": 2.0})
    assert (err.value.where, err.value.field) == ("--set", "optimizer.lr")


def test_domains_convert_to_tune_and_report_their_extremes():
    d = parse_domain({"randint": [1, 5]}, "f", "k")
    assert isinstance(d, Domain) and d.extremes() == [1, 4]
    assert parse_domain({"quniform": [0.1, 1.0, 0.25]}, "f", "k").extremes() == [0.25, 1.0]
    assert parse_domain([1, 10], "f", "k") == [1, 10]  # a list is a constant (train.eval_t)
    from ray.tune.search.sample import Categorical, Float, Integer

    assert isinstance(parse_domain({"lograndint": [1, 64]}, "f", "k").to_tune(), Integer)
    assert isinstance(parse_domain({"loguniform": [1e-3, 1]}, "f", "k").to_tune(), Float)
    assert isinstance(parse_domain({"choice": ["a", "b"]}, "f", "k").to_tune(), Categorical)


def test_concurrency_counts_the_workers_of_each_trial(tmp_path):
    path = write(tmp_path, space(resources={"workers": 2, "cpus_per_worker": 0.49},
                                 max_concurrent_trials=8))
    sweep = load_sweep(path, machine={"CPU": 2.0})
    assert concurrency(sweep.spec, sweep.base, {"CPU": 2.0}) == 2
    path = write(tmp_path, space(resources={"workers": 2, "cpus_per_worker": 1}))
    sweep = load_sweep(path, machine={"CPU": 4.0})
    assert concurrency(sweep.spec, sweep.base, {"CPU": 4.0}) == 1  # 2 x 1 + the driver


def test_coupled_move_halves_k_and_lr_together_and_respects_the_config():
    from raybm.config import Config

    explore = CoupledExplore([{"key": "algorithm.k", "factors": [0.5],
                               "moves": {"optimizer.lr": [0.25]}, "bounds": None}],
                             Config().model_dump(), seed=0)
    assert explore({"algorithm.k": 10, "optimizer.lr": 0.08}) == {"algorithm.k": 5,
                                                                 "optimizer.lr": 0.02}
    # k = 1 halved would be 0 (refused by the config: k > 0), rounded up to 1: no move at all.
    assert explore({"algorithm.k": 1, "optimizer.lr": 0.08}) == {"algorithm.k": 1,
                                                                "optimizer.lr": 0.08}
    kept = CoupledExplore([{"key": "algorithm.k", "factors": [2.0],
                            "moves": {"optimizer.lr": [2.0]}, "bounds": None}],
                          Config().model_dump(), limits={"optimizer.lr": (0.001, 0.3)})
    # k doubles; lr would reach 0.4 but stays inside its mutation domain.
    assert kept({"algorithm.k": 8, "optimizer.lr": 0.2}) == {"algorithm.k": 16,
                                                            "optimizer.lr": 0.3}
    up = CoupledExplore([{"key": "algorithm.ess_threshold", "factors": [2.0],
                          "moves": {"optimizer.lr": [2.0]}, "bounds": None}],
                        Config().model_dump())
    # An ESS threshold of 1.2 is refused by the config: neither key moves.
    assert up({"algorithm.ess_threshold": 0.6, "optimizer.lr": 0.1}) == {
        "algorithm.ess_threshold": 0.6, "optimizer.lr": 0.1}


@pytest.mark.parametrize("name", ["random", "optuna", "hyperopt"])
def test_each_search_algorithm_draws_configs_inside_the_domains(name, tmp_path):
    """The search algorithm a space names is built and suggests valid, seeded configs."""
    from raybm.tuning.sweep import _param_space, _search_alg

    path = write(tmp_path, space(param_space={
        "optimizer.lr": {"loguniform": [0.001, 0.1]}, "algorithm.k": {"randint": [1, 5]},
        "algorithm.name": {"choice": ["pcd", "kstep"]}}, search_alg={"name": name, "seed": 3}))
    sweep = load_sweep(path, machine={"CPU": 2.0})
    draws = []
    for _ in range(2):
        alg = _search_alg(sweep, 2)
        if name == "random":
            from ray.tune.experiment import Experiment

            assert alg.max_concurrent == 2  # Tune would ignore max_concurrent_trials here
            alg.add_configurations([Experiment(name="x", run=lambda c: None,
                                               config=_param_space(sweep), num_samples=1)])
            draws.append(dict(alg.next_trial().config))
            continue
        assert alg.set_search_properties("test_accuracy", "max", _param_space(sweep))
        draws.append(alg.suggest("t1"))
    for config in draws:
        assert 0.001 <= config["optimizer.lr"] <= 0.1 and 1 <= config["algorithm.k"] <= 4
        assert config["algorithm.name"] in ("pcd", "kstep")
        sweep.trial_config(config)  # a config the trial accepts
    assert draws[0] == draws[1]  # seeded


def test_nested_keys_and_relative_data_paths_in_the_space(tmp_path, monkeypatch):
    """``data.synthetic.seed`` is a config key like any other; data paths among the searched
    values are resolved against the working directory, as a config's are (trials run in
    their own directories)."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    for name in ("a.npz", "b.npz"):
        np.savez(tmp_path / name, x=np.eye(8, dtype=np.uint8).repeat(30, 0))
    path = write(tmp_path, space(metric="loss_generation", mode="min", param_space={
        "data.path": {"choice": ["a.npz", "b.npz"]}, "model.labels": False}))
    sweep = load_sweep(path, machine={"CPU": 2.0})
    assert sweep.params["data.path"].args == (str(tmp_path / "a.npz"), str(tmp_path / "b.npz"))
    path = write(tmp_path, space(base={"data": {"format": "bimodal"}, "model": {"n_hidden": 4}},
                                 metric="loss_generation", mode="min",
                                 param_space={"data.synthetic.seed": {"randint": [0, 3]}}))
    assert load_sweep(path, machine={"CPU": 2.0}).searched == ["data.synthetic.seed"]


@pytest.mark.parametrize("text", ["", "\n", "# a sweep, some day\n"],
                         ids=["no bytes", "a blank line", "comments"])
def test_an_empty_space_file_is_one_line_naming_it(text, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value) == f"{path}: the space file is empty"  # not "metric: Field required"
    code = main(["tune", str(path), "--out", str(tmp_path / "sweep")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"raybm: error: {path}: the space file is empty"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def test_an_empty_base_file_is_named_as_the_config_file(tmp_path):
    (tmp_path / "base.yaml").write_text("")
    path = write(tmp_path, space(base="base.yaml"))
    with pytest.raises(InputError) as err:
        load_sweep(path)
    assert str(err.value) == f"{tmp_path / 'base.yaml'}: the config file is empty"


def test_pbt_searches_with_its_mutations_alone(tmp_path):
    """An empty param_space is no search, except under PBT: the mutated keys start from their
    mutation domains."""
    path = write(tmp_path, space(param_space={}, scheduler={
        "name": "pbt", "perturbation_interval": 1000,
        "hyperparam_mutations": {"optimizer.lr": {"loguniform": [0.01, 0.1]}}}))
    assert load_sweep(path, machine={"CPU": 2.0}).searched == ["optimizer.lr"]

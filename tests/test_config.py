"""Configs: validation errors name the key; every example in configs/ is valid and runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raybm.config import (ALGORITHM_CONFIGS, ALGORITHM_NAMES, DEFAULT_CONFIG, Config,
                          config_from, load_config, parse_config, with_values)
from raybm.errors import InputError
from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SHARED = SHARED_DATA


def test_packaged_default_is_the_digits_example():
    assert DEFAULT_CONFIG.read_text() == (ROOT / "configs" / "ff10_digits.yaml").read_text()
    c = load_config(None, use_default=True)
    assert (c.algorithm.name, c.algorithm.k, c.model.labels, c.data.path) == ("kstep", 10, True, None)


def test_schema_defaults_follow_the_issue():
    c = Config()
    assert c.optimizer.name == "sgd" and c.optimizer.lr == 0.01
    assert c.algorithm.centered is None  # auto: the centred gradient on RBMs


@pytest.mark.parametrize("raw, key", [
    ({"model": {"n_hiden": 3}}, "model.n_hiden"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"algorithm": {"name": "magic"}}, "algorithm.name"),
    ({"train": {"eval_t": "ten"}}, "train.eval_t"),
    ({"colour": 1}, "colour"),
])
def test_errors_name_the_key(raw, key):
    with pytest.raises(InputError) as err:
        parse_config(raw, "cfg.yaml")
    assert str(err.value).startswith(f"cfg.yaml: {key}: ")


def test_set_overrides_parse_yaml_values():
    c = load_config(None, ["train.eval_t=[1, 2]", "sampler.precision=bf16", "data.path=x.npz"])
    assert c.train.eval_t == [1, 2] and c.sampler.precision == "bf16" and c.data.path == "x.npz"
    with pytest.raises(InputError, match="key=value"):
        load_config(None, ["algorithm.k"])


def test_flat_params_cover_every_key():
    flat = Config().flat()
    assert flat["algorithm.k"] == 10 and "distributed.workers" in flat


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_is_valid(path):
    load_config(path)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_config_runs_on_the_shared_data(path, tmp_path):
    """Three updates of each example on the real data (paths re-rooted at ../shared/data)."""
    from raybm.run import train_run

    c = load_config(path)
    overrides = ["train.n_updates=3", "train.progress=false", "tracking.enabled=false"]
    for key in ("path", "labels_path", "panel_path"):
        value = getattr(c.data, key)
        if value:
            relative = Path(value)
            # Examples name either data/... (the user's copy) or ../shared/data/... (beside the repo).
            real = (SHARED / relative.relative_to("data") if relative.parts[0] == "data"
                    else (ROOT / relative).resolve())
            if not real.is_file():
                pytest.skip(f"shared data file not found: {real} (the data sets live beside the repo)")
            overrides.append(f"data.{key}={real}")
    run = train_run(load_config(path, overrides), out=tmp_path / "run", evaluate_at_end=False)
    assert (run.run_dir / "checkpoints" / "latest").is_file()


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "config.md").read_text()
    continuous = {"model": {"kind": "gaussian_mixture"}, "algorithm": {"centered": False}}
    keys: set[str] = set()
    for name in ALGORITHM_NAMES:
        raw = {"algorithm": {"name": name}}
        if ALGORITHM_CONFIGS[name].continuous_only:
            raw |= {"model": continuous["model"], "sampler": {"name": "ula"}}
        keys |= set(parse_config(raw).flat())
    for sampler in ("ula", "mala", "short_run", "flowmc"):
        keys |= set(parse_config({**continuous, "sampler": {"name": sampler}}).flat())
    missing = sorted(key for key in keys if f"`{key}`" not in doc)
    assert not missing, f"undocumented config keys: {missing}"


def test_algorithm_options_belong_to_their_algorithm():
    """``algorithm:`` is chosen by its name: another algorithm's key is refused with its
    owner named, not silently ignored; a config written before (every algorithm's keys, at
    their defaults) still loads, and records only its own keys."""
    with pytest.raises(InputError) as err:
        parse_config({"algorithm": {"name": "pcd", "ess_threshold": 0.3}}, "cfg.yaml")
    assert str(err.value) == ("cfg.yaml: algorithm.ess_threshold: applies to algorithm.name "
                              "jarzynski only, not pcd")
    with pytest.raises(InputError) as err:
        config_from({"algorithm": {"name": "jarzynski"}}, "cfg.yaml",
                    ["algorithm.classification=false"])
    assert str(err.value).startswith("--set: algorithm.classification: applies to "
                                     "algorithm.name kstep only")
    legacy = {"name": "pcd", "k": 5, "n_walkers": None, "precision": "fp32",
              "classification": True, "centered": True, "ess_threshold": 0.5,
              "resampling": "systematic", "hidden_offset_momentum": 0.01}
    config = parse_config({"algorithm": legacy}, "old-run/config.yaml")
    assert config.algorithm.name == "pcd" and config.algorithm.k == 5
    assert set(config.model_dump()["algorithm"]) == {
        "name", "k", "n_walkers", "centered", "hidden_offset_momentum", "walker_init",
        "energy_penalty", "data_noise", "walkers_per_update", "reinit_fraction"}
    assert parse_config({"algorithm": {"k": 3}}).algorithm.name == "kstep"  # the default
    switched = with_values(parse_config({}), {"algorithm.name": "jarzynski"})
    assert switched.algorithm.ess_threshold == 0.5


def test_bad_override_is_named_as_set_not_as_the_file_it_overrode():
    with pytest.raises(InputError, match=r"^--set: distributed.workers: "):
        load_config(None, ["distributed.workers=-1"], use_default=True)


def test_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    from raybm.run import resolve_paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = resolve_paths(load_config(None, ["data.path=d/x.npz", "data.labels_path=../l.idx",
                                           "algorithm.name=pcd", "train.batch_size=64"]))
    assert cfg.data.path == str(tmp_path / "d" / "x.npz")
    assert cfg.data.labels_path == str(tmp_path.parent / "l.idx")
    assert cfg.tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cfg.algorithm.n_walkers == 64  # recorded: a later batch size does not resize it
    rel = resolve_paths(load_config(None, ["tracking.uri=sqlite:///sub/m.db"]))
    assert rel.tracking.uri == f"sqlite:///{tmp_path / 'sub' / 'm.db'}"
    assert resolve_paths(rel) == rel  # resolving twice changes nothing


@pytest.mark.parametrize("uri", ["foo", "sqlite://rel.db", "file:///tmp/mlruns", "/abs/db"])
def test_a_uri_mlflow_cannot_track_to_is_refused(uri):
    from raybm.run import resolve_paths

    with pytest.raises(InputError, match="tracking.uri"):
        resolve_paths(load_config(None, [f"tracking.uri={uri}"]))


def test_resume_refuses_what_training_cannot_apply():
    from raybm.config import check_resumable, is_mutable, is_resumable

    old = load_config(None, [])
    check_resumable(old, load_config(None, ["optimizer.lr=0.5", "algorithm.k=3",
                                            "train.n_updates=9", "distributed.workers=2"]))
    for change in ["model.n_hidden=50", "algorithm.name=pcd", "train.seed=1",
                   "data.synthetic.n_visible=12", "tracking.experiment=x"]:
        with pytest.raises(InputError) as err:
            check_resumable(old, load_config(None, [change]))
        assert err.value.field == change.partition("=")[0]
        assert "cannot change when resuming" in err.value.message
    # Declared on the fields: walked through sections, unions and module sections.
    assert not is_resumable("model.n_hidden") and is_resumable("optimizer.lr")
    assert is_resumable("optimizers.flow.lr") and is_resumable("optimizer.schedule.final")
    assert is_resumable("algorithm.ess_threshold") and is_resumable("sampler.step_size")
    assert not is_resumable("optimizer.param_lr.means") and not is_resumable("train.seed")
    assert is_resumable("distributed.workers") and not is_mutable("distributed.workers")
    assert is_mutable("optimizer.lr") and is_mutable("algorithm.k")
    assert not is_mutable("data.path") and is_resumable("data.path")


# ---------------------------------------------------------------------- refused input
MLP = {"data": {"format": "toy2d"}, "model": {"kind": "mlp"}, "algorithm": {"name": "pcd"},
       "sampler": {"name": "ula", "step_size": 0.05}}


def cli_error(capsys, *argv) -> str:
    """The one stderr line of a refused ``raybm`` command (exit code 2)."""
    from raybm.cli import main

    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text", ["", "\n  \n", "# only a comment\n", "---\n"],
                         ids=["no bytes", "blanks", "comments", "a bare document"])
def test_an_empty_config_file_is_refused_not_trained_on_defaults(text, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: the config file is empty"
    line = cli_error(capsys, "train", path, "--set", "train.n_updates=1")
    assert line == f"raybm: error: {path}: the config file is empty"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.yaml"]  # nothing written


def test_no_config_file_at_all_still_gives_the_defaults(tmp_path):
    assert load_config(None) == Config()
    assert load_config(None, use_default=True).algorithm.name == "kstep"
    (tmp_path / "braces.yaml").write_text("{}\n")  # an explicit empty mapping: the defaults
    assert load_config(tmp_path / "braces.yaml") == Config()
    (tmp_path / "zero.yaml").write_text("0\n")  # falsy, but no mapping (was read as {})
    with pytest.raises(InputError, match="a config must be a mapping of sections"):
        load_config(tmp_path / "zero.yaml")


@pytest.mark.parametrize("override, key, message", [
    ("sampler.box=[-.inf,.inf]", "sampler.box.0", "must be finite, got -inf"),
    ("sampler.box=[-1,.inf]", "sampler.box.1", "must be finite, got inf"),
    ("data.mixture.std=.inf", "data.mixture.std", "must be finite, got inf"),
    ("data.mixture.centers=[[0],[.inf]]", "data.mixture.centers.1.0", "must be finite, got inf"),
    ("data.mixture.weights=[.inf,1]", "data.mixture.weights.0", "must be finite, got inf"),
    ("data.synthetic.weights=[.nan,1]", "data.synthetic.weights.0", "not a number"),
    ("optimizer.param_lr={means: .inf}", "optimizer.param_lr.means", "must be finite, got inf"),
    ("distributed.start_timeout_s=.inf", "distributed.start_timeout_s",
     "must be finite, got inf"),
    ("train.n_updates=.inf", "train.n_updates", "must be finite, got inf"),
    ("optimizer.lr=1e400", "optimizer.lr", "must be finite, got inf"),  # YAML: a string
    # NaN: "not a number", checked before the bounds (was "less than or equal to 10000").
    ("optimizer.lr=nan", "optimizer.lr", "not a number"),  # YAML: the string "nan"
    ("optimizer.lr=.nan", "optimizer.lr", "not a number"),
    ("sampler.step_size=nan", "sampler.step_size", "not a number"),
    ("sampler.step_size=.NaN", "sampler.step_size", "not a number"),
    ("optimizer.param_lr={means: .nan}", "optimizer.param_lr.means", "not a number"),
])
def test_infinity_and_nan_are_refused_in_every_float(override, key, message):
    with pytest.raises(InputError) as err:
        config_from(MLP, "cfg.yaml", [override])
    assert str(err.value) == f"--set: {key}: {message}"


@pytest.mark.parametrize("raw, key, message", [
    ({"algorithm": {"name": "jarzynski", "ess_threshold": float("nan")}},
     "algorithm.ess_threshold", "not a number"),
    ({**MLP, "model": {"kind": "mlp", "base_scale": float("-inf")}}, "model.base_scale",
     "must be finite, got -inf"),
    ({"data": {"format": "gaussian_mixture"}, "algorithm": {"centered": False},
      "sampler": {"name": "mala", "target_acceptance": float("nan")},
      "model": {"kind": "gaussian_mixture", "init_means": [[0.0], [float("inf")]]}},
     "model.init_means.1.0", "must be finite, got inf"),
    ({"data": {"threshold": "nan"}}, "data.threshold", "not a number"),
])
def test_non_finite_values_are_named_by_their_key_in_tagged_sections(raw, key, message):
    with pytest.raises(InputError) as err:
        parse_config(raw, "cfg.yaml")
    assert str(err.value) == f"cfg.yaml: {key}: {message}"


def test_nan_is_a_name_where_the_key_is_a_string():
    assert load_config(None, ["tracking.run_name=nan"]).tracking.run_name == "nan"


def test_infinity_in_a_config_file_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MLP, "optimizer": {"lr": float("nan")}}))
    assert cli_error(capsys, "train", path) == f"raybm: error: {path}: optimizer.lr: not a number"
    assert cli_error(capsys, "train", path, "--set", "optimizer.lr=0.1", "--set",
                     "sampler.box=[-.inf,.inf]") == (
        "raybm: error: --set: sampler.box.0: must be finite, got -inf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_the_wrong_sampler_for_the_model_blames_the_sampler_name_not_its_keys():
    """A continuous model's config with a Langevin sampler section, switched to gibbs: the
    error is the sampler (step_size is a Langevin key only because the name is wrong)."""
    expected = ("--set: sampler.name: model.kind mlp is sampled with ula, mala, short_run or "
                "flowmc, not gibbs")
    with pytest.raises(InputError) as err:
        config_from(MLP, "cfg.yaml", ["sampler.name=gibbs"])
    assert str(err.value) == expected
    with pytest.raises(InputError) as err:  # step_size at its default: the same error
        config_from({**MLP, "sampler": {"name": "ula"}}, "cfg.yaml", ["sampler.name=gibbs"])
    assert str(err.value) == expected
    with pytest.raises(InputError) as err:  # no sampler section: gibbs by default
        parse_config({"model": {"kind": "mlp"}}, "cfg.yaml")
    assert str(err.value) == "cfg.yaml: sampler.name: model.kind mlp is sampled with ula, " \
                             "mala, short_run or flowmc, not gibbs"
    with pytest.raises(InputError) as err:  # an RBM with a Langevin sampler
        parse_config({"sampler": {"name": "mala", "step_size": 0.1}}, "cfg.yaml")
    assert str(err.value) == "cfg.yaml: sampler.name: model.kind rbm is sampled with gibbs, " \
                             "not mala"
    # A key of another sampler, with a sampler that fits the model, is still that key's error.
    with pytest.raises(InputError) as err:
        parse_config({**MLP, "sampler": {"name": "ula", "precision": "bf16"}}, "cfg.yaml")
    assert str(err.value).startswith("cfg.yaml: sampler.precision: applies to sampler.name "
                                     "gibbs only")
    with pytest.raises(InputError) as err:  # an unknown sampler: the union's message
        parse_config({**MLP, "sampler": {"name": "hmc"}}, "cfg.yaml")
    assert str(err.value).startswith("cfg.yaml: sampler.name: Input should be one of")

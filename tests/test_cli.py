"""The command line: a smoke test of every command, and bad inputs as one-line errors.

Each bad input must end with exactly one line on stderr that names the file or the config key,
a non-zero exit code, and no traceback.
"""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

from raybm.cli import main

FAST = ["--set", "model.n_hidden=16", "--set", "data.max_samples=300", "--set",
        "train.batch_size=50", "--set", "train.eval_t=[1,3]", "--set", "train.eval_samples=100",
        "--set", "train.eval_k_long=10", "--no-progress", "--workers", "0"]


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    argv = ["train", *FAST, "--set", "train.n_updates=6", "--out", root / "run",
            "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    assert main([str(a) for a in argv]) == 0
    return root / "run"


def test_train_prints_a_summary_with_the_mlflow_command(trained_run, capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", *FAST, "--set", "train.n_updates=4", "--out",
                           tmp_path / "r2", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 0
    assert "test_accuracy" in out and "MLflow run id" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'm.db'}" in out


def test_train_refuses_an_out_directory_that_holds_a_stopped_distributed_run(capsys, tmp_path):
    """Its checkpoints are only in Ray's storage; a new run there would restart from them."""
    from raybm.checkpoint import write_common, write_shard
    from raybm.models.rbm import BernoulliRBM

    ckpt = tmp_path / "r" / "ray" / "checkpoint_2026-11-24_07-00-00.000000"
    write_shard(ckpt, 0, 1, None, torch.Generator().get_state())
    write_common(ckpt, step=5, model=BernoulliRBM(64, 8), state={}, meta={}, world_size=1)
    code, _, err = run_cli(capsys, "train", *FAST, "--set", "train.n_updates=2", "--out",
                           tmp_path / "r", "--set", "tracking.enabled=false")
    assert code == 2
    assert err.strip().endswith("--out: already holds a run; use --resume to continue it")
    assert sorted(p.name for p in ckpt.iterdir()) == ["meta.json", "state.pt",
                                                       "walkers-000-of-001.parquet"]


def test_train_says_what_it_fell_back_to_when_ray_cannot_start(capsys, tmp_path, monkeypatch):
    """The default job asks for 2 workers; without Ray it trains in-process and says why."""
    import raybm.distributed.launch as launch

    monkeypatch.setattr(launch, "start_ray",
                        lambda workers, use_gpu: ("Ray could not start (test)", None))
    code, _, err = run_cli(capsys, "train", *FAST[:-2], "--set", "train.n_updates=2", "--out",
                           tmp_path / "r", "--set", "tracking.enabled=false")
    assert code == 0
    assert "raybm: Ray could not start (test): training in-process instead" in err
    from raybm.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "r").step == 2


def test_train_resume(trained_run, capsys):
    code, out, _ = run_cli(capsys, "train", "--resume", trained_run, "--set",
                           "train.n_updates=8", "--no-progress")
    assert code == 0
    from raybm.checkpoint import load_checkpoint

    assert load_checkpoint(trained_run).step == 8


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".png"])
def test_sample(trained_run, capsys, tmp_path, suffix):
    out_file = tmp_path / f"s{suffix}"
    code, out, _ = run_cli(capsys, "sample", trained_run, "--n", 12, "--k", 3, "--label", 2,
                           "--out", out_file)
    assert code == 0 and out_file.is_file()
    if suffix == ".npz":
        data = np.load(out_file)
        assert data["x"].shape == (12, 64) and (data["labels"] == 2).all()


def test_eval(trained_run, capsys):
    import json

    code, out, _ = run_cli(capsys, "eval", trained_run)
    assert code == 0
    result = json.loads(out)
    assert result["step"] >= 6 and 0 <= result["test_accuracy"] <= 1


def test_data_inspect(capsys, tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x=np.eye(4, dtype=np.uint8), labels=np.arange(4))
    code, out, _ = run_cli(capsys, "data", "inspect", path)
    assert code == 0 and "4" in out


# ----------------------------------------------------------------------- bad inputs
def _idx_images(path, n=3, magic=2051, truncate=0):
    body = struct.pack(">IIII", magic, n, 2, 2) + bytes(4 * n)
    path.write_bytes(body[: len(body) - truncate])
    return path


def _bad_inputs(tmp):
    cases = {}
    cases["truncated IDX"] = (["data", "inspect", _idx_images(tmp / "t.idx", truncate=3)],
                              "t.idx")
    cases["wrong magic"] = (["data", "inspect", _idx_images(tmp / "m.idx", magic=1234)],
                            "m.idx")
    (tmp / "r.txt").write_text("0 1 1\n1 0\n")
    cases["ragged matrix"] = (["data", "inspect", tmp / "r.txt"], "r.txt")
    with gzip.open(tmp / "h.hapt.gz", "wt") as fh:
        fh.write("Real S1_A 0 1 2\nReal S1_B 0 1 1\n")
    cases["non-binary hapt"] = (["data", "inspect", tmp / "h.hapt.gz"], "h.hapt.gz")
    (tmp / "e.fasta").write_text("")
    cases["empty FASTA"] = (["data", "inspect", tmp / "e.fasta"], "e.fasta")
    (tmp / "u.fasta").write_text(">a\nACGU\n>b\nACG\n")
    cases["unequal lengths"] = (["data", "inspect", tmp / "u.fasta"], "u.fasta")
    (tmp / "k.fasta").write_text(">a\nAC*U\n>b\nACGU\n")
    cases["unknown letters"] = (["data", "inspect", tmp / "k.fasta"], "k.fasta")
    _idx_images(tmp / "img.idx", n=3)
    (tmp / "lab.idx").write_bytes(struct.pack(">II", 2049, 2) + bytes(2))
    cases["labels of the wrong length"] = (
        ["data", "inspect", tmp / "img.idx", "--labels", tmp / "lab.idx"], "lab.idx")
    (tmp / "c1.yaml").write_text("algorithm:\n  kk: 3\n")
    cases["unknown config key"] = (["train", tmp / "c1.yaml"], "algorithm.kk")
    (tmp / "c2.yaml").write_text("train:\n  batch_size: many\n")
    cases["wrong type"] = (["train", tmp / "c2.yaml"], "train.batch_size")
    cases["k <= 0"] = (["train", "--set", "algorithm.k=0"], "algorithm.k")
    cases["missing data path"] = (["train", "--set", f"data.path={tmp / 'nope.npz'}"],
                                  "nope.npz")
    cases["missing config file"] = (["train", tmp / "absent.yaml"], "absent.yaml")
    (tmp / "c3.yaml").write_text("algorithm: [1, 2\n")
    cases["invalid YAML"] = (["train", tmp / "c3.yaml"], "c3.yaml")
    cases["missing run"] = (["sample", tmp / "norun", "--out", tmp / "x.npz"], "norun")
    cases["n <= 0"] = (["sample", tmp / "norun", "--n", "0", "--out", tmp / "x.npz"], "--n")
    # Values that used to pass validation and crash later (issue 7, found broken).
    quick = ["train", *FAST, "--set", "train.n_updates=2"]
    cases["one eval sample"] = (quick + ["--set", "train.eval_samples=1"], "train.eval_samples")
    cases["negative t_G"] = (quick + ["--set", "train.eval_t=[-1]"], "--set: train.eval_t.0")
    cases["seed beyond int64 streams"] = (quick + ["--set", "train.seed=100000000000000"],
                                          "train.seed")
    cases["one AIS temperature"] = (quick + ["--set", "train.ais_betas=1"], "train.ais_betas")
    cases["lr that overflows"] = (quick + ["--set", "optimizer.lr=1e39"], "optimizer.lr")
    cases["absurd hidden layer"] = (quick + ["--set", "model.n_hidden=10000000"],
                                    "model.n_hidden")
    np.savez(tmp / "one.npz", x=np.eye(6, dtype=np.uint8)[:, :4].repeat(40, 0),
             labels=np.zeros(240, dtype=int))
    cases["a single label class"] = (quick + ["--set", f"data.path={tmp / 'one.npz'}"],
                                     "one.npz: labels: only 1 class")
    cases["run name that is a path"] = (quick + ["--set", "tracking.run_name=.."],
                                        "tracking.run_name")
    cases["empty experiment"] = (quick + ["--set", "tracking.experiment=''"],
                                 "tracking.experiment")
    (tmp / "notadb").write_text("hello")
    cases["tracking store not a database"] = (
        [*quick, "--tracking-uri", f"sqlite:///{tmp / 'notadb'}"], "tracking.uri")
    cases["tracking store under a file"] = (
        [*quick, "--tracking-uri", f"sqlite:///{tmp / 'notadb' / 'm.db'}"], "tracking.uri")
    cases["no tracking server"] = ([*quick, "--tracking-uri", "http://127.0.0.1:1"],
                                   "no tracking server answers at http://127.0.0.1:1")
    cases["plain postgresql driver"] = (
        [*quick, "--tracking-uri", "postgresql://u@127.0.0.1:1/db"], "postgresql+psycopg2")
    cases["labels without data"] = (quick + ["--set", "data.labels_path=l.idx"],
                                    "data.labels_path")
    cases["out under a file"] = ([*quick, "--out", tmp / "notadb" / "run"], "--out")
    return cases


NAMES = ["truncated IDX", "wrong magic", "ragged matrix", "non-binary hapt", "empty FASTA",
         "unequal lengths", "unknown letters", "labels of the wrong length",
         "unknown config key", "wrong type", "k <= 0", "missing data path",
         "missing config file", "invalid YAML", "missing run", "n <= 0",
         "one eval sample", "negative t_G", "seed beyond int64 streams", "one AIS temperature",
         "lr that overflows", "absurd hidden layer", "a single label class",
         "run name that is a path", "empty experiment", "tracking store not a database",
         "tracking store under a file", "no tracking server", "plain postgresql driver",
         "labels without data", "out under a file"]


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_is_one_line_naming_the_culprit(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written in the working directory
    argv, culprit = _bad_inputs(tmp_path)[name]
    code, out, err = run_cli(capsys, *argv)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("raybm: error: ") and culprit in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()
    assert not list(tmp_path.glob("**/.*tmp-*"))  # no temp file left behind


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_sample_refuses_an_output_it_cannot_write_before_sampling(where, trained_run, capsys,
                                                                   tmp_path):
    (tmp_path / "d.npz").mkdir()
    (tmp_path / "afile").write_text("x")
    out = tmp_path / ("d.npz" if where == "a directory" else "afile/s.npz")
    code, _, err = run_cli(capsys, "sample", trained_run, "--n", 4, "--out", out)
    assert code == 2 and err.strip().splitlines() == [
        f"raybm: error: --out: {out}: " + ("is a directory, not a file" if where == "a directory"
                                           else f"{tmp_path / 'afile'} is a file, not a directory")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "d.npz"]


def test_eval_on_data_of_another_shape_is_one_line(trained_run, capsys, tmp_path):
    np.savez(tmp_path / "w.npz", x=np.zeros((20, 5), dtype=np.uint8))
    code, _, err = run_cli(capsys, "eval", trained_run, "--set", f"data.path={tmp_path / 'w.npz'}")
    assert code == 2
    assert "data.path: has samples of shape (5,); the model takes (64,)" in err
    code, _, err = run_cli(capsys, "eval", trained_run, "--set", "foo.bar=1")
    assert code == 2 and err.strip() == "raybm: error: --set: foo: unknown key"


def test_two_runs_creating_one_new_store_at_once_both_succeed(tmp_path):
    """MLflow's schema migrations on a new mlflow.db, from two processes at once: one used to
    crash (and once left the database unusable); raybm serialises the creation."""
    code = ("import sys; from raybm.tracking import Tracker; "
            "t = Tracker(sys.argv[1], 'race'); t.log_metrics({'m': 1.0}, 1); t.end()")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    assert len(client.search_runs([exp.experiment_id])) == 3


def test_exit_code_and_stderr_of_the_real_process(tmp_path):
    (tmp_path / "c.yaml").write_text("algorithm:\n  k: -1\n")
    proc = subprocess.run([sys.executable, "-m", "raybm.cli", "train", str(tmp_path / "c.yaml")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"raybm: error: {tmp_path / 'c.yaml'}: algorithm.k: Input should be greater than 0"]


def test_train_address_with_nothing_there_is_one_line_and_writes_nothing(capsys, tmp_path,
                                                                          monkeypatch):
    """--address names a cluster to join; nothing answers there: exit 2 and one line naming
    the address (not Ray's minute of retries, not a silent local run), and no run directory."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # Recorded by monkeypatch as absent, so that what --address sets (RAY_ADDRESS, for this
    # process and what it starts) is gone after the test.
    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.delenv("RAY_ADDRESS")
    code, _, err = run_cli(capsys, "train", *FAST, "--workers", "2", "--address",
                           "127.0.0.1:1", "--out", tmp_path / "r",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 2
    assert err.strip().splitlines() == [
        "raybm: error: 127.0.0.1:1: --address: cannot join this Ray cluster (nothing answers there: "
        "Connection refused); is its head running (ray start --head)?"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "mlflow.db").exists()

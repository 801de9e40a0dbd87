"""Training runs: resume equality, run directories, MLflow runs, divergence handling."""

from __future__ import annotations

import json

import pytest
import torch

from raybm.checkpoint import find_checkpoint, load_checkpoint
from raybm.config import load_config
from raybm.errors import DivergenceError, InputError
from raybm.run import train_run
from raybm.data.load import load_data
from raybm.train import make_trainer, run_updates

SMALL = ["model.n_hidden=16", "train.batch_size=50", "train.progress=false",
         "train.log_every=5", "data.max_samples=400", "tracking.enabled=false"]


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("algorithm", [
    ["algorithm.name=pcd", "algorithm.k=3", "optimizer.name=adam", "optimizer.lr=0.01"],
    ["algorithm.name=kstep", "algorithm.k=3"],
    ["algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=200",
     "algorithm.ess_threshold=0.9"],
    # compiled fp32 draws with their words made in the loop (SplitMix64; compiles: slow)
    pytest.param(["algorithm.name=kstep", "algorithm.k=3", "sampler.precision=fp32",
                  "sampler.compile=true"], marks=pytest.mark.slow),
    # compiled bf16 draws on SplitMix64 words stored by their own compiled loop
    # (fused.splitmix_words; emulated bf16 on a CPU without it is slower, still exact)
    pytest.param(["algorithm.name=pcd", "algorithm.k=3", "sampler.precision=bf16",
                  "sampler.compile=true"], marks=pytest.mark.slow),
    # int8 digit products, labels sampled (F&F) and weighted walkers (where this CPU's int8
    # sums are not exact these are fp32 runs: still exact resumes)
    ["algorithm.name=kstep", "algorithm.k=3", "sampler.precision=digits"],
    pytest.param(["algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=200",
                  "sampler.precision=digits", "sampler.compile=true"],
                 marks=pytest.mark.slow),
], ids=["pcd-adam", "kstep-sgd", "jarzynski", "kstep-compiled-fp32", "pcd-compiled-bf16",
        "kstep-digits", "jarzynski-compiled-digits"])
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, algorithm):
    common = SMALL + algorithm + ["train.checkpoint_every=7"]
    straight = train_run(load_config(None, common + ["train.n_updates=20"]),
                         out=tmp_path / "straight", evaluate_at_end=False)
    first = train_run(load_config(None, common + ["train.n_updates=11"]),
                      out=tmp_path / "resumed", evaluate_at_end=False)
    assert load_checkpoint(first.run_dir).step == 11
    train_run(resume=tmp_path / "resumed", overrides=["train.n_updates=20"],
              evaluate_at_end=False)
    a = load_checkpoint(straight.run_dir)
    b = load_checkpoint(tmp_path / "resumed")
    assert a.step == b.step == 20
    for name, value in params(a.model).items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    if a.walkers is not None:
        assert torch.equal(a.walkers.x, b.walkers.x)
    assert torch.equal(a.state["generator"], b.state["generator"])
    assert a.state["estimator"] == b.state["estimator"]
    assert a.state["kernel"] == b.state["kernel"]
    if "sampler.compile=true" in algorithm:
        assert a.state["kernel"] == {"random_stream": 2.0}  # SplitMix64, and it came back
    if a.walkers is not None:
        assert torch.equal(a.walkers.log_weight, b.walkers.log_weight)


def test_resume_from_an_intermediate_checkpoint(tmp_path):
    """Resuming from step 7 (not the latest) replays the same updates."""
    cfg = load_config(None, SMALL + ["train.n_updates=14", "train.checkpoint_every=7"])
    train, _ = load_data(cfg)
    run = train_run(cfg, out=tmp_path / "r", evaluate_at_end=False)
    step7 = run.run_dir / "checkpoints" / "step_00000007"
    trainer = make_trainer(cfg, train, resume=step7)
    assert trainer.step == 7
    run_updates(trainer, 14)
    final = load_checkpoint(run.run_dir)
    for name, value in final.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name


def test_tracked_run_logs_params_metrics_and_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [s for s in SMALL if not s.startswith("tracking")] + [
        "train.n_updates=10", f"tracking.uri={uri}", "train.eval_t=[1, 5]",
        "train.eval_samples=100", "train.eval_k_long=20"])
    summary = train_run(cfg, out=tmp_path / "run")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["algorithm.name"] == "kstep"
    assert "test_accuracy" in run.data.metrics and "aai_t5" in run.data.metrics
    history = client.get_metric_history(summary.run_id, "loss_generation")
    assert [m.step for m in history] == [5, 10]
    top = {a.path for a in client.list_artifacts(summary.run_id)}
    assert {"config.yaml", "plots", "checkpoint"} <= top
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(summary.run_id, "plots")}
    assert {"pca_t10.png", "scores_vs_tG.png"} <= plots
    assert summary.ui_command == f"mlflow ui --backend-store-uri {uri}"
    saved = json.loads((summary.run_dir / "summary.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])


def test_existing_run_directory_is_not_overwritten(tmp_path):
    cfg = load_config(None, SMALL + ["train.n_updates=3"])
    train_run(cfg, out=tmp_path / "r", evaluate_at_end=False)
    before = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir())
    with pytest.raises(InputError, match="--resume"):
        train_run(cfg, out=tmp_path / "r", evaluate_at_end=False)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == before


def test_bad_data_path_creates_nothing(tmp_path):
    cfg = load_config(None, SMALL + [f"data.path={tmp_path / 'missing.npz'}"])
    with pytest.raises(InputError, match="missing.npz"):
        train_run(cfg, out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_divergence_stops_within_one_update_and_keeps_the_last_checkpoint(tmp_path):
    cfg = load_config(None, SMALL + ["train.n_updates=6", "train.checkpoint_every=2"])
    train, _ = load_data(cfg)
    trainer = make_trainer(cfg, train)
    run_updates(trainer, 4, on_checkpoint=lambda step: trainer.save(tmp_path, {}))
    good = find_checkpoint(tmp_path)
    with torch.no_grad():
        trainer.model.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="update 5"):
        run_updates(trainer, 6, on_checkpoint=lambda step: trainer.save(tmp_path, {}))
    assert find_checkpoint(tmp_path) == good
    assert torch.isfinite(load_checkpoint(good).model.weight).all()


def test_a_gradient_too_large_to_sum_is_named_though_every_entry_is_finite():
    # Gradients of norm 1e38 each: finite, but their norms sum past float32's range. The
    # message once read "non-finite ;" (a mismatched FlowMC-EBM run, energy lr 1.0).
    from raybm.algorithms.base import as_phase

    cfg = load_config(None, SMALL + ["train.n_updates=2"])
    trainer = make_trainer(cfg, load_data(cfg)[0])
    params = list(trainer.model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 1e38 / max(p.numel(), 1) ** 0.5)
    message = trainer._divergence(as_phase(trainer.phases[0]), torch.zeros(()), params)
    assert "non-finite norm of the" in message and "gradient" in message


def test_jarzynski_run_logs_its_diagnostics_and_plot(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(None, [s for s in SMALL if not s.startswith("tracking")] + [
        "algorithm.name=jarzynski", "algorithm.k=2", "algorithm.n_walkers=200",
        "algorithm.ess_threshold=0.999", "model.labels=false", "train.n_updates=20",
        f"tracking.uri={uri}", "train.eval_t=[1, 5]", "train.eval_samples=100",
        "train.eval_k_long=20"])
    summary = train_run(cfg, out=tmp_path / "run")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    metrics = client.get_run(summary.run_id).data.metrics
    assert {"ess", "log_z", "weight_entropy", "n_resamplings", "test_loglik_jarzynski"} <= set(
        metrics)
    assert metrics["n_resamplings"] >= 1
    plots = {a.path.split("/")[-1] for a in client.list_artifacts(summary.run_id, "plots")}
    assert "jarzynski.png" in plots


def test_resume_with_its_tracking_store_gone_writes_nothing(tmp_path):
    """The run's store was deleted: one line naming it, no new empty database, config.yaml as
    it was (the change asked for did not happen)."""
    db = tmp_path / "t.db"
    cfg = load_config(None, [s for s in SMALL if not s.startswith("tracking")] + [
        "train.n_updates=3", f"tracking.uri=sqlite:///{db}", "train.eval_t=[1]",
        "train.eval_samples=50", "train.eval_k_long=5"])
    train_run(cfg, out=tmp_path / "r", evaluate_at_end=False)
    config = (tmp_path / "r" / "config.yaml").read_bytes()
    db.unlink()
    with pytest.raises(InputError, match=f"{db} does not exist: the run was tracked there"):
        train_run(resume=tmp_path / "r", overrides=["train.n_updates=5"])
    assert not db.exists()
    assert (tmp_path / "r" / "config.yaml").read_bytes() == config


def test_a_run_that_stopped_before_its_first_checkpoint_can_be_started_again(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("{}\n")  # all a crashed start leaves
    with pytest.raises(InputError, match="stopped before its first checkpoint"):
        train_run(resume=tmp_path / "r")
    cfg = load_config(None, SMALL + ["train.n_updates=2"])
    assert train_run(cfg, out=tmp_path / "r", evaluate_at_end=False).run_dir == tmp_path / "r"


@pytest.mark.parametrize("has_bf16, told", [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bf16_instructions_is_told(tmp_path, monkeypatch, has_bf16, told):
    """Emulated bf16 matmuls were ~54x slower than fp32 on an AVX2 CPU: the run says so once
    (and trains as asked); a CPU with bf16, or one that cannot be told, gets no line."""
    import raybm.samplers.gibbs

    # The Gibbs kernel says it (Kernel.notes), the run only passes it on.
    monkeypatch.setattr(raybm.samplers.gibbs, "cpu_has_bf16", lambda: has_bf16)
    # ... and its cached reading, which would otherwise keep the patched answer afterwards
    monkeypatch.setattr(raybm.samplers.gibbs, "_cpu_bf16", lambda: has_bf16 is True)
    # A cap on oneDNN (raybm.cpu) is named in the line: here, one that withholds nothing.
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "ALL")
    said: list[str] = []
    cfg = load_config(None, SMALL + ["sampler.precision=bf16", "train.n_updates=2"])
    train_run(cfg, out=tmp_path / "r", evaluate_at_end=False, say=said.append)
    assert [m for m in said if "bf16" in m] == (
        ["sampler.precision bf16: this CPU has no bf16 instructions (avx512_bf16 / amx_bf16) "
         "that torch's matmuls may use, so bf16 matmuls are emulated and slower than fp32 "
         "(~50x measured); set sampler.precision=fp32"] if told else [])


def _float_file(path, seed: int) -> str:
    import numpy as np

    rng = np.random.default_rng(seed)
    np.save(path, rng.normal(size=(300, 2)).astype(np.float32))
    return str(path)


FLOATS = ["data.format=floats", "model.kind=mlp", "model.widths=[8]", "sampler.name=ula",
          "algorithm.name=pcd", "algorithm.k=2", "algorithm.n_walkers=50",
          "train.batch_size=50", "train.checkpoint_every=5", "train.progress=false"]


def test_resume_refuses_other_data_and_takes_the_same_data_moved(tmp_path, capsys):
    """``--resume --set data.path=other.npy`` (same shape, other contents) is refused by the
    data's digest, naming the key, with the run left as it was; the same file moved goes on."""
    from raybm.cli import main

    data = _float_file(tmp_path / "a.npy", 0)
    _float_file(tmp_path / "other.npy", 1)
    run = tmp_path / "run"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["train", *[f"--set={s}" for s in FLOATS], f"--set=data.path={data}",
                 "--set=train.n_updates=10", "--tracking-uri", uri, "--out", str(run)]) == 0
    before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", f"data.path={tmp_path / 'other.npy'}",
                 "--set", "train.n_updates=20"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "raybm: error: --set: data.path: holds other data than the run was trained on")
    assert (run / "config.yaml").read_text() == before and load_checkpoint(run).step == 10
    (tmp_path / "a.npy").rename(tmp_path / "moved.npy")
    assert main(["train", "--resume", str(run), "--set", f"data.path={tmp_path / 'moved.npy'}",
                 "--set", "train.n_updates=15"]) == 0
    ckpt = load_checkpoint(run)
    assert ckpt.step == 15 and ckpt.meta["data_digest"] == load_checkpoint(
        run / "checkpoints" / "step_00000010").meta["data_digest"]
    from mlflow.tracking import MlflowClient

    run_id = ckpt.meta["mlflow_run_id"]
    assert MlflowClient(uri).get_run(run_id).data.params["data.digest"] == ckpt.meta[
        "data_digest"]


def test_resume_with_nothing_to_train_says_so(tmp_path, capsys):
    from raybm.cli import main

    run = tmp_path / "run"
    common = [f"--set={s}" for s in SMALL + ["train.n_updates=6", "train.checkpoint_every=3"]]
    assert main(["train", *common, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--set", "train.n_updates=5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "raybm: error: --set: train.n_updates: 5: the run is at update 6 already, so there "
        "is nothing to train; raise it, e.g. --set train.n_updates=11 (raybm eval evaluates "
        "the run as it is)")
    assert main(["train", "--resume", str(run)]) == 2
    assert "train.n_updates: 6: the run is at update 6 already" in capsys.readouterr().err
    assert load_checkpoint(run).step == 6


def test_a_step_that_overflows_the_parameters_is_never_checkpointed(tmp_path, monkeypatch):
    """A step that leaves a non-finite parameter on a checkpoint step (here the gauge fix of
    update 4 is made to) ends the run before that state is written: the last checkpoint
    stays the good one of update 2."""
    cfg = load_config(None, SMALL + ["train.n_updates=6", "train.checkpoint_every=2",
                                     "algorithm.name=pcd"])  # one phase: nothing after it
    train, _ = load_data(cfg)
    trainer = make_trainer(cfg, train)
    post_update = trainer.model.post_update

    def overflow() -> None:
        post_update()
        if trainer.step == 3:  # the 4th update (step counts the ones done before it)
            with torch.no_grad():
                trainer.model.hbias[0] = float("inf")

    monkeypatch.setattr(trainer.model, "post_update", overflow)
    with pytest.raises(DivergenceError, match="diverged at update 4: non-finite hbias"):
        run_updates(trainer, 6, on_checkpoint=lambda step: trainer.save(tmp_path, {}))
    assert load_checkpoint(tmp_path).step == 2


@pytest.mark.parametrize("native, int8, n_hidden, used, why", [
    (False, False, 16, "fp32", "no native bf16 matmuls here"),
    (True, True, 16, "fp32", "samples faster in fp32"),  # N M / (N + M) = 74 x 16 / 90 = 13
    (True, True, 2000, "bf16", "native bf16 matmuls on every rank"),  # 74 x 2000 / 2074 = 71
    (False, True, 16, "fp32", "samples faster in fp32"),
    (False, True, 2000, "digits", "exact int8 sums on every rank"),
    (False, False, 2000, "fp32", "no exact int8 sums for digits"),
])
def test_precision_auto_takes_the_fastest_path_that_is_native_and_worth_it(
        tmp_path, monkeypatch, native, int8, n_hidden, used, why):
    """``sampler.precision: auto`` (the default) runs bf16 only where the matmuls are native
    and the model large enough for them to repay the conversions (AUTO_BF16_MIN_WIDTH), else
    the int8 digits where their sums are exact and the model as large (AUTO_DIGITS_MIN_WIDTH),
    else fp32; the run's first lines say what it chose and why, and the trainer runs that."""
    import raybm.samplers.digits
    import raybm.samplers.gibbs
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    monkeypatch.setattr(raybm.samplers.gibbs, "_cpu_bf16", lambda: native)
    if not int8 or not raybm.samplers.digits.available(torch.device("cpu")):
        # (claimed where the CPU lacks them: 0/1 rows against digits within +-127 are
        # still summed exactly by oneDNN's AVX2 and AVX-512 int8 kernels, only slower)
        monkeypatch.setattr(raybm.samplers.digits, "available", lambda device: int8)
    said: list[str] = []
    cfg = load_config(None, SMALL + [f"model.n_hidden={n_hidden}", "train.n_updates=2"])
    assert cfg.sampler.precision == "auto"
    train_run(cfg, out=tmp_path / "r", evaluate_at_end=False, say=said.append)
    assert [m for m in said if m.startswith("sampler.precision")] == [
        next(m for m in said if m.startswith(f"sampler.precision auto: {used} ("))]
    assert why in next(m for m in said if m.startswith("sampler.precision"))
    train, _ = load_data(cfg)
    assert make_trainer(cfg, train).estimator.kernel.precision == used

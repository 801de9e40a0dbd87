"""FlowMC-EBM (``algorithms.flowmc``): the energy and a flow trained together, the flow by
maximum likelihood on the FlowMC walkers in phases of its own; exact resume of both modules
and the walkers; one-line refusals."""

from __future__ import annotations

import pytest
import torch

from raybm.config import load_config
from raybm.errors import InputError
from raybm.run import train_run

FLOWMC = ["data.format=gaussian_mixture", "data.mixture.dim=4",
          "data.mixture.centers=[[-4.0], [4.0]]", "data.mixture.weights=[0.25, 0.75]",
          "data.mixture.n_samples=1000", "model.kind=gaussian_mixture",
          "model.init_means=[[-0.1], [0.1]]", "model.init_noise=0.01",
          "sampler.name=flowmc", "sampler.step_size=0.1", "sampler.n_mala=3",
          "algorithm.name=flowmc_ebm", "algorithm.k=1", "algorithm.n_walkers=256",
          "algorithm.flow_transforms=2", "algorithm.flow_hidden=[16, 16]",
          "optimizer.name=adam", "optimizer.lr=0.01",
          "optimizers.flow={name: adam, lr: 0.003}", "train.batch_size=128",
          "train.log_every=5", "train.progress=false", "tracking.enabled=false"]


def test_a_flowmc_run_trains_both_modules_and_logs_the_sampler(tmp_path):
    from raybm.checkpoint import load_checkpoint
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    cfg = load_config(None, FLOWMC + ["train.n_updates=20", "train.threads=1"])
    train, _ = load_data(cfg)
    trainer = make_trainer(cfg, train)
    flow0 = {k: v.clone() for k, v in trainer.modules["flow"].state_dict().items()}
    means0 = trainer.model.means.detach().clone()
    for _ in range(19):
        trainer.update(diagnostics=False)
    info = trainer.update()
    assert {"loss_joint", "loss_fit", "imh_acceptance", "acceptance", "lr/energy",
            "lr/flow"} <= set(info)
    assert 0 < info["imh_acceptance"] <= 1 and 0 < info["acceptance"] <= 1
    assert not torch.equal(trainer.model.means.detach(), means0)
    assert any(not torch.equal(v, trainer.modules["flow"].state_dict()[k])
               for k, v in flow0.items())
    # The kernel proposes from the module the trainer optimizes, not a copy.
    assert trainer.estimator.kernel.flow is trainer.modules["flow"]


def test_a_flowmc_run_resumes_both_modules_and_its_walkers_bit_for_bit(tmp_path):
    from tests.test_continuous_run import straight_and_resumed

    a, b = straight_and_resumed(tmp_path, FLOWMC + ["train.checkpoint_every=6"], 14, 6)
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    for name, value in a.state["modules"]["flow"].items():
        assert torch.equal(value, b.state["modules"]["flow"][name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)


def test_raybm_sample_of_a_flowmc_run_moves_chains_with_its_flow(tmp_path, capsys):
    from raybm.cli import main

    run = tmp_path / "run"
    assert main(["train", *[f"--set={s}" for s in FLOWMC + [
        "train.n_updates=4", "distributed.workers=0", "train.eval_k_long=5"]],
        "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--from", "chains", "--k", "3", "--n", "50", "--out",
                 str(tmp_path / "x.npz")]) == 0
    assert "3 flowmc steps from N(0, I) per sample" in capsys.readouterr().out


def test_flowmc_needs_an_algorithm_that_trains_its_flow():
    from raybm.data.load import load_data
    from raybm.models.build import check_fits

    cfg = load_config(None, [s for s in FLOWMC if not s.startswith(("algorithm.", "optimizers"))]
                      + ["algorithm.name=pcd", "algorithm.n_walkers=64"])
    with pytest.raises(InputError) as err:
        check_fits(cfg, load_data(cfg)[0])
    assert str(err.value).count("\n") == 0 and "sampler.name" in str(err.value)
    assert "flowmc_ebm" in str(err.value)
    with pytest.raises(InputError, match="model.base_scale"):
        load_config(None, [s for s in FLOWMC if not s.startswith("model.")]
                    + ["model.kind=mlp", "model.base_scale=0"])


@pytest.mark.slow
def test_a_flowmc_run_resumes_bit_for_bit_on_two_ray_workers(tmp_path, ray_session):
    from tests.test_continuous_run import straight_and_resumed

    a, b = straight_and_resumed(tmp_path, FLOWMC + ["train.checkpoint_every=6",
                                                    "distributed.workers=2"], 12, 6)
    for name, value in a.state["modules"]["flow"].items():
        assert torch.equal(value, b.state["modules"]["flow"][name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)


def _trainer(extra: list[str]):
    from raybm.data.load import load_data
    from raybm.train import make_trainer

    cfg = load_config(None, FLOWMC + ["train.threads=1"] + extra)
    train, _ = load_data(cfg)
    return make_trainer(cfg, train)


def test_the_flows_rate_follows_the_energys_by_its_ratio_and_schedule():
    trainer = _trainer(["train.n_updates=10", "optimizer.lr=0.02",
                        "optimizer.schedule={name: linear, start: 0.5, final: 0.0}",
                        "optimizers.flow={name: adam, lr: 0.5, lr_ratio: 0.25}"])
    energy, flow = trainer.optimizers["energy"], trainer.optimizers["flow"]
    for step in (0, 5, 7, 9):
        assert flow.lr(step) == pytest.approx(0.25 * energy.lr(step))
    assert energy.lr(7) < energy.lr(0)  # the schedule moves both
    info = {}
    for _ in range(5):
        info = trainer.update()
    assert info["lr/flow"] == pytest.approx(0.25 * info["lr/energy"])


@pytest.mark.parametrize("override, key", [
    ("optimizers.flow={lr_ratio: 0}", "optimizers.flow.lr_ratio"),
    ("optimizers.flow={lr_ratio: -1}", "optimizers.flow.lr_ratio"),
])
def test_a_ratio_that_is_not_positive_is_one_line(override, key):
    with pytest.raises(InputError) as err:
        load_config(None, FLOWMC + [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_a_ratio_on_the_energys_own_optimizer_is_refused():
    with pytest.raises(InputError) as err:
        _trainer(["optimizer.lr_ratio=0.1"])
    assert "optimizer.lr_ratio" in str(err.value) and "optimizers.<module>" in str(err.value)


def test_the_mala_step_adapts_and_resumes_with_the_run():
    trainer = _trainer(["train.n_updates=30", "sampler.target_acceptance=0.574",
                        "sampler.step_size=5.0"])
    sizes = []
    for _ in range(20):
        sizes.append(trainer.update()["step_size"])
    assert sizes[-1] < sizes[0] < 5.0  # a step of 5 is refused: it shrinks
    kernel = trainer.estimator.kernel
    assert kernel.state_dict() == {"step_size": sizes[-1]}
    assert type(kernel).with_state(kernel.__class__(5.0, 3, 0.574), {"step_size": 0.3}).step_size == 0.3


def test_a_flow_left_behind_by_its_energy_is_reported_in_the_log_and_metrics():
    # The energy's rate 1000 times the flow's (0.3 against 3e-4): the mixture runs away from
    # where the flow was fitted, IMH refuses nearly every proposal (windows of 0.006 and
    # 0.004 measured, against 0.9-0.97 with matched rates), the weights go to 0 and 1, and
    # the log windows say so.
    import io

    from raybm.console import Progress
    from raybm.train import run_updates

    trainer = _trainer(["train.n_updates=60", "optimizer.lr=0.3",
                        "optimizers.flow={name: adam, lr_ratio: 0.001}",
                        "algorithm.imh_floor=0.05", "train.log_every=10"])
    stream = io.StringIO()
    progress = Progress(60, 0, stream, bar=False)
    lagging = []

    def on_log(step, info):
        lagging.append((info["imh_acceptance_window"], info["flow_lagging"]))
        progress.log(step, info)
        for message in trainer.estimator.alarms(info):
            progress.warn(step, message)

    run_updates(trainer, 60, on_log=on_log)
    flagged = [window for window, flag in lagging if flag]
    assert flagged and max(flagged) < 0.05
    assert all(flag == float(window < 0.05) for window, flag in lagging)
    assert "the flow is not keeping up with the energy" in stream.getvalue()
    assert "optimizers.flow.lr_ratio" in stream.getvalue()
    # A matched run keeps its proposals: no window below the floor after the first.
    healthy = _trainer(["train.n_updates=60", "train.log_every=10",
                        "algorithm.flow_warmup=300", "algorithm.flow_warmup_lr=0.01"])
    windows = []
    run_updates(healthy, 60, on_log=lambda step, info: windows.append(info))
    assert all(w["flow_lagging"] == 0.0 for w in windows), windows


def test_the_flow_warmup_fits_the_initial_model_the_same_on_every_rank():
    from raybm.samplers.exact import exact_start

    # An initial mixture at the data's modes (-4 e1, +4 e1): far from the identity flow.
    at_modes = ["model.init_means=[[-4.0], [4.0]]"]
    warm = at_modes + ["algorithm.flow_warmup=200", "algorithm.flow_warmup_lr=0.01"]
    a, b, cold = _trainer(warm), _trainer(warm), _trainer(at_modes)
    for name, value in a.modules["flow"].state_dict().items():
        assert torch.equal(value, b.modules["flow"].state_dict()[name]), name
    draws, _ = exact_start(torch.Generator().manual_seed(9), a.model, 2000)
    with torch.no_grad():
        warm_ll = a.modules["flow"].log_prob(draws.x).mean()
        cold_ll = cold.modules["flow"].log_prob(draws.x).mean()
    assert warm_ll > cold_ll + 1.0


def test_a_flowmc_run_on_mode_data_reports_weights_rhat_and_importance_sampling(
        tmp_path, capsys):
    """What a user of the 4-Gaussian configs reads: summary.json's mode weights in the data's
    order with their error, R-hat of frozen chains, the flow's importance-sampling read with
    its ESS, the kernel's last IMH acceptance; the same names declared before the run;
    ``raybm sample --from flow`` says what it drew; ``raybm eval`` reads the weights again."""
    import json

    import numpy as np

    from raybm.cli import main
    from raybm.data.load import load_data
    from raybm.evaluate import reported_metrics

    sets = FLOWMC + ["train.n_updates=40", "distributed.workers=0", "train.log_every=10",
                     "train.eval_chain_rounds=20", "model.init_means=kmeans",
                     "model.learn_std=true", "data.mixture.stds=[0.5, 1.0]",
                     "algorithm.flow_warmup=200", "algorithm.flow_warmup_lr=0.01",
                     "sampler.target_acceptance=0.574", "tracking.enabled=true",
                     f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]
    cfg = load_config(None, sets)
    declared = reported_metrics(cfg, load_data(cfg)[0])
    run = tmp_path / "run"
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    final = {"mode_weight_0", "mode_weight_1", "mode_weight_error", "rhat", "rhat_mode",
             "rhat_first_coordinate", "chain_mode_weight_0", "chain_mode_weight_error",
             "is_ess", "is_log_z", "is_mode_weight_0", "is_mode_weight_error"}
    assert final <= set(summary) and final <= set(declared)
    # the kernel's diagnostics as last logged (from MLflow), and over the frozen rounds
    assert {"imh_acceptance", "acceptance", "step_size", "chain_imh_acceptance"} <= set(summary)
    assert {"imh_acceptance_window", "flow_lagging"} <= set(declared)
    # The data's weights 0.25 / 0.75, its first mode at -4 e1: 40 updates get close.
    assert summary["mode_weight_error"] < 0.1
    assert summary["mode_weight_error"] == pytest.approx(
        abs(summary["mode_weight_0"] - 0.25), abs=1e-9)
    assert 0 < summary["is_ess"] <= 1 and summary["rhat"] < 1.5
    # The importance-sampling log Z of the flow against the mixture's closed form.
    assert summary["is_log_z"] == pytest.approx(summary["log_z_exact"], abs=0.1)
    capsys.readouterr()
    assert main(["sample", str(run), "--from", "flow", "--n", "300", "--out",
                 str(tmp_path / "f.npz")]) == 0
    said = capsys.readouterr().out
    assert "draws of the run's flow alone" in said and "ESS" in said
    assert np.load(tmp_path / "f.npz")["x"].shape == (300, 4)
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    evaluated = json.loads(out[: out.rindex("}") + 1])
    assert {"is_mode_weight_0", "is_ess", "rhat"} <= set(evaluated)


def test_sampling_from_the_flow_of_a_run_without_one_is_one_line(tmp_path, capsys):
    from raybm.cli import main

    run = tmp_path / "run"
    sets = [s for s in FLOWMC if not s.startswith(("algorithm.", "optimizers", "sampler."))]
    sets += ["sampler.name=ula", "algorithm.name=pcd", "algorithm.n_walkers=32",
             "train.n_updates=3", "distributed.workers=0"]
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--from", "flow", "--n", "5", "--out",
                 str(tmp_path / "f.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--from" in err and "trains no flow" in err and "\n" not in err


def _flowmc_gradients(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Both modules' gradients of FlowMC-EBM on this rank's shard, summed over the ranks."""
    from raybm.algorithms.base import Batch
    from raybm.algorithms.flowmc import FlowMCEBM
    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.gradients import sum_gradients
    from raybm.models.gaussian import GaussianMixtureEnergy
    from raybm.samplers.flowmc import FlowMC
    from raybm.walkers import WalkerState, shard_slice

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    model = GaussianMixtureEnergy(torch.randn(2, 3, generator=g), torch.randn(2, generator=g),
                                  learn_std=True)
    walkers = WalkerState.unweighted(torch.randn(11, 3, generator=g))
    data = torch.randn(9, 3, generator=g)
    pop = TorchComm() if world > 1 else LOCAL
    # k = 0: no kernel draw, the walkers as given (the split of the gradient is what is
    # checked; the kernel's draws are per rank by design)
    est = FlowMCEBM(k=0, kernel=FlowMC(0.1, 0), population=pop)

    class Data:
        event_shape = (3,)

    flow = est.build_modules(torch.Generator().manual_seed(1), model, Data())["flow"]
    with torch.no_grad():  # away from the identity: every parameter has a gradient
        for p in flow.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    mine = walkers.take(torch.arange(11)[shard_slice(11, world, rank)])
    batch = Batch(data[shard_slice(9, world, rank)], total_weight=9.0)
    out = {}
    for phase, module in (("fit", flow), ("joint", model)):
        module.zero_grad(set_to_none=True)
        est.estimate(torch.Generator(), model, batch, mine, phase).loss.backward()
        sum_gradients(pop, list(module.parameters()), torch.zeros((), dtype=torch.float64))
        out |= {f"{phase}.{n}": p.grad.clone() for n, p in module.named_parameters()
                if p.grad is not None}
    return out


def test_two_ranks_sum_the_energy_and_flow_gradients_to_the_single_process_ones():
    from raybm.distributed.spawn import run_ranks

    single = _flowmc_gradients(0, 1)
    assert any(k.startswith("fit.") for k in single) and "joint.log_stds" in single
    for ranked in run_ranks(2, _flowmc_gradients):
        assert ranked.keys() == single.keys()
        for name, value in single.items():
            assert torch.allclose(ranked[name], value, rtol=1e-5, atol=1e-6), name


def test_a_2d_flowmc_run_reads_its_energys_weights_by_quadrature_and_draws_its_flow(
        tmp_path):
    """A 2-D MLP energy (configs/flowmc_toy2d_*.yaml, shrunk): its own mode weights by
    quadrature, declared live and logged at every log (mode_weights.png), in summary.json
    beside the frozen chains' and the flow's importance-sampling reads of the same energy,
    which agree with it within their sampling error; the flow's density drawn beside the
    energy's."""
    import json

    from mlflow.tracking import MlflowClient

    from raybm.cli import main
    from raybm.data.load import load_data
    from raybm.evaluate import reported_metrics

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sets = ["data.format=toy2d", "data.toy.name=two_modes", "data.toy.n_samples=2000",
            "data.toy.weights=[0.3, 0.7]", "model.kind=mlp", "model.widths=[16, 16]",
            "model.base_scale=2.0", "sampler.name=flowmc", "sampler.step_size=0.05",
            "sampler.n_mala=3", "algorithm.name=flowmc_ebm", "algorithm.k=1",
            "algorithm.n_walkers=256", "algorithm.flow_family=nsf",
            "algorithm.flow_transforms=2", "algorithm.flow_hidden=[16, 16]",
            "algorithm.flow_warmup=100", "algorithm.flow_warmup_lr=0.01",
            "optimizer.name=adam", "optimizer.lr=0.01", "train.n_updates=30",
            "train.batch_size=256", "train.log_every=10", "train.eval_chain_rounds=30",
            "train.threads=1", "train.progress=false", "distributed.workers=0",
            f"tracking.uri={uri}"]
    cfg = load_config(None, sets)
    declared = reported_metrics(cfg, load_data(cfg)[0])
    assert {declared[f"mode_weight_{k}"] for k in (0, 1)} == {"live"}
    run = tmp_path / "run"
    assert main(["train", *[f"--set={s}" for s in sets], "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    client = MlflowClient(uri)
    (logged,) = client.search_runs([client.get_experiment_by_name("raybm").experiment_id])
    history = client.get_metric_history(logged.info.run_id, "mode_weight_0")
    assert sorted({m.step for m in history}) == [10, 20, 30]  # and the final reading
    w0 = summary["mode_weight_0"]
    assert summary["mode_weight_error"] == pytest.approx(abs(w0 - 0.3), abs=1e-9)
    # The chains' 256 x 30 draws are correlated: 0.05 is several of their standard errors;
    # importance sampling (10,000 draws at the reported ESS) likewise.
    assert abs(summary["chain_mode_weight_0"] - w0) < 0.05
    assert summary["is_ess"] > 0.3 and abs(summary["is_mode_weight_0"] - w0) < 0.05
    for name in ("density.png", "flow_density.png", "mode_weights.png"):
        assert (run / "artifacts" / name).stat().st_size > 1000, name

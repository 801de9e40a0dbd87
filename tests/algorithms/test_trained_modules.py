"""The trainer's contract with estimators that train more than the energy, or hand over
gradients instead of a loss, checked with methods that exist only in the test files
(``tests/algorithms/plugin_estimators.py``, named by the configs' ``plugins:``): a second
module trained in its own phases at its own rate, checkpointed, resumed bit for bit
in-process and on 2 Ray workers, summed over 2 ranks to the single-process gradient, and
restored whole by an exploit; a gradient-handing estimator training as its loss twin."""

from __future__ import annotations

import pytest
import torch

from raybm.checkpoint import checkpoint_digest, load_checkpoint
from raybm.config import load_config
from raybm.data.load import load_data
from raybm.run import train_run
from raybm.train import make_trainer, run_updates

PLUGIN = "plugins=[tests.algorithms.plugin_estimators]"
FLOW = [PLUGIN, "algorithm.name=pcd_affine_flow", "algorithm.k=2", "algorithm.n_walkers=301",
        "data.format=gaussian_mixture", "data.mixture.dim=3", "data.mixture.n_samples=600",
        "data.mixture.centers=[[-2.0], [2.0]]", "model.kind=gaussian_mixture",
        "model.n_components=2", "sampler.name=ula", "sampler.step_size=0.05",
        "optimizer.name=adam", "optimizer.lr=0.01", "optimizers.flow.name=adam",
        "optimizers.flow.lr=0.05", "train.batch_size=100", "train.log_every=5",
        "train.progress=false", "tracking.enabled=false"]


def flow_trainer(extra: list[str] = ()):
    config = load_config(None, FLOW + list(extra))
    train, _ = load_data(config)
    return config, make_trainer(config, train)


def test_a_second_module_trains_in_its_own_phases_at_its_own_rate():
    config, trainer = flow_trainer(["optimizers.flow.schedule={name: linear, final: 0.5}",
                                    "train.n_updates=20"])
    assert set(trainer.modules) == {"energy", "flow"}
    flow = trainer.modules["flow"]
    run_updates(trainer, 20)
    # Two flow steps per energy step: each optimizer stepped as its phases declare.
    steps = {name: max(int(s["step"]) for s in o.optimizer.state_dict()["state"].values())
             for name, o in trainer.optimizers.items()}
    assert steps == {"energy": 20, "flow": 40}
    last = trainer.history[-1]
    # Each module at its own rate and schedule (the flow's decays linearly to half).
    assert last["lr/energy"] == 0.01
    assert last["lr/flow"] == pytest.approx(0.05 * (1 - 0.5 * 19 / 20))
    # Fitted by its own phases: on the final walkers it beats the flow it started as.
    from tests.algorithms.plugin_estimators import AffineFlow
    from raybm.streams import generator

    start = AffineFlow(3, generator(config.train.seed, "modules"))
    x = trainer.walkers.x
    with torch.no_grad():
        assert -flow.log_prob(x).mean() < -start.log_prob(x).mean() - 0.1
    assert torch.allclose(flow.mean.double(), x.double().mean(0), atol=0.5)


def test_a_phase_steps_only_the_modules_it_names():
    _, trainer = flow_trainer()
    energy = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    flow = {k: v.clone() for k, v in trainer.modules["flow"].state_dict().items()}
    trainer.phases = trainer.phases[:1]  # the "fit" phase alone
    trainer.update()
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in energy.items())
    assert not all(torch.equal(v, trainer.modules["flow"].state_dict()[k])
                   for k, v in flow.items())


def _straight_and_resumed(tmp_path, extra: list[str], total: int = 14, first: int = 7):
    from tests.test_continuous_run import straight_and_resumed

    return straight_and_resumed(tmp_path, FLOW + extra + ["train.checkpoint_every=7"], total,
                                first)


def _assert_same(a, b) -> None:
    assert a.step == b.step
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    for name, value in a.state["modules"]["flow"].items():
        assert torch.equal(value, b.state["modules"]["flow"][name]), name
    for module in ("energy", "flow"):
        sa, sb = (c.state["optimizers"][module]["state"] for c in (a, b))
        for i in sa:
            for key, value in sa[i].items():
                assert torch.equal(value, sb[i][key]), (module, i, key)
    assert torch.equal(a.walkers.x, b.walkers.x)


def test_both_modules_checkpoint_and_resume_bit_for_bit_in_process(tmp_path):
    # A schedule with its own horizon: the first part ran to 7 with train.n_updates=7.
    a, b = _straight_and_resumed(tmp_path, ["optimizers.flow.schedule={name: cosine, updates: 14}"])
    _assert_same(a, b)
    assert set(a.state["schedules"]) == {"energy", "flow"} and a.state["schedules"]["flow"][
        "step"] == 14


@pytest.mark.slow
def test_both_modules_resume_bit_for_bit_on_two_ray_workers(tmp_path, ray_session):
    a, b = _straight_and_resumed(tmp_path, ["distributed.workers=2"])
    _assert_same(a, b)
    assert a.meta["shard_files"] and len(a.meta["shard_files"]) == 2


def _gradients(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Both modules' gradients of one update's phases, summed over ``world`` ranks, for the
    same population split in shards (k = 0: no kernel draw, the walkers as given)."""
    from raybm.algorithms.population import LOCAL
    from raybm.distributed.comm import TorchComm
    from raybm.gradients import sum_gradients
    from raybm.walkers import WalkerState, shard_slice
    from tests.algorithms.plugin_estimators import AffineFlowPCD
    from raybm.algorithms.base import Batch
    from raybm.models.gaussian import GaussianMixtureEnergy
    from raybm.samplers.langevin import ULA

    g = torch.Generator().manual_seed(0)
    model = GaussianMixtureEnergy(torch.randn(2, 3, generator=g), torch.randn(2, generator=g))
    walkers = WalkerState.unweighted(torch.randn(11, 3, generator=g))
    data = torch.randn(9, 3, generator=g)
    pop = TorchComm() if world > 1 else LOCAL
    est = AffineFlowPCD(k=0, kernel=ULA(0.1), population=pop)

    class Data:
        event_shape = (3,)

    flow = est.build_modules(torch.Generator().manual_seed(1), model, Data())["flow"]
    mine = walkers.take(torch.arange(11)[shard_slice(11, world, rank)])
    rows = shard_slice(9, world, rank)
    batch = Batch(data[rows], total_weight=9.0)
    out = {}
    for phase, module in (("fit", flow), ("joint", model)):
        module.zero_grad(set_to_none=True)
        est.estimate(torch.Generator(), model, batch, mine, phase).loss.backward()
        sum_gradients(pop, list(module.parameters()), torch.zeros((), dtype=torch.float64))
        out |= {f"{phase}.{n}": p.grad.clone() for n, p in module.named_parameters()}
    return out


def test_two_ranks_sum_both_modules_to_the_single_process_gradient():
    from raybm.distributed.spawn import run_ranks

    single = _gradients(0, 1)
    for ranked in run_ranks(2, _gradients):
        assert ranked.keys() == single.keys()
        for name, value in single.items():
            assert torch.allclose(ranked[name], value, rtol=1e-5, atol=1e-6), name


def test_an_exploit_restores_every_module_and_optimizer_then_applies_the_new_rates(tmp_path):
    """A PBT exploit: a trial continues from the donor's checkpoint with mutated learning
    rates. Every module's parameters and every optimizer's state come back bit for bit (the
    digest Tune's clone check compares), and the next step runs at the new rates."""
    config = load_config(None, FLOW + ["train.n_updates=10", "train.checkpoint_every=10"])
    run = train_run(config, out=tmp_path / "donor", evaluate_at_end=False)
    donor = run.run_dir / "checkpoints" / "step_00000010"
    mutated = load_config(None, FLOW + ["optimizer.lr=0.02", "optimizers.flow.lr=0.1"])
    trainer = make_trainer(mutated, load_data(mutated)[0], resume=donor)
    assert trainer.digest() == checkpoint_digest(donor)
    info = trainer.update()
    assert info["lr/energy"] == 0.02 and info["lr/flow"] == 0.1
    assert {g["lr"] for g in trainer.optimizers["flow"].optimizer.param_groups} == {0.1}


def test_a_module_the_run_does_not_have_is_one_line(tmp_path):
    from raybm.errors import InputError

    with pytest.raises(InputError, match="optimizers.flw: not a trained module of this run "
                                         r"\(its modules: energy, flow\)"):
        flow_trainer(["optimizers.flw.lr=0.1"])


def test_an_estimator_handing_over_gradients_trains_as_its_loss_twin(monkeypatch):
    """Closed-form RBM gradients handed over (``Estimate.grads``) by a plugin against
    autograd through the surrogate loss of plain PCD (its own closed form switched off):
    the same parameters after 50 updates to float tolerance (the same walkers: both draw
    the same sweeps)."""
    from raybm.models.rbm import RBM

    monkeypatch.setattr(RBM, "closed_form_gradient", False)
    common = [PLUGIN, "model.n_hidden=16", "model.labels=false", "algorithm.k=2",
              "algorithm.n_walkers=64", "algorithm.centered=false", "train.batch_size=50",
              "data.max_samples=400", "optimizer.lr=0.05", "train.progress=false",
              "tracking.enabled=false", "sampler.precision=fp32"]
    params = {}
    for name in ("pcd", "pcd_analytic"):
        config = load_config(None, common + [f"algorithm.name={name}"])
        trainer = make_trainer(config, load_data(config)[0])
        run_updates(trainer, 50)
        params[name] = trainer.model.state_dict()
    for key, value in params["pcd"].items():
        assert torch.allclose(params["pcd_analytic"][key], value, rtol=1e-4, atol=1e-5), key
    assert not torch.equal(params["pcd"]["weight"], torch.zeros_like(params["pcd"]["weight"]))


def test_what_a_new_method_reports_and_plots_comes_from_its_declarations(tmp_path):
    """Nothing names the method outside its file: a sweep may rank on what it declares, and
    the end of a run draws the plots it declares."""
    from raybm.evaluate import reported_metrics

    config = load_config(None, FLOW)
    train, _ = load_data(config)
    reported = reported_metrics(config, train)
    assert {k for k, v in reported.items() if v == "live"} >= {
        "loss_fit", "loss_joint", "flow_nll", "lr/energy", "lr/flow", "mode_weight_0",
        "test_loglik_exact"}
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = train_run(load_config(None, [s for s in FLOW if not s.startswith("tracking.")]
                                + ["train.n_updates=10", f"tracking.uri={uri}"]),
                    out=tmp_path / "run")
    assert (run.run_dir / "artifacts" / "flow.png").stat().st_size > 5_000


def test_a_kernel_registered_by_a_plugin_is_built_with_the_runs_modules():
    """A new kernel is a registration too, and its builder sees the trained modules: here
    ULA whose walkers start as draws of the run's flow."""
    config, trainer = flow_trainer(["sampler.name=flow_ula", "train.n_updates=6"])
    kernel = trainer.estimator.kernel
    assert kernel.name == "flow_ula" and kernel.flow is trainer.modules["flow"]
    flow = trainer.modules["flow"]
    x = trainer.walkers.x.double()  # the start: N(mean, diag(scale^2)) of the flow
    assert torch.allclose(x.mean(0), flow.mean.double().detach(), atol=4 / 301**0.5)
    run_updates(trainer, 6)
    assert trainer.step == 6


def test_sampling_a_run_builds_its_kernel_with_the_runs_modules(tmp_path, capsys):
    from raybm.cli import main

    run = train_run(load_config(None, FLOW + ["sampler.name=flow_ula", "train.n_updates=4"]),
                    out=tmp_path / "run", evaluate_at_end=False)
    capsys.readouterr()
    assert main(["sample", str(run.run_dir), "--k", "2", "--n", "5", "--out",
                 str(tmp_path / "s.npz")]) == 0
    assert "2 flow_ula steps from the run's flow per sample" in capsys.readouterr().out

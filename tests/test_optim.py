"""Per-module optimizers (``raybm.optim``): learning-rate schedules at known updates, a
resume mid-schedule continuing it exactly, gradient clipping, Adam's betas, and the research
protocols' schedules written as configs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raybm.checkpoint import load_checkpoint
from raybm.config import OptimizerConfig, ScheduleConfig, load_config
from raybm.optim import ModuleOptimizer, schedule_factor
from raybm.run import train_run


@pytest.mark.parametrize("schedule, expected", [
    ({}, {0: 1.0, 50: 1.0, 99: 1.0}),
    ({"name": "linear"}, {0: 1.0, 50: 0.5, 99: 0.01, 150: 0.0}),
    ({"name": "linear", "final": 0.2}, {0: 1.0, 50: 0.6, 100: 0.2}),
    # FlowMC-EBM: a linear decay over the second half
    ({"name": "linear", "start": 0.5}, {0: 1.0, 49: 1.0, 50: 1.0, 75: 0.5, 100: 0.0}),
    ({"name": "cosine"}, {0: 1.0, 50: 0.5, 100: 0.0}),
    ({"name": "cosine", "final": 0.1}, {25: 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2}),
    ({"warmup": 10}, {0: 0.1, 4: 0.5, 9: 1.0, 10: 1.0, 99: 1.0}),
    ({"name": "linear", "warmup": 10}, {0: 0.1 * 1.0, 9: 1.0 * (1 - 9 / 100), 50: 0.5}),
    ({"name": "linear", "updates": 20}, {10: 0.5, 20: 0.0, 99: 0.0}),
])
def test_schedule_values_at_known_updates(schedule, expected):
    s = ScheduleConfig(**schedule)
    for step, factor in expected.items():
        assert schedule_factor(s, step, 100) == pytest.approx(factor, abs=1e-12), step


def test_a_constant_schedule_is_exactly_the_base_rate():
    """Bit-exact with the runs written before schedules: the factor is 1.0, not a product."""
    assert schedule_factor(ScheduleConfig(), 12345, 10) == 1.0
    module = nn.Linear(3, 2)
    opt = ModuleOptimizer.build("energy", module, OptimizerConfig(lr=0.123), 10)
    opt.prepare(7)
    assert [g["lr"] for g in opt.optimizer.param_groups] == [0.123]


def test_clipping_scales_the_gradient_to_the_norm():
    module = nn.Linear(4, 1, bias=False)
    opt = ModuleOptimizer.build("energy", module, OptimizerConfig(lr=1.0, clip_norm=0.5), 10)
    module.weight.grad = torch.full((1, 4), 3.0)  # norm 6
    opt.clip_()
    assert float(module.weight.grad.norm()) == pytest.approx(0.5, rel=1e-6)
    before = module.weight.detach().clone()
    opt.prepare(0)
    opt.step()  # SGD at lr 1 moves by the clipped gradient
    assert float((before - module.weight.detach()).norm()) == pytest.approx(0.5, rel=1e-6)


def test_adam_betas_come_from_the_config_at_every_step():
    module = nn.Linear(2, 1)
    config = OptimizerConfig(name="adam", betas=(0.0, 0.999))
    opt = ModuleOptimizer.build("energy", module, config, 10)
    opt.optimizer.param_groups[0]["betas"] = (0.9, 0.9)  # as a restored state would hold
    opt.prepare(0)
    assert opt.optimizer.param_groups[0]["betas"] == (0.0, 0.999)


SMALL = ["model.n_hidden=16", "train.batch_size=50", "train.progress=false",
         "train.log_every=5", "data.max_samples=400", "tracking.enabled=false",
         "algorithm.name=pcd", "algorithm.k=2", "optimizer.name=adam", "optimizer.lr=0.05",
         "optimizer.clip_norm=1.0", "train.checkpoint_every=9",
         "optimizer.schedule={name: linear, warmup: 5, start: 0.2, final: 0.1, updates: 30}"]


def test_resume_mid_schedule_continues_the_schedule(tmp_path):
    """Stopped at update 9 (inside the decay) and resumed to 30: the parameters, optimizer
    state and walkers of the straight run, bit for bit; the learning rate logged at the end
    is the schedule's."""
    straight = train_run(load_config(None, SMALL + ["train.n_updates=30"]),
                         out=tmp_path / "straight", evaluate_at_end=False)
    train_run(load_config(None, SMALL + ["train.n_updates=9"]), out=tmp_path / "resumed",
              evaluate_at_end=False)
    train_run(resume=tmp_path / "resumed", overrides=["train.n_updates=30"],
              evaluate_at_end=False)
    a, b = load_checkpoint(straight.run_dir), load_checkpoint(tmp_path / "resumed")
    assert a.step == b.step == 30
    for name, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[name]), name
    assert torch.equal(a.walkers.x, b.walkers.x)
    sa, sb = (c.state["optimizers"]["energy"]["state"] for c in (a, b))
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    # At the horizon: the decay (from 0.2 x 30 = 6) has reached final = 0.1.
    assert b.state["schedules"]["energy"] == {"step": 30, "lr": pytest.approx(0.005)}
    assert a.state["schedules"] == b.state["schedules"]


def test_the_research_schedules_are_configs():
    """The Jarzynski research's MNIST runs (Adam with betas (0, 0.999), clipping at 1, a
    linear decay to 0) and FlowMC-EBM's decay over the second half, as configs."""
    jarzynski = load_config(None, [
        "optimizer.name=adam", "optimizer.betas=[0.0, 0.999]", "optimizer.clip_norm=1.0",
        "optimizer.schedule={name: linear, final: 0.0}"])
    assert jarzynski.optimizer.schedule.name == "linear"
    flowmc = load_config(None, ["optimizer.schedule={name: linear, start: 0.5}",
                                "optimizers.flow.schedule={name: linear, start: 0.5}"])
    assert flowmc.optimizers["flow"].schedule.start == 0.5


@pytest.mark.parametrize("override, key", [
    ("optimizer.schedule.start=1.0", "optimizer.schedule.start"),
    ("optimizer.schedule.name=step", "optimizer.schedule.name"),
    ("optimizer.clip_norm=0", "optimizer.clip_norm"),
    ("optimizer.betas=[0.9, 1.0]", "optimizer.betas.1"),
    ("optimizers.flow.lr=-1", "optimizers.flow.lr"),
])
def test_bad_optimizer_settings_are_one_line(override, key):
    from raybm.errors import InputError

    with pytest.raises(InputError) as err:
        load_config(None, [override])
    assert err.value.field == key and "\n" not in str(err.value)


def test_a_run_records_its_schedules_horizon_so_a_longer_resume_continues_it(tmp_path):
    """A linear decay over the run's train.n_updates (10) is recorded as its horizon: raised
    to 16 on resume, the rate stays at final past update 10 instead of jumping back up."""
    import yaml

    common = [s for s in SMALL if not s.startswith("optimizer.schedule")] + [
        "optimizer.schedule={name: linear, final: 0.1}", "train.log_every=2"]
    run = train_run(load_config(None, common + ["train.n_updates=10"]), out=tmp_path / "r",
                    evaluate_at_end=False)
    recorded = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert recorded["optimizer"]["schedule"]["updates"] == 10
    train_run(resume=run.run_dir, overrides=["train.n_updates=16"], evaluate_at_end=False)
    ckpt = load_checkpoint(run.run_dir)
    assert ckpt.state["schedules"]["energy"]["lr"] == pytest.approx(0.05 * 0.1)

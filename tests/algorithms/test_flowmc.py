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

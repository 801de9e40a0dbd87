"""What a training run shows while it trains (``raybm.console``): the headline metric of
each kind of run, a bar on a terminal, one line per log in a pipe or a file."""

from __future__ import annotations

import io

from raybm.cli import main
from raybm.console import Progress, headline


def test_headline_puts_what_each_kind_of_run_is_judged_by_first():
    ff = {"loss_generation": 0.1, "loss_classification": 0.2, "test_accuracy": 0.9,
          "updates_per_s": 10.0, "step": 5.0}
    assert list(headline(ff)) == ["test_accuracy", "loss_classification", "loss_generation"]
    jarzynski = {"ess": 0.7, "log_z": 3.0, "test_loglik_jarzynski": -2.0, "loss_joint": 0.1,
                 "weight_entropy": 7.0}
    assert list(headline(jarzynski)) == ["test_loglik_jarzynski", "ess", "loss_joint"]
    mixture = {"mode_weight_1": 0.75, "mode_weight_0": 0.25, "test_loglik_exact": -71.0,
               "loss_joint": 0.0, "acceptance": 0.6, "step_size": 0.1}
    assert list(headline(mixture)) == ["test_loglik_exact", "mode_weight_0", "mode_weight_1",
                                       "loss_joint", "acceptance", "step_size"]


def test_progress_in_a_pipe_is_one_line_per_log():
    out = io.StringIO()  # not a terminal
    p = Progress(10, 0, stream=out)
    for step in range(1, 11):
        p.update(step)
        if step % 5 == 0:
            p.log(step, {"test_accuracy": 0.5, "loss_generation": 0.25, "updates_per_s": 3.0})
    p.close()
    assert out.getvalue() == (
        "update 5/10 test_accuracy=0.5 loss_generation=0.25 (3 updates/s)\n"
        "update 10/10 test_accuracy=0.5 loss_generation=0.25 (3 updates/s)\n")


def test_progress_on_a_terminal_is_a_bar_with_the_headline():
    out = io.StringIO()
    p = Progress(4, 0, stream=out, bar=True)
    for step in range(1, 5):
        p.update(step)
    p.log(4, {"test_accuracy": 0.75, "loss_generation": 0.5})
    p.close()
    assert "4/4" in out.getvalue() and "test_accuracy=0.75" in out.getvalue()


def test_train_to_a_file_logs_lines_with_the_live_test_accuracy(tmp_path, capsys):
    """``raybm train ... > log 2>&1``: F&F with labels shows its live test accuracy in one line
    per log and no carriage-return redraws."""
    assert main(["train", "--set", "model.n_hidden=16", "--set", "train.n_updates=10",
                 "--set", "train.log_every=5", "--set", "train.eval_samples=50",
                 "--set", "train.eval_t=[1]", "--set", "train.eval_k_long=5",
                 "--set", "tracking.enabled=false", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("update ")]
    assert [line.split()[1] for line in lines] == ["5/10", "10/10"]
    assert all(" test_accuracy=" in line and " loss_generation=" in line for line in lines)


def test_summary_of_a_run_without_likelihoods_shows_what_it_logged_last(tmp_path, capsys):
    """An MLP on 16-d floats has no closed-form or grid likelihood: the final summary prints
    the losses (and kernel signals) it last logged instead of nothing."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(200, 16)).astype("f4"))
    assert main(["train", "--set", f"data.path={tmp_path / 'x.npy'}", "--set", "model.kind=mlp",
                 "--set", "model.widths=[8]", "--set", "sampler.name=mala",
                 "--set", "algorithm.name=pcd", "--set", "algorithm.k=2",
                 "--set", "train.n_updates=6", "--set", "train.log_every=3",
                 "--set", "train.batch_size=50", "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "loss_joint (last logged)" in out and "acceptance (last logged)" in out

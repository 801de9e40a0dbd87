"""One Tune trial's own behaviour (``raybm.tuning.trial``) outside a sweep."""

from __future__ import annotations

import json

from raybm.config import load_config
from raybm.tuning.trial import announce_exploit


def _checkpoint(tmp_path, run_id: str, overrides: list[str]):
    donor = load_config(None, overrides + ["tracking.run_name=sweep-donor"])
    folder = tmp_path / "checkpoint_000003"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps(
        {"step": 40, "mlflow_run_id": run_id, "config": donor.model_dump()}))
    return folder


def test_a_pbt_exploit_is_announced_with_the_moves_it_made(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "donor-run", ["optimizer.lr=0.05", "algorithm.k=10"])
    mine = load_config(None, ["optimizer.lr=0.06", "algorithm.k=12",
                              "tracking.run_name=sweep-mine"])
    announce_exploit("mine", mine, ckpt, "my-run")
    assert capsys.readouterr().err == (
        "raybm: PBT exploit: trial mine continues from sweep-donor at update 40: "
        "algorithm.k 10 -> 12, optimizer.lr 0.05 -> 0.06\n")


def test_a_trial_continuing_its_own_checkpoint_says_nothing(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "my-run", [])
    announce_exploit("mine", load_config(None, []), ckpt, "my-run")
    assert capsys.readouterr().err == ""

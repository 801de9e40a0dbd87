"""Checkpoints: round trip without pickle, atomic replacement, walker files."""

from __future__ import annotations

import json

import pytest
import torch

from raybm.checkpoint import (
    find_checkpoint,
    load,
    load_checkpoint,
    save_checkpoint,
    set_latest,
    walkers_from_table,
    walkers_to_table,
)
from raybm.errors import InputError
from raybm.models import BernoulliRBM, PottsRBM
from raybm.walkers import WalkerState


@pytest.mark.parametrize("model", [BernoulliRBM(7, 3, 4), PottsRBM(5, 3, 4)],
                         ids=["bernoulli", "potts"])
def test_round_trip(tmp_path, model):
    model.init_parameters(torch.Generator().manual_seed(0), weight_std=0.5)
    gen = torch.Generator().manual_seed(1)
    walkers = WalkerState(
        x=torch.randint(0, model.n_states, (9, model.n_visible), dtype=torch.uint8),
        log_weight=torch.randn(9, dtype=torch.float64),
        label=torch.randint(0, 4, (9,)) if model.n_labels else None,
    )
    opt = torch.optim.Adam(model.parameters())
    model.weight.sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "generator": gen.get_state()}
    path = save_checkpoint(tmp_path / "step_00000005", step=5, model=model, state=state,
                           walkers=walkers, meta={"note": "x"})
    ckpt = load_checkpoint(path)
    assert ckpt.step == 5 and ckpt.meta["note"] == "x"
    for (name, a), b in zip(model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(ckpt.walkers.x, walkers.x)
    assert torch.equal(ckpt.walkers.log_weight, walkers.log_weight)
    assert (ckpt.walkers.label is None) == (walkers.label is None)
    assert torch.equal(ckpt.state["generator"], gen.get_state())
    opt2 = torch.optim.Adam(ckpt.model.parameters())
    opt2.load_state_dict(ckpt.state["optimizer"])


def test_parquet_walkers_one_row_per_walker():
    w = WalkerState(torch.randint(0, 2, (6, 11), dtype=torch.uint8),
                    torch.zeros(6, dtype=torch.float64), torch.arange(6))
    table = walkers_to_table(w)
    assert table.num_rows == 6 and set(table.column_names) == {"x", "log_weight", "label"}
    back = walkers_from_table(table, "t")
    assert torch.equal(back.x, w.x) and torch.equal(back.label, w.label)


def test_resave_same_step_replaces_atomically(tmp_path):
    model = BernoulliRBM(4, 2)
    a = save_checkpoint(tmp_path / "checkpoints" / "step_1", step=1, model=model, state={},
                        walkers=None, meta={"v": 1})
    b = save_checkpoint(tmp_path / "checkpoints" / "step_1", step=1, model=model, state={},
                        walkers=None, meta={"v": 2})
    assert a == b and json.loads((b / "meta.json").read_text())["v"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_1"]


def test_run_directory_latest_pointer(tmp_path):
    model = BernoulliRBM(4, 2)
    for step in (1, 2):
        path = save_checkpoint(tmp_path / "checkpoints" / f"step_{step}", step=step, model=model,
                               state={}, walkers=None, meta={})
        set_latest(tmp_path, path)
    assert find_checkpoint(tmp_path).name == "step_2"
    assert isinstance(load(tmp_path), BernoulliRBM)


def test_half_written_checkpoint_is_never_loaded(tmp_path):
    """A crash mid-write leaves only a ``.tmp-*`` directory, which nothing points to."""
    model = BernoulliRBM(4, 2)
    good = save_checkpoint(tmp_path / "checkpoints" / "step_1", step=1, model=model, state={},
                           walkers=None, meta={})
    set_latest(tmp_path, good)
    (tmp_path / "checkpoints" / "step_2.tmp-999").mkdir()  # what a killed writer leaves
    assert find_checkpoint(tmp_path) == good


def test_corrupt_or_missing_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such run"):
        load_checkpoint(tmp_path / "nope")
    model = BernoulliRBM(4, 2)
    path = save_checkpoint(tmp_path / "c", step=1, model=model, state={}, walkers=None, meta={})
    (path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="state.pt"):
        load_checkpoint(path)
    (path / "meta.json").write_text("{")
    with pytest.raises(InputError, match="meta.json"):
        load_checkpoint(path)


def test_state_file_refuses_pickled_objects(tmp_path):
    """Loading uses weights_only=True: an arbitrary pickled object is refused."""
    model = BernoulliRBM(4, 2)
    path = save_checkpoint(tmp_path / "c", step=1, model=model, state={}, walkers=None, meta={})
    torch.save({"model": model.state_dict(), "evil": object()}, path / "state.pt")
    with pytest.raises(InputError, match="cannot load"):
        load_checkpoint(path)

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


def _sharded(tmp_path, world=2, missing=None):
    """A checkpoint as the Ray workers write it: one Parquet file per shard, rank 0's state."""
    from raybm.checkpoint import write_common, write_shard

    model = BernoulliRBM(6, 3)
    d = tmp_path / "ray" / "checkpoint_2026"
    parts = []
    for rank in range(world):
        w = WalkerState(x=torch.full((3 + rank, 6), rank, dtype=torch.uint8),
                        log_weight=torch.arange(3 + rank, dtype=torch.float64) - rank)
        parts.append(w)
        gen = torch.Generator().manual_seed(rank)
        if rank != missing:
            write_shard(d, rank, world, w, gen.get_state())
    write_common(d, step=7, model=model, state={}, meta={}, world_size=world)
    return d, parts


def test_sharded_checkpoint_restores_every_shard_and_generator(tmp_path):
    d, parts = _sharded(tmp_path)
    assert find_checkpoint(tmp_path) == d  # found in Ray's storage under the run
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.walkers.n_walkers == 7
    for rank in range(2):
        walkers, generator, exact = ckpt.shard(rank, 2)
        assert exact and torch.equal(walkers.x, parts[rank].x)
        assert torch.equal(walkers.log_weight, parts[rank].log_weight)
        assert torch.equal(generator, torch.Generator().manual_seed(rank).get_state())
    # Another number of shards: the same population re-split evenly, generators re-seeded.
    three = [ckpt.shard(r, 3) for r in range(3)]
    assert [w.n_walkers for w, _, _ in three] == [3, 2, 2]
    assert all(g is None and not exact for _, g, exact in three)
    assert torch.equal(torch.cat([w.log_weight for w, _, _ in three]), ckpt.walkers.log_weight)


def test_sharded_checkpoint_missing_a_shard_is_never_used(tmp_path):
    """A worker killed while writing leaves its shard missing: that checkpoint is skipped in
    favour of the previous complete one, and loading it directly is a one-line error."""
    good = save_checkpoint(tmp_path / "checkpoints" / "step_1", step=1, model=BernoulliRBM(6, 3),
                           state={}, walkers=None, meta={})
    set_latest(tmp_path, good)
    partial, _ = _sharded(tmp_path, missing=1)
    assert find_checkpoint(tmp_path) == good
    with pytest.raises(InputError, match="walkers-001-of-002.parquet is missing"):
        load_checkpoint(partial)


def test_newer_complete_ray_checkpoint_wins_over_latest(tmp_path):
    old = save_checkpoint(tmp_path / "checkpoints" / "step_1", step=1, model=BernoulliRBM(6, 3),
                          state={}, walkers=None, meta={})
    set_latest(tmp_path, old)
    d, _ = _sharded(tmp_path)
    assert find_checkpoint(tmp_path) == d


def test_sharded_checkpoint_without_walkers_keeps_each_rank_generator(tmp_path):
    """F&F and CD keep no walkers: each rank's shard file still carries its generator."""
    from raybm.checkpoint import write_common, write_shard

    d = tmp_path / "ckpt"
    for rank in range(2):
        write_shard(d, rank, 2, None, torch.Generator().manual_seed(rank).get_state())
    write_common(d, step=3, model=BernoulliRBM(6, 3), state={}, meta={}, world_size=2)
    ckpt = load_checkpoint(d)
    assert ckpt.walkers is None
    walkers, generator, exact = ckpt.shard(1, 2)
    assert walkers is None and exact
    assert torch.equal(generator, torch.Generator().manual_seed(1).get_state())
    assert ckpt.shard(0, 3)[1:] == (None, False)

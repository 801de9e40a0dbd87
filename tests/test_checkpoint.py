"""Checkpoints: round trip without pickle, atomic replacement, walker files."""

from __future__ import annotations

import json

import pytest
import torch

from raybm.checkpoint import (
    FORMAT_VERSION,
    TIMINGS,
    find_checkpoint,
    load,
    load_checkpoint,
    save_checkpoint,
    set_latest,
    update_timings,
    walkers_from_table,
    walkers_to_table,
)
from raybm.errors import InputError
from raybm.models import BernoulliRBM, PottsRBM
from raybm.walkers import WalkerState, concat_walkers


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


# ------------------------------------------------ walker states of any dtype and shape
# dtype -> (a subnormal, the bits of a NaN with a payload, the integer dtype of its width)
FLOAT_ODDITIES = {
    torch.float64: (1e-310, 0x7FF8000000000ABC, torch.int64),
    torch.float32: (1e-42, 0x7FC00ABC, torch.int32),
    torch.float16: (1e-6, 0x7E0B, torch.int16),
    torch.bfloat16: (1e-40, 0x7FCB, torch.int16),
}


def _odd_floats(dtype: torch.dtype, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    """Random floats plus the values a conversion would lose: -0.0, a subnormal, a NaN with a
    payload (only a byte comparison sees it), infinities."""
    subnormal, nan_bits, bits = FLOAT_ODDITIES[dtype]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 1e3).to(dtype).reshape(-1)
    specials = torch.tensor([-0.0, subnormal, float("inf"), float("-inf")], dtype=dtype)
    x[: len(specials)] = specials
    x.view(bits)[len(specials)] = nan_bits
    return x.reshape(shape)


def _ints(low: int, high: int, dtype: torch.dtype):
    return lambda g, n, shape: torch.randint(low, high, (n, *shape), generator=g, dtype=dtype)


STATES = {  # name -> (per-walker shape, a maker of n such walker states)
    "float32": ((5,), lambda g, n, shape: _odd_floats(torch.float32, (n, *shape), g)),
    "float64": ((5,), lambda g, n, shape: _odd_floats(torch.float64, (n, *shape), g)),
    "float16": ((4,), lambda g, n, shape: _odd_floats(torch.float16, (n, *shape), g)),
    "bfloat16": ((4,), lambda g, n, shape: _odd_floats(torch.bfloat16, (n, *shape), g)),
    "binary": ((7,), _ints(0, 2, torch.uint8)),
    "potts": ((6,), _ints(0, 21, torch.uint8)),
    "int8": ((3,), _ints(-128, 128, torch.int8)),
    "int64": ((3,), _ints(-2**62, 2**62, torch.int64)),
    "image": ((1, 28, 28), lambda g, n, shape: _odd_floats(torch.float32, (n, *shape), g)),
}


def make_walkers(state: str, labelled: bool, seed: int = 0, n: int = 9) -> WalkerState:
    """``n`` walkers of kind ``state`` (a :data:`STATES` key), weighted, labelled or not."""
    g = torch.Generator().manual_seed(seed)
    shape, make = STATES[state]
    return WalkerState(x=make(g, n, shape),
                       log_weight=torch.randn(n, generator=g, dtype=torch.float64) * 40,
                       label=torch.randint(0, 10, (n,), generator=g) if labelled else None)


def assert_same_walkers(got: WalkerState, want: WalkerState) -> None:
    """Bit for bit: dtype, shape and the bytes (NaN payloads included) of every field."""
    assert got.x.dtype == want.x.dtype and got.x.shape == want.x.shape
    assert torch.equal(got.x.contiguous().view(torch.uint8), want.x.contiguous().view(torch.uint8))
    assert got.log_weight.dtype == torch.float64
    assert torch.equal(got.log_weight.view(torch.uint8), want.log_weight.view(torch.uint8))
    assert (got.label is None) == (want.label is None)
    if want.label is not None:
        assert got.label.dtype == torch.int64 and torch.equal(got.label, want.label)
    assert (got.cond is None) == (want.cond is None)
    if want.cond is not None:
        assert got.cond.dtype == want.cond.dtype and got.cond.shape == want.cond.shape
        assert torch.equal(got.cond.contiguous().view(torch.uint8),
                           want.cond.contiguous().view(torch.uint8))


walker_cases = pytest.mark.parametrize("state, labelled", [
    (s, lab) for s in STATES for lab in (False, True)])


@walker_cases
def test_walker_table_round_trips_any_dtype_and_shape(state, labelled):
    w = make_walkers(state, labelled)
    table = walkers_to_table(w)
    meta = table.schema.metadata
    assert meta[b"raybm.x_dtype"] == str(w.x.dtype).removeprefix("torch.").encode()
    assert json.loads(meta[b"raybm.x_shape"]) == list(w.x.shape[1:])
    assert_same_walkers(walkers_from_table(table, "t"), w)
    assert_same_walkers(walkers_from_table(table.slice(2, 5), "t"), w.take(torch.arange(2, 7)))


@pytest.mark.parametrize("cond", [
    torch.tensor([1e-300, 0.5, 2.0, 1e300, 7.0, 0.0, -0.0, 3.25, 1.0], dtype=torch.float64),
    torch.arange(18, dtype=torch.float32).reshape(9, 2) / 7])
@pytest.mark.parametrize("labelled", [False, True])
def test_a_float_condition_round_trips_in_tables_and_checkpoints(tmp_path, cond, labelled):
    """A noise level (or time, or a vector) per walker beside the label: kept bit for bit
    with its dtype and shape, in a walker table, a checkpoint and a sharded checkpoint."""
    from raybm.checkpoint import write_common, write_shard

    w = make_walkers("image", labelled).replace(cond=cond)
    assert_same_walkers(walkers_from_table(walkers_to_table(w), "t"), w)
    path = save_checkpoint(tmp_path / "c", step=1, model=BernoulliRBM(4, 2), state={},
                           walkers=w, meta={})
    assert_same_walkers(load_checkpoint(path).walkers, w)
    sharded = tmp_path / "s"
    for rank in range(2):
        write_shard(sharded, rank, 2, w.take(torch.arange(9)[rank::2]), torch.zeros(3,
                    dtype=torch.uint8))
    write_common(sharded, step=1, model=BernoulliRBM(4, 2), state={}, meta={}, world_size=2)
    back = load_checkpoint(sharded)
    assert_same_walkers(back.walkers, w.take(torch.cat([torch.arange(9)[0::2],
                                                         torch.arange(9)[1::2]])))


@walker_cases
def test_checkpoint_round_trips_any_dtype_and_shape(tmp_path, state, labelled):
    w = make_walkers(state, labelled)
    path = save_checkpoint(tmp_path / "c", step=1, model=BernoulliRBM(4, 2), state={},
                           walkers=w, meta={})
    assert json.loads((path / "meta.json").read_text())["format_version"] == FORMAT_VERSION
    assert_same_walkers(load_checkpoint(path).walkers, w)


@walker_cases
def test_sharded_checkpoint_round_trips_any_dtype_and_shape(tmp_path, state, labelled):
    from raybm.checkpoint import write_common, write_shard

    parts = [make_walkers(state, labelled, seed=rank).take(torch.arange(9 - 2 * rank))
             for rank in range(2)]  # 9 and 7 rows: uneven shards
    for rank, w in enumerate(parts):
        write_shard(tmp_path, rank, 2, w, torch.Generator().manual_seed(rank).get_state())
    write_common(tmp_path, step=3, model=BernoulliRBM(4, 2), state={}, meta={}, world_size=2)
    ckpt = load_checkpoint(tmp_path)
    for rank, w in enumerate(parts):
        walkers, generator, exact = ckpt.shard(rank, 2)
        assert exact and generator is not None
        assert_same_walkers(walkers, w)
    whole = concat_walkers(parts)  # the population in rank order, re-split over 3 shards
    three = [ckpt.shard(r, 3) for r in range(3)]
    assert [w.n_walkers for w, _, _ in three] == [6, 5, 5]
    start = 0
    for walkers, generator, exact in three:
        assert generator is None and not exact
        assert_same_walkers(walkers, whole.take(torch.arange(start, start + walkers.n_walkers)))
        start += walkers.n_walkers


def _version_1_checkpoint(directory, version=1):
    """A checkpoint as format 1 wrote it: uint8 states as bare bytes, no x metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raybm.checkpoint import model_spec

    model = PottsRBM(5, 3, 4)
    directory.mkdir()
    torch.save({"model": model.state_dict()}, directory / "state.pt")
    meta = {"format_version": version, "step": 4, "model": model_spec(model)}
    (directory / "meta.json").write_text(json.dumps(meta))
    x = torch.randint(0, model.n_states, (6, 5), dtype=torch.uint8)
    table = pa.table({
        "x": pa.FixedSizeBinaryArray.from_buffers(pa.binary(5), 6,
                                                  [None, pa.py_buffer(x.numpy().tobytes())]),
        "log_weight": pa.array(torch.arange(6, dtype=torch.float64).numpy()),
    })
    pq.write_table(table, directory / "walkers.parquet")
    return x


def test_version_1_checkpoint_still_loads_as_uint8_rows(tmp_path):
    x = _version_1_checkpoint(tmp_path / "old")
    ckpt = load_checkpoint(tmp_path / "old")
    assert ckpt.walkers.x.dtype == torch.uint8 and torch.equal(ckpt.walkers.x, x)
    assert torch.equal(ckpt.walkers.log_weight, torch.arange(6, dtype=torch.float64))
    assert ckpt.walkers.label is None and isinstance(ckpt.model, PottsRBM)


@pytest.mark.parametrize("version", [99, 0, "2", True, None])
def test_unknown_format_version_is_a_one_line_error(tmp_path, version):
    _version_1_checkpoint(tmp_path / "new", version=version)
    with pytest.raises(InputError, match=r"meta.json: format_version: expected one of 1, 2, 3") as e:
        load_checkpoint(tmp_path / "new")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("key, value, says", [
    (b"raybm.x_dtype", b"complex128", "unknown walker dtype 'complex128'"),
    (b"raybm.x_dtype", b"garbage", "unknown walker dtype 'garbage'"),
    (b"raybm.x_shape", b"[4]", r"\[4\] of float32 is 16 bytes a walker, but x holds 20"),
    (b"raybm.x_shape", b"[2, 3]", r"\[2, 3\] of float32 is 24 bytes a walker"),
    (b"raybm.x_shape", b"[5, -1]", "not a JSON list of non-negative sizes"),
    (b"raybm.x_shape", b"not json", "not a JSON list of non-negative sizes"),
    (b"raybm.x_shape", None, "raybm.x_shape: missing"),
])
def test_corrupt_walker_layout_is_a_one_line_error_naming_the_file(tmp_path, key, value, says):
    import pyarrow.parquet as pq

    path = save_checkpoint(tmp_path / "c", step=1, model=BernoulliRBM(4, 2), state={},
                           walkers=make_walkers("float32", False), meta={})
    wpath = path / "walkers.parquet"
    table = pq.read_table(wpath)
    meta = dict(table.schema.metadata)
    if value is None:
        del meta[key]
    else:
        meta[key] = value
    pq.write_table(table.replace_schema_metadata(meta), wpath)
    with pytest.raises(InputError, match=says) as e:
        load_checkpoint(path)
    assert str(e.value).startswith(str(wpath)) and "\n" not in str(e.value)


def test_timings_are_added_to_not_replaced(tmp_path):
    update_timings(tmp_path, lambda r: r.update(ray_start_s=1.5))
    update_timings(tmp_path, lambda r: r.setdefault("fits", []).append({"train_s": 2.0}))
    update_timings(tmp_path, lambda r: r.setdefault("fits", []).append({"train_s": 3.0}))
    record = json.loads((tmp_path / TIMINGS).read_text())
    assert record == {"ray_start_s": 1.5, "fits": [{"train_s": 2.0}, {"train_s": 3.0}]}
    (tmp_path / TIMINGS).write_text("{half a rec")  # a torn file from an older writer
    update_timings(tmp_path, lambda r: r.update(ray_start_s=0.5))
    assert json.loads((tmp_path / TIMINGS).read_text()) == {"ray_start_s": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == [TIMINGS]

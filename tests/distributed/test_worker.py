"""The worker's pieces that need no Ray: where a restarted worker group continues from, and
the fault-injection hook the Ray tests drive (a malformed ``RAYBM_FAULT_INJECT`` is a one-line
error naming the variable, read by the driver before any worker starts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raybm.algorithms.population import LOCAL
from raybm.checkpoint import write_common, write_shard
from raybm.config import load_config
from raybm.distributed.worker import parse_fault, restore_candidates, restore_trainer
from raybm.errors import InputError
from raybm.train import make_trainer, run_updates


def test_a_well_formed_spec_parses_with_kill_as_the_default_mode():
    assert parse_fault(None) is None and parse_fault("") is None
    assert parse_fault("1:13:/tmp/m") == (1, 13, "/tmp/m", "kill")
    assert parse_fault("0:7:/tmp/m:nan") == (0, 7, "/tmp/m", "nan")
    assert parse_fault("1:10:/tmp/m:checkpoint") == (1, 10, "/tmp/m", "checkpoint")


@pytest.mark.parametrize("spec, field", [("1:13", ""), ("one:13:/tmp/m", "rank:step"),
                                         ("1:13:/tmp/m:explode", "mode"), ("1:2::kill", "")])
def test_a_malformed_spec_is_a_one_line_error(spec, field):
    with pytest.raises(InputError) as err:
        parse_fault(spec)
    assert err.value.where == "RAYBM_FAULT_INJECT" and err.value.field == field
    assert "\n" not in str(err.value)


def _checkpoint(directory: Path, trainer, world: int = 1, truncate: bool = False) -> Path:
    """A checkpoint as the workers write it; ``world`` > 1 leaves the other shards missing."""
    path = write_shard(directory, 0, world, trainer.walkers, trainer.gen.get_state())
    write_common(directory, step=trainer.step, model=trainer.model, state=trainer.state(),
                 meta={}, world_size=world)
    if truncate:  # a kill during Ray's upload of this file
        path.write_bytes(path.read_bytes()[:100])
    return directory


def test_restart_uses_the_newest_checkpoint_that_loads(tmp_path, capsys):
    """Ray may not have registered the newest checkpoint when a worker died: the new group
    takes the newest complete one its own fit persisted (``<run>/ray/<fit>``), skipping an
    incomplete one and one whose shard file is truncated."""
    from raybm.data.digits import load_digits

    config = load_config(None, ["algorithm.name=jarzynski", "algorithm.n_walkers=50",
                                "algorithm.k=1", "model.n_hidden=8", "model.labels=false",
                                "train.batch_size=32", "train.progress=false"])
    train = load_digits()
    trainer = make_trainer(config, train)
    ray_dir = tmp_path / "run" / "ray" / "fit-1"
    run_updates(trainer, 2)
    good = _checkpoint(ray_dir / "checkpoint_a", trainer)
    run_updates(trainer, 4)
    truncated = _checkpoint(ray_dir / "checkpoint_b", trainer, truncate=True)
    run_updates(trainer, 6)
    _checkpoint(ray_dir / "checkpoint_c", trainer, world=2)  # shard 1 never written

    assert restore_candidates(ray_dir, None) == [truncated, good]
    restored, source = restore_trainer(config, train, LOCAL, ray_dir, None)
    assert source == good and restored.step == 2 and restored.walkers.n_walkers == 50
    assert f"skipping checkpoint {truncated}" in capsys.readouterr().err
    # Nothing persisted yet: a fresh start. A --resume point that cannot load: its error.
    assert restore_trainer(config, train, LOCAL, tmp_path / "new", None)[0].step == 0
    # A new fit of the same run (a PBT exploit, a --resume) starts from the checkpoint it was
    # handed, even where an older fit of the run holds newer checkpoints.
    assert restore_candidates(tmp_path / "run" / "ray" / "fit-2", good) == [good]
    with pytest.raises(InputError, match="walkers-000-of-001.parquet: cannot read Parquet"):
        restore_trainer(config, train, LOCAL, tmp_path / "new", str(truncated))

"""raybm's errors cross process boundaries (Ray workers, Tune trials) intact."""

from __future__ import annotations

import pickle

import pytest

from raybm.errors import (DivergenceError, InputError, Interrupted, RaybmError, error_from_record,
                          error_record, find_raybm_error)

ERRORS = [InputError("data/x.npz", "data.path", "file not found"),
          InputError("--set", "", "expected key=value"), DivergenceError("diverged at 8"),
          Interrupted(), RaybmError("distributed training failed")]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_pickling_and_json_records_rebuild_the_same_error(err):
    for back in (pickle.loads(pickle.dumps(err)), error_from_record(error_record(err))):
        assert type(back) is type(err) and str(back) == str(err)
        assert back.exit_code == err.exit_code
        if isinstance(err, InputError):
            assert (back.where, back.field, back.message) == (err.where, err.field, err.message)


def test_the_raybm_error_inside_what_ray_wraps_is_found():
    inner = InputError("f.parquet", "", "cannot read Parquet")

    class Wrapped(Exception):  # as Ray's WorkerGroupError: {rank: exception}
        def __init__(self):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = {1: RuntimeError("gloo"), 0: inner}

    outer = RuntimeError("controller")
    outer.__cause__ = Wrapped()
    assert find_raybm_error(outer) is inner
    assert find_raybm_error(RuntimeError("plain")) is None


def test_a_record_from_another_version_keeps_its_words():
    back = error_from_record({"type": "InputError", "args": ["only one"]})
    assert isinstance(back, RaybmError) and "only one" in str(back)

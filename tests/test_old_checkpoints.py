"""Checkpoints written before the trainer held named modules (format 2, written by
57ec2c9 with tests/fixtures/format2/*/run, 6 updates) load and continue exactly: resumed to
update 9 by this tree, parameters, walkers and MALA's adapted step size equal those of the
same runs taken straight to 9 by the old tree (``expected_step9.npz``): bit for bit on the
CPU that wrote them (an AMD EPYC with AVX2), discrete states exactly everywhere; on a CPU
whose vector kernels round float32 sums in another order (an Intel Xeon with AVX-512 and AMX
differed by up to 8e-7 in the parameters and 6e-6 in the Jarzynski log-weights, which sum
energy differences over updates) within float rounding, far below one update's change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from raybm.checkpoint import load_checkpoint
from raybm.run import train_run

FIXTURES = Path(__file__).parent / "fixtures" / "format2"


@pytest.mark.parametrize("name", ["pcd_adam_rbm", "jarzynski_rbm", "mala_adaptive_gmm"])
def test_a_format_2_run_continues_exactly(tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / name / "run", run)
    meta = json.loads((run / "checkpoints" / "step_00000006" / "meta.json").read_text())
    assert meta["format_version"] == 2
    train_run(resume=run, overrides=["train.n_updates=9"], evaluate_at_end=False)
    ckpt = load_checkpoint(run)
    assert ckpt.step == 9 and ckpt.meta["format_version"] == 3
    with np.load(FIXTURES / name / "expected_step9.npz") as expected:
        for key in expected.files:
            if key.startswith("param."):
                got = ckpt.model.state_dict()[key.removeprefix("param.")]
            elif key == "step_size":
                got = torch.tensor(ckpt.state["kernel"]["step_size"], dtype=torch.float64)
            else:
                got = getattr(ckpt.walkers, key.removeprefix("walkers."))
            want = torch.from_numpy(expected[key])
            if want.is_floating_point():
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=key)
            else:
                assert torch.equal(got, want), key

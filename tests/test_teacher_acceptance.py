"""Acceptance: PCD-10 and F&F-10 students reach the teacher's exact held-out log-likelihood.

The teacher (12 visible, 4 hidden, balanced biases) must be strong: the independent-site model
is required to be >= 0.3 nats per sample worse than the teacher, else the test proves nothing.
Held-out log-likelihoods are exact (enumeration), averaged over 20,000 held-out samples, whose
standard error (~0.01 nats) is far below the 0.1-nat target.
"""

from __future__ import annotations

import pytest

from benchmarks.teacher_rbm import run


@pytest.mark.slow
def test_students_reach_the_teacher():
    r = run(seed=0, n_updates=2000)
    assert r["teacher"] - r["independent"] >= 0.3, "teacher too weak to prove anything"
    assert r["teacher"] - r["pcd"] <= 0.1, r
    assert r["teacher"] - r["kstep"] <= 0.1, r

"""Fixtures shared by the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real data sets live beside the repository (../shared/data), never inside it: a user's
# clone has none, and the tests that read them skip there with this reason (CI has them).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data_file(relative: str) -> Path:
    """The path of a real data file of ``../shared/data``, or skip the calling test saying
    why (README, "Tests that need the real data sets")."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real data file not found: {path} (the project's data sets sit in "
                    "../shared/data beside the repository, as in CI; see the README)")
    return path


@pytest.fixture
def shared_file():
    """``shared_file("mnist/...")``: :func:`shared_data_file` as a fixture."""
    return shared_data_file


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with this machine's CPUs, shut down after the module (skipped, with the
    reason, where Ray cannot start or has fewer than 2 CPUs)."""
    pytest.importorskip("ray")
    import ray

    from raybm.distributed.launch import start_ray

    why, cluster = start_ray(2, use_gpu=False)
    if cluster is None:
        pytest.skip(f"Ray cannot run 2 workers here: {why}")
    yield
    ray.shutdown()

"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest


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

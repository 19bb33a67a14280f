"""Fixtures of the executor tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_session(request):
    """The session's shared local Ray when tests/conftest.py provides one, else our own."""
    import ray

    own = False
    if not ray.is_initialized():
        try:
            request.getfixturevalue("ray_local")
        except pytest.FixtureLookupError:
            ray.init(address="local", num_cpus=2, include_dashboard=False,
                     object_store_memory=256 * 1024 ** 2)
            own = True
    yield
    if own:
        ray.shutdown()


def ray_executor(shards: int, batch_size: int):
    """A RayExecutor of ``shards`` quarter-CPU single-thread shard actors on the CPU."""
    from fishermask.execution.base import ExecutionParams
    from fishermask.execution.ray.executor import RayExecutor

    return RayExecutor(ExecutionParams(backend="ray", shards=shards, cpus_per_shard=0.25,
                                       batch_size=batch_size, device="cpu", threads=1))

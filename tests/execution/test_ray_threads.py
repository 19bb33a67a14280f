"""The Ray actors the executor starts get OMP_WAIT_POLICY=PASSIVE (or the user's choice)."""

from __future__ import annotations

import pytest

from fishermask.config import ExecutionConfig

pytestmark = pytest.mark.integration  # starts Ray actors


def test_shard_actors_wait_passively(ray_local, monkeypatch):
    from fishermask.data import ImageData
    from fishermask.execution.ray.executor import RayExecutor
    import torch

    pool = ImageData(torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.long),
                     ["a", "b"], (0.5,), (0.25,))
    for chosen, want in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if chosen is None:
            monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        else:
            monkeypatch.setenv("OMP_WAIT_POLICY", chosen)
        ex = RayExecutor(ExecutionConfig(backend="ray", shards=2, cpus_per_shard=0.25,
                                         device="cpu"))
        try:
            ex.bind(pool)
            assert [info["omp_wait_policy"] for info in ex.actor_info] == [want, want]
        finally:
            ex.close()

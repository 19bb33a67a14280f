"""The Ray Tune resource request of a trial: one bundle for the trial, one per shard actor."""

from __future__ import annotations

from fishermask.execution.base import ExecutionParams as ExecutionConfig


def test_trial_resources_bundles():
    from fishermask.execution.ray.executor import execution_resources

    pgf = execution_resources(ExecutionConfig(shards=3, cpus_per_shard=2, gpus_per_shard=0.5))
    assert pgf.bundles == [{"CPU": 1}] + [{"CPU": 2, "GPU": 0.5}] * 3
    pgf = execution_resources(ExecutionConfig(shards=2, cpus_per_shard=1))
    assert pgf.bundles == [{"CPU": 1}, {"CPU": 1}, {"CPU": 1}]
    assert execution_resources(ExecutionConfig()).bundles == [{"CPU": 1}]

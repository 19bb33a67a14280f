"""Executors: where per-sample work over the pool runs (in-process, or Ray pool-shard actors)."""

from fishermask.execution.base import PoolExecutor
from fishermask.execution.local import LocalExecutor
from fishermask.execution.ray.executor import RayExecutor

__all__ = ["PoolExecutor", "LocalExecutor", "make_executor"]


def make_executor(cfg) -> PoolExecutor:
    """Build the executor the ``execution:`` parameters
    (:class:`~fishermask.execution.base.ExecutionParams`) ask for."""
    if cfg.use_ray:
        return RayExecutor(cfg)
    return LocalExecutor(device=cfg.device, batch_size=cfg.batch_size,
                         max_memory_gb=cfg.max_memory_gb)

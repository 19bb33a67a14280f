"""Executors: where per-sample work over the pool runs (in this process, or on Ray pool-shard
actors), behind one interface, :class:`~fishermask.execution.base.PoolExecutor`.

Importing this package does not import Ray: :mod:`fishermask.execution.ray` is loaded when a
Ray executor is made.
"""

from fishermask.execution.base import ExecutionParams, PoolExecutor, resolve_device
from fishermask.execution.local import LocalExecutor

__all__ = ["ExecutionParams", "LocalExecutor", "PoolExecutor", "make_executor", "resolve_device"]


def make_executor(cfg: ExecutionParams) -> PoolExecutor:
    """Build the executor the ``execution:`` parameters ask for."""
    if cfg.use_ray:
        from fishermask.execution.ray.executor import RayExecutor

        return RayExecutor(cfg)
    return LocalExecutor(device=cfg.device, batch_size=cfg.batch_size,
                         max_memory_gb=cfg.max_memory_gb)

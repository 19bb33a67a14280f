"""The in-process executor: the whole pool in this process, batches on one device.

What :meth:`Strategy.select <fishermask.strategies.base.Strategy.select>` builds when it is given
no executor, and what the loop uses with ``execution.shards: 1``.
"""

from __future__ import annotations

import numpy as np
import torch

from fishermask.execution.base import BatchFn, PoolExecutor, resolve_device
from fishermask.execution.batches import BatchRunner
from fishermask.kernels._group import LocalResident


class LocalExecutor(PoolExecutor):
    """Runs batch functions over the pool in this process (one shard)."""

    def __init__(self, device: str = "auto", batch_size: int = 256, max_memory_gb: float = 16.0):
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_memory_gb = max_memory_gb
        self.shards = 1
        self.pool = None
        self.model = None

    def bind(self, pool) -> None:
        self.pool = pool

    def set_model(self, model: torch.nn.Module) -> None:
        self.model = model.to(self.device).eval()

    def _runner(self) -> BatchRunner:
        if self.pool is None or self.model is None:
            raise RuntimeError("call bind(pool) and set_model(model) first")
        return BatchRunner(self.pool, self.model, self.device, self.batch_size)

    def map(self, fn: BatchFn, indices: np.ndarray):
        return self._runner().map(fn, indices)

    def sum(self, fn: BatchFn, indices: np.ndarray):
        return self._runner().sum(fn, indices)

    def hold(self, fn: BatchFn, indices: np.ndarray, make, unit: int) -> LocalResident:
        """One shard holding every row (its outputs on the executor's device)."""
        outs = list(self._runner().outputs(fn, indices))
        return LocalResident([make(outs, 0)] if len(indices) else [])


__all__ = ["LocalExecutor"]

"""The in-process executor: the whole pool in this process, batches on one device.

Strategies run their per-sample work through an executor they are given (``map``, ``sum``,
``embed_resident``; the interface is :class:`~fishermask.execution.base.PoolExecutor`).  This one
is what :meth:`Strategy.select <fishermask.strategies.base.Strategy.select>` builds when it is
given none; :class:`fishermask.execution.local.LocalExecutor` is the same class under the
executor interface, used by the loop.
"""

from __future__ import annotations

import numpy as np
import torch

from typing import Any, Callable

from fishermask.kernels.embeddings import cat_embeddings
from fishermask.kernels.reduction import TreeSum, add_outputs, cat_outputs, to_cpu
from fishermask.kernels.resident import LocalGroup, ResidentShard

BatchFn = Callable[[torch.nn.Module, torch.Tensor], Any]


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when a GPU is visible, else cpu; a ValueError for cuda without a GPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but no GPU is visible; use device='auto' (or 'cpu')")
    return torch.device(device)


class InProcessExecutor:
    """Runs batch functions over the pool in this process (see the module docstring)."""

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

    def _batches(self, fn: BatchFn, indices: np.ndarray):
        if self.pool is None or self.model is None:
            raise RuntimeError("call bind(pool) and set_model(model) first")
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), self.batch_size):
            idx = indices[start:start + self.batch_size]
            x = self.pool.inputs(idx).to(self.device)
            yield fn(self.model, x)

    def map(self, fn: BatchFn, indices: np.ndarray):
        return cat_outputs([to_cpu(out) for out in self._batches(fn, indices)])

    def sum(self, fn: BatchFn, indices: np.ndarray):
        tree = TreeSum()  # canonical pairwise order over batches: sharded sums are bit-identical
        for out in self._batches(fn, indices):
            tree.add(add_outputs(None, out))
        return tree.result()

    def embed_resident(self, embed_fn: BatchFn, indices: np.ndarray) -> LocalGroup:
        """One shard holding every row (on the executor's device)."""
        parts = [out for out in self._batches(embed_fn, indices)]
        return LocalGroup(ResidentShard(cat_embeddings(parts), 0))

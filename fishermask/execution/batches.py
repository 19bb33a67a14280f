"""The batch runner: a batch function over pool rows, one batch at a time, on one device.

Shared by the in-process executor and the Ray pool-shard actor, so a batch holds the same rows and
its outputs are combined the same way wherever it runs:

* :meth:`BatchRunner.map` — outputs concatenated in row order, on the CPU;
* :meth:`BatchRunner.sum_nodes` — the nodes of the canonical pairwise tree over batches (one leaf
  per batch, float64), so that sums split over shards add up bit-identically;
* :meth:`BatchRunner.outputs` — the per-batch outputs where they were computed (a resident
  computation's shard keeps them, on the device for the greedy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fishermask.execution.base import BatchFn
from fishermask.kernels._reduction import (add_outputs, cat_outputs, to_cpu, tree_combine,
                                           tree_cover, tree_nodes)


class BatchRunner:
    """``fn(model, x)`` over the rows of ``pool`` in batches of ``batch_size`` on ``device``."""

    def __init__(self, pool, model: torch.nn.Module, device: torch.device, batch_size: int):
        self.pool, self.model, self.device, self.batch_size = pool, model, device, int(batch_size)

    def outputs(self, fn: BatchFn, indices: np.ndarray):
        """``fn``'s output for each batch of the rows ``indices``, in order."""
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), self.batch_size):
            x = self.pool.inputs(indices[start:start + self.batch_size]).to(self.device)
            yield fn(self.model, x)

    def map(self, fn: BatchFn, indices: np.ndarray) -> Any:
        return cat_outputs([to_cpu(out) for out in self.outputs(fn, indices)])

    def sum_nodes(self, fn: BatchFn, indices: np.ndarray, first: int, last: int,
                  n_leaves: int) -> dict:
        """Tree nodes over the batches (leaves) [first, last) of a sum over ``n_leaves`` batches;
        ``indices`` are the rows of exactly those batches."""
        leaves = (add_outputs(None, out) for out in self.outputs(fn, indices))
        return tree_nodes(tree_cover(first, last, n_leaves), n_leaves, leaves)

    def sum(self, fn: BatchFn, indices: np.ndarray) -> Any:
        """The whole tree's root: Σ over the rows ``indices`` (None for no rows)."""
        n_leaves = -(-len(indices) // self.batch_size)
        return tree_combine(self.sum_nodes(fn, indices, 0, n_leaves, n_leaves), n_leaves)


__all__ = ["BatchRunner"]

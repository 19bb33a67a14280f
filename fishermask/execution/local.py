"""In-process executor: the whole pool in this process, batches on one device."""

from __future__ import annotations

import time

import numpy as np
import torch

from fishermask.execution.base import (BatchFn, PoolExecutor, TreeSum, add_outputs, cat_outputs,
                                       check_memory, fisher_leaves, greedy_memory_gb,
                                       resolve_device, rows_of)


def _to_cpu(out):
    if isinstance(out, dict):
        return {k: v.detach().cpu() for k, v in out.items()}
    return out.detach().cpu()


class LocalExecutor(PoolExecutor):
    def __init__(self, device: str = "auto", batch_size: int = 256, max_memory_gb: float = 16.0):
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_memory_gb = max_memory_gb
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
        return cat_outputs([_to_cpu(out) for out in self._batches(fn, indices)])

    def sum(self, fn: BatchFn, indices: np.ndarray):
        tree = TreeSum()  # canonical pairwise order over batches: sharded sums are bit-identical
        for out in self._batches(fn, indices):
            tree.add(add_outputs(None, out))
        return tree.result()

    def _embed(self, embed_fn, indices, C, k):
        V = self.map(embed_fn, indices)
        return V if len(indices) else torch.zeros(0, C, k)

    def fisher_greedy(self, embed_fn, *, candidates, labeled, n, fisher_target="dense", lam=1.0,
                      oversample=1, weighting="bait"):
        from fishermask.selection import fisher_greedy

        candidates = np.sort(np.asarray(candidates, dtype=np.int64))
        labeled = np.sort(np.asarray(labeled, dtype=np.int64))
        N = len(self.pool)
        C, k = self.pool.num_classes, int(embed_fn.k)
        need = greedy_memory_gb(N, len(candidates), C, k, fisher_target)
        check_memory(need, self.max_memory_gb, what=f"the Fisher greedy (pool {N} × C {C} × k {k})")
        rest = np.setdiff1d(np.arange(N), candidates)
        t0 = time.perf_counter()
        # canonical layout (reproduced by the Ray shards): candidates, then the other pool rows
        V_c = self._embed(embed_fn, candidates, C, k)
        V_r = self._embed(embed_fn, rest, C, k)
        t1 = time.perf_counter()
        tree = TreeSum()
        for V in (V_c, V_r):
            for leaf in fisher_leaves(V, fisher_target):
                tree.add(leaf)
        F = (tree.result() / N).to(torch.float32)
        t2 = time.perf_counter()
        V_lab = rows_of(labeled, [(candidates, V_c), (rest, V_r)], (C, k), V_c.dtype)
        del V_r
        picks = fisher_greedy(V_c, V_lab, F, n, lam=lam, oversample=oversample,
                              weighting=weighting)
        t3 = time.perf_counter()
        info = {"gradients_seconds": t1 - t0, "fisher_seconds": t2 - t1,
                "greedy_seconds": t3 - t2, "memory_estimate_gb": need, "k": k}
        return candidates[np.asarray(picks, dtype=np.int64)], info

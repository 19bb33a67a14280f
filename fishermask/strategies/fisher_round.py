"""One BAIT/FisherMask round from executor primitives, the same code for any executor.

1. ``embed_resident``: the candidates' embeddings, kept where they were computed (CHUNK-aligned
   shards); ``map``: the labeled rows' embeddings (they go into M on the driver).
2. The target F = (1/|X|) Σ_{x∈X} V_xᵀV_x over the pool, as three canonical float64 trees
   (candidates: FISHER_BLOCK leaves on the shards; labeled: on the driver; the other pool rows:
   the executor's ``sum``), so F is bit-identical for any number of shards.
3. The greedy: :func:`~fishermask.kernels._driver.run_greedy` drives the resident shards' group
   (one round trip per step) with a :class:`~fishermask.kernels._driver.GreedyDriver`.

The strategy's public edge (:meth:`Strategy.select`, :meth:`Strategy.run_round` and the
parameter models) has checked ``n``, ``lam``, ``oversample`` and ``weighting``: nothing here
checks them again.
"""

from __future__ import annotations

import time

import numpy as np

from fishermask.execution.base import PoolExecutor
from fishermask.kernels._driver import GreedyDriver, check_memory, greedy_memory_gb, run_greedy
from fishermask.kernels._reduction import FISHER_BLOCK, TreeSum, leaf_count, tree_combine
from fishermask.kernels._symmetric import mirror_upper
from fishermask.kernels.embeddings import cat_embeddings
from fishermask.kernels.greedy import COMPUTE_DTYPES


class _GramSum:
    """Batch fn: Σ_x V_xᵀV_x over a batch (dense, or its diagonal)."""

    def __init__(self, embed_fn, diagonal: bool):
        self.embed_fn, self.diagonal = embed_fn, diagonal

    def __call__(self, model, x):
        return self.embed_fn(model, x).gram(self.diagonal, upper=True)


def fisher_round(ex: PoolExecutor, embed_fn, *, candidates, labeled, n: int,
                 fisher_target: str = "dense", lam: float = 1.0, oversample: int = 1,
                 weighting: str = "bait", compute_dtype: str = "float32"):
    """Embed, build F, run the greedy (its large products in ``compute_dtype``); returns (picked
    pool indices in order of addition, info with phase seconds and the greedy's diagnostics)."""
    cand = np.unique(np.asarray(candidates, dtype=np.int64))
    lab = np.unique(np.asarray(labeled, dtype=np.int64))
    num_pool = len(ex.pool)
    num_c, k = ex.pool.num_classes, int(embed_fn.k)
    rows = getattr(embed_fn, "num_rows", num_c)  # C, or c with top-c classes
    shards = ex.shards
    need = greedy_memory_gb(-(-len(cand) // shards), int(embed_fn.row_bytes), rows, k,
                            fisher_target)
    check_memory(need, ex.max_memory_gb, shards=shards,
                 what=f"the Fisher greedy (pool {num_pool}, {len(cand)} candidates over {shards} "
                      f"shard{'s' if shards != 1 else ''}, C {num_c}, k {k})")
    info = {"gradients_seconds": 0.0, "fisher_seconds": 0.0, "greedy_seconds": 0.0,
            "memory_estimate_gb": need, "k": k, "shards": shards}
    if n == 0:
        return np.zeros(0, dtype=np.int64), info
    diagonal = fisher_target == "diag"
    t0 = time.perf_counter()
    group = ex.embed_resident(embed_fn, cand)
    try:
        v_lab = cat_embeddings([ex.map(embed_fn, lab)]) if len(lab) else None
        t1 = time.perf_counter()
        n_leaves = leaf_count(len(cand))
        total = tree_combine(group.gram_nodes(n_leaves, diagonal), n_leaves)
        if v_lab is not None:
            tree = TreeSum()
            for start in range(0, len(v_lab), FISHER_BLOCK):
                tree.add(v_lab.rows(slice(start, start + FISHER_BLOCK)).gram(diagonal,
                                                                             upper=True))
            total = total + tree.result()
        other = np.setdiff1d(np.arange(num_pool), np.concatenate([cand, lab]))
        if len(other):
            total = total + ex.sum(_GramSum(embed_fn, diagonal), other)
        # the sums are valid in their upper triangle (BLAS's dsyrk): one mirroring, at the end
        fisher = (total if diagonal else mirror_upper(total)) / num_pool
        t2 = time.perf_counter()
        # the driver's k×k work on the executor's device (a GPU when the pool is embedded there)
        driver = GreedyDriver(v_lab, fisher, n, lam=lam, weighting=weighting, k=k,
                              device=ex.device, compute_dtype=COMPUTE_DTYPES[compute_dtype])
        group.start(driver.fisher, driver.w_s, driver.compute_dtype)
        order, ginfo = run_greedy(group, driver, len(cand), n, oversample)
        t3 = time.perf_counter()
    finally:
        group.close()
    info.update(gradients_seconds=t1 - t0, fisher_seconds=t2 - t1, greedy_seconds=t3 - t2,
                greedy_steps=ginfo["steps"], greedy_rebuilds=ginfo["rebuilds"],
                greedy_overrides=ginfo["overrides"], greedy_direct_solves=ginfo["direct_solves"],
                greedy_contenders=ginfo["contenders"],
                greedy_float64_resets=ginfo["float64_resets"],
                objective=ginfo["objective"], recoveries=group.recoveries)
    return cand[np.asarray(order, dtype=np.int64)], info


__all__ = ["fisher_round"]

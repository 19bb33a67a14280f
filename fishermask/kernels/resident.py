"""Resident embeddings: a shard of pool rows embedded once and kept where they were computed.

:meth:`PoolExecutor.embed_resident` splits a sorted index list into CHUNK-aligned ranges, one per
shard; each shard embeds its range with the strategy's batch function and keeps the result in a
:class:`ResidentShard`.  The strategy then drives the shards through ``group.call(method, *args)``
(every shard, results in shard order): the target-Fisher tree nodes over the resident rows, then
the greedy (:class:`~fishermask.kernels.greedy_shard.GreedyShard` methods).  The same code runs
in-process (:class:`LocalGroup`, one shard) and on Ray actors, with identical results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fishermask.kernels.embeddings import FisherEmbeddings, cat_embeddings
from fishermask.kernels.reduction import (FISHER_BLOCK, TreeSum, leaf_count, tree_cover,
                                         tree_node_range)
from fishermask.kernels.greedy_shard import GreedyShard

MUTATING = frozenset({"start", "reset", "advance", "override", "mark"})
"""Methods that change a shard's state (a restarted shard replays them in order)."""


class ResidentShard:
    """Embeddings of the global rows [offset, offset + m) of one index list, plus the greedy
    state built on them."""

    def __init__(self, emb: FisherEmbeddings, offset: int):
        self.emb, self.offset = emb, int(offset)
        self.state: GreedyShard | None = None

    def __len__(self) -> int:
        return 0 if self.emb is None else len(self.emb)

    # ------------------------------------------------------------------ target Fisher
    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        """Tree nodes of Σ V_xᵀV_x over this shard's leaves (FISHER_BLOCK rows each; ``offset`` is
        a multiple of FISHER_BLOCK) in the tree over ``n_leaves`` leaves."""
        first = self.offset // FISHER_BLOCK
        last = -(-(self.offset + len(self)) // FISHER_BLOCK) if len(self) else first
        def leaves():
            for start in range(0, len(self), FISHER_BLOCK):
                yield self.emb.rows(slice(start, start + FISHER_BLOCK)).gram(diagonal)

        it, out = leaves(), {}
        for node in tree_cover(first, last, n_leaves):
            tree = TreeSum()
            for _ in tree_node_range(node, n_leaves):
                tree.add(next(it))
            out[node] = tree.result().cpu()  # sums stay on the device; one copy per node
        return out

    # ------------------------------------------------------------------ greedy
    def start(self, fisher: torch.Tensor, w_s: float) -> None:
        self.state = None if not len(self) else GreedyShard(self.emb, self.offset, fisher, w_s)

    def _call(self, method: str, *args):
        return None if self.state is None else getattr(self.state, method)(*args)

    def reset(self, a_mat, forward):
        return self._call("reset", a_mat, forward)

    def advance(self, update, forward):
        return self._call("advance", update, forward)

    def override(self, g, score, forward):
        return self._call("override", g, score, forward)

    def mark(self, g, sign):
        return self._call("mark", g, sign)

    def nbytes(self) -> int:
        return 0 if self.emb is None else self.emb.nbytes()


class LocalGroup:
    """One in-process resident shard behind the ``call`` interface."""

    def __init__(self, shard: ResidentShard):
        self.shards = [shard]
        self.bounds = [(0, len(shard))]

    def call(self, method: str, *args) -> list[Any]:
        return [getattr(s, method)(*args) for s in self.shards]

    def close(self) -> None:
        self.shards = []


def gram_leaf_ranges(bounds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The FISHER_BLOCK leaves [first, last) of each shard's rows [a, b) (a multiple of the
    block at every shard boundary)."""
    out = []
    for a, b in bounds:
        first = a // FISHER_BLOCK
        out.append((first, -(-b // FISHER_BLOCK) if b > a else first))
    return out


def sorted_unique(indices) -> np.ndarray:
    return np.unique(np.asarray(indices, dtype=np.int64))


__all__ = ["LocalGroup", "MUTATING", "ResidentShard", "cat_embeddings", "gram_leaf_ranges",
           "leaf_count", "sorted_unique"]

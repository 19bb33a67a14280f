"""The typed group of a greedy's resident shards, and its in-process implementation.

A :class:`ShardGroup` is what a strategy and the greedy driver talk to: its methods are the shard
operations (:class:`~fishermask.kernels._shard.GreedyShard`'s), applied to every shard that holds
rows, with the results in shard order.  :class:`LocalShardGroup` runs them in this process;
``fishermask.execution.ray.group.RayShardGroup`` forwards them to Ray actors (and is the only place
that knows which of them change a shard's state, to replay them after an actor restart).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import torch
from torch import Tensor

from fishermask.kernels._reduction import merge_nodes
from fishermask.kernels._shard import Best, GreedyShard
from fishermask.kernels.embeddings import FisherEmbeddings

Report = Optional[Best]
"""A shard's best candidate: (maintained score, global index, its embedding row) with the
runner-up's score (:class:`~fishermask.kernels._shard.Best`), or None."""

Candidate = tuple[float, int, FisherEmbeddings]
"""(maintained score, global index, embedding row) of one candidate."""


class ShardGroup(ABC):
    """The candidates of one greedy round, split into contiguous shards (``bounds``: each shard's
    [start, stop) in the candidate list, boundaries on CHUNK multiples)."""

    bounds: list[tuple[int, int]]
    recoveries: int = 0
    """Shard failures recovered from during the round (Ray actors restarted)."""

    @abstractmethod
    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        """The tree nodes of Σ_x V_xᵀV_x over the candidates (FISHER_BLOCK rows per leaf, in the
        tree over ``n_leaves`` leaves), from every shard."""

    @abstractmethod
    def start(self, fisher: Tensor, w_s: float, compute_dtype=torch.float64) -> None:
        """Every shard: the round's target F, weight w_S and the dtype of the large products
        (state zeroed)."""

    @abstractmethod
    def reset(self, a_mat: Tensor, forward: bool, compute_dtype=None,
              low_rank=None) -> list[Report]:
        """Every shard: P, Q from A (in ``compute_dtype`` from now on, unless None; ``low_rank``:
        A's Woodbury form, :meth:`GreedyShard.reset`); each shard's best candidate of direction
        ``forward``."""

    @abstractmethod
    def advance(self, update, forward: bool) -> list[Report]:
        """Every shard: apply the last winner's update (or None); each shard's best."""

    @abstractmethod
    def override(self, g: int, score: float, forward: bool) -> list[Report]:
        """The shard holding candidate ``g``: replace its maintained score; each shard's best."""

    @abstractmethod
    def contenders(self, threshold: float, forward: bool) -> list[Candidate]:
        """Every eligible candidate of direction ``forward`` whose maintained score is ≥
        ``threshold``, from every shard, in index order (reads only)."""

    def close(self) -> None:
        """Free the shards' memory."""


class LocalShardGroup(ShardGroup):
    """Shards held in this process (one with ``execution.shards: 1``; tests also build several)."""

    def __init__(self, shards: list[GreedyShard]):
        self.shards = [s for s in shards if len(s)]
        self.bounds = [(s.offset, s.offset + len(s)) for s in shards]

    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        return merge_nodes(s.gram_nodes(n_leaves, diagonal) for s in self.shards)

    def start(self, fisher: Tensor, w_s: float, compute_dtype=torch.float64) -> None:
        for s in self.shards:
            s.start(fisher, w_s, compute_dtype)

    def reset(self, a_mat: Tensor, forward: bool, compute_dtype=None,
              low_rank=None) -> list[Report]:
        return [s.reset(a_mat, forward, compute_dtype, low_rank) for s in self.shards]

    def advance(self, update, forward: bool) -> list[Report]:
        return [s.advance(update, forward) for s in self.shards]

    def override(self, g: int, score: float, forward: bool) -> list[Report]:
        return [s.override(g, score, forward) for s in self.shards]

    def contenders(self, threshold: float, forward: bool) -> list[Candidate]:
        return [c for s in self.shards for c in s.contenders(threshold, forward)]

    def close(self) -> None:
        self.shards = []


__all__ = ["Candidate", "LocalShardGroup", "Report", "ShardGroup"]

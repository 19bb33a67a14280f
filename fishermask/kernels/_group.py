"""Rows kept where they were computed, and the typed group of a greedy's resident shards.

A :class:`Resident` is a pool computation whose per-row outputs stay on the shards that computed
them (contiguous ranges of the caller's index list), each shard's part held by a *shard object*
(a :class:`~fishermask.kernels._shard.GreedyShard`, a k-center or BADGE shard of
:mod:`fishermask.kernels.diversity`).  The only way to reach them is :meth:`Resident.run`: one
operation, the shard class's own function, applied to every shard that holds rows, results in
shard order.  An operation that changes a shard's state says so (``changes=True``): a Ray resident
logs those calls and replays them on an actor that was restarted, so the result of a selection
does not depend on failures.  :class:`LocalResident` holds its shards in this process.

:class:`ShardGroup` is what the Fisher greedy driver talks to: the :class:`GreedyShard` operations
over a resident, typed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional

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


class Resident(ABC):
    """Per-row state split into contiguous shards (``bounds``: each shard's [start, stop) in the
    caller's index list; the shard objects know their ``offset``)."""

    bounds: list[tuple[int, int]]

    @property
    def recoveries(self) -> int:
        """Shard failures recovered from since the rows were computed (Ray actors restarted)."""
        return 0

    @abstractmethod
    def run(self, op: Callable, *args, changes: bool = False) -> list:
        """``op(shard, *args)`` on every shard that holds rows, the results in shard order;
        ``changes``: the operation changes the shards' state (replayed after a restart)."""

    def close(self) -> None:
        """Free the shards' memory."""


class LocalResident(Resident):
    """Shard objects held in this process (one with ``execution.shards: 1``; tests build several)."""

    def __init__(self, shards: list):
        self.shards = [s for s in shards if len(s)]
        self.bounds = [(s.offset, s.offset + len(s)) for s in shards]

    def run(self, op: Callable, *args, changes: bool = False) -> list:
        return [op(s, *args) for s in self.shards]

    def close(self) -> None:
        self.shards = []


class ShardGroup:
    """The candidates of one Fisher greedy round on a :class:`Resident` of
    :class:`GreedyShard` s (boundaries on CHUNK multiples); its methods are the shard operations,
    results in shard order."""

    def __init__(self, resident: Resident):
        self.resident = resident
        self.steps = 0
        """advance() calls so far (the greedy's steps)."""
        self.stacked_rows: Optional[int] = None
        """The largest shard's candidates × C (known once :meth:`start` ran)."""

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return self.resident.bounds

    @property
    def recoveries(self) -> int:
        """Shard failures recovered from during the round (Ray actors restarted)."""
        return self.resident.recoveries

    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        """The tree nodes of Σ_x V_xᵀV_x over the candidates (FISHER_BLOCK rows per leaf, in the
        tree over ``n_leaves`` leaves), from every shard."""
        return merge_nodes(self.resident.run(GreedyShard.gram_nodes, n_leaves, diagonal))

    def start(self, fisher: Tensor, w_s: float, compute_dtype=torch.float64) -> None:
        """Every shard: the round's target F, weight w_S and the dtype of the large products
        (state zeroed); returns the largest shard's stacked rows (candidates × C)."""
        sizes = self.resident.run(GreedyShard.start, fisher, w_s, compute_dtype, changes=True)
        self.stacked_rows = max(sizes, default=0)
        return self.stacked_rows

    def reset(self, a_mat: Optional[Tensor], forward: bool, compute_dtype=None,
              form=None) -> list[Report]:
        """Every shard: P, Q from A (in ``compute_dtype`` from now on, unless None; ``form``: A's
        eigen or Woodbury form, :meth:`GreedyShard.reset`); each shard's best candidate of
        direction ``forward``."""
        return self.resident.run(GreedyShard.reset, a_mat, forward, compute_dtype, form,
                                 changes=True)

    def advance(self, update, forward: bool) -> list[Report]:
        """Every shard: apply the last winner's update (or None); each shard's best."""
        out = self.resident.run(GreedyShard.advance, update, forward, changes=True)
        self.steps += 1
        return out

    def override(self, g: int, score: float, forward: bool) -> list[Report]:
        """The shard holding candidate ``g``: replace its maintained score; each shard's best."""
        return self.resident.run(GreedyShard.override, g, score, forward, changes=True)

    def contenders(self, threshold: float, forward: bool) -> list[Candidate]:
        """Every eligible candidate of direction ``forward`` whose maintained score is ≥
        ``threshold``, from every shard, in index order (reads only)."""
        return [c for part in self.resident.run(GreedyShard.contenders, threshold, forward)
                for c in part]

    def close(self) -> None:
        """Free the shards' memory."""
        self.resident.close()


class LocalShardGroup(ShardGroup):
    """A greedy's shards held in this process."""

    def __init__(self, shards: list[GreedyShard]):
        super().__init__(LocalResident(shards))

    @property
    def shards(self) -> list[GreedyShard]:
        return self.resident.shards


__all__ = ["Candidate", "LocalResident", "LocalShardGroup", "Report", "Resident", "ShardGroup"]

"""The Ray implementation of the resident shard group (:meth:`RayExecutor.embed_resident`).

Each actor embeds its range of the index list and keeps it as a
:class:`~fishermask.kernels._shard.GreedyShard` under a round key.  Every operation of the
:class:`~fishermask.kernels._group.ShardGroup` is forwarded to the actors that hold rows as the
shard's own function (``GreedyShard.reset`` …, never a name in a string), its arguments put in the
object store once, the results in shard order.

The operations that change a shard's state are marked :func:`replayed` here, where they are
defined: their calls are logged, and when an actor dies Ray restarts it, the driver re-embeds its
range and replays the log, then re-sends the failed call, so the round's result does not change.
"""

from __future__ import annotations

import functools
import uuid

import numpy as np

import torch

from fishermask.kernels._group import Candidate, Report, ShardGroup
from fishermask.kernels._reduction import merge_nodes
from fishermask.kernels._shard import GreedyShard


def replayed(method):
    """Mark a group operation that changes the shards' state: the calls it sends are logged and
    replayed, in order, on an actor that was restarted."""

    @functools.wraps(method)
    def logged(self, *args):
        self._logging = True
        try:
            return method(self, *args)
        finally:
            self._logging = False

    logged.replayed = True
    return logged


class RayShardGroup(ShardGroup):
    def __init__(self, ex, embed_fn, indices: np.ndarray, bounds: list[tuple[int, int]]):
        import ray

        self.ex, self.indices, self.bounds = ex, indices, bounds
        self.key = uuid.uuid4().hex
        self.refs = ex.refs()
        self.fn_ref = ray.put(embed_fn)
        self.active = [j for j, (a, b) in enumerate(bounds) if b > a]
        self.log: list = []
        self._logging = False
        self.recoveries0 = ex.recoveries
        self.steps = 0
        pending = {j: self._embed(j) for j in self.active}
        ex.gather(lambda j: pending.pop(j) if j in pending else self._embed(j), self.active)

    @property
    def recoveries(self) -> int:
        return self.ex.recoveries - self.recoveries0

    def _embed(self, j: int):
        a, b = self.bounds[j]
        return self.ex.actors[j].resident_embed.remote(self.key, self.refs, self.fn_ref,
                                                       self.indices[a:b], a)

    def _restore(self, j: int) -> None:
        """A restarted actor: embed its rows again and replay the state-changing calls."""
        import ray

        ray.get(self._embed(j))
        if self.log:
            ray.get(self.ex.actors[j].resident_replay.remote(self.key, self.log))

    def _run(self, op, *args) -> list:
        """``op(shard, *args)`` on every shard that holds rows, results in shard order."""
        import ray

        ref = ray.put(args)
        out = self.ex.gather(
            lambda j: self.ex.actors[j].resident_call.remote(self.key, op, ref),
            self.active, restore=self._restore)
        if self._logging:
            self.log.append((op, ref))
        return out

    # ------------------------------------------------------------------ the operations
    def gram_nodes(self, n_leaves: int, diagonal: bool) -> dict:
        return merge_nodes(self._run(GreedyShard.gram_nodes, n_leaves, diagonal))

    @replayed
    def start(self, fisher, w_s: float, compute_dtype=torch.float64) -> None:
        self._run(GreedyShard.start, fisher, w_s, compute_dtype)

    @replayed
    def reset(self, a_mat, forward: bool, compute_dtype=None, low_rank=None) -> list[Report]:
        return self._run(GreedyShard.reset, a_mat, forward, compute_dtype, low_rank)

    @replayed
    def advance(self, update, forward: bool) -> list[Report]:
        out = self._run(GreedyShard.advance, update, forward)
        self.steps += 1
        return out

    @replayed
    def override(self, g: int, score: float, forward: bool) -> list[Report]:
        return self._run(GreedyShard.override, g, score, forward)

    def contenders(self, threshold: float, forward: bool) -> list[Candidate]:
        return [c for part in self._run(GreedyShard.contenders, threshold, forward) for c in part]

    def close(self) -> None:
        import ray

        try:
            ray.get([self.ex.actors[j].resident_end.remote(self.key) for j in self.active],
                    timeout=60)
        except Exception:  # a dead actor has nothing to free
            pass
        self.log = []


__all__ = ["RayShardGroup", "replayed"]

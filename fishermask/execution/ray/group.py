"""The driver's side of resident shards on Ray actors (:meth:`RayExecutor.embed_resident`).

Each actor embeds its range of the index list and keeps a
:class:`~fishermask.kernels.resident.ResidentShard` under a round key.  ``call(method, *args)``
puts the arguments in the object store once, runs the method on every actor that holds rows, and
returns the results in shard order.  Calls that change a shard's state (``MUTATING``) are logged;
when an actor dies, Ray restarts it, the driver re-embeds its range and replays the log, then
re-sends the failed call, so the round's result does not change.
"""

from __future__ import annotations

import uuid

import numpy as np

from fishermask.kernels.resident import MUTATING


class RayGroup:
    def __init__(self, ex, embed_fn, indices: np.ndarray, bounds: list[tuple[int, int]]):
        import ray

        self.ex, self.indices, self.bounds = ex, indices, bounds
        self.key = uuid.uuid4().hex
        self.refs = ex.refs()
        self.fn_ref = ray.put(embed_fn)
        self.active = [j for j, (a, b) in enumerate(bounds) if b > a]
        self.log: list = []
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

    def call(self, method: str, *args) -> list:
        import ray

        ref = ray.put(args)
        out = self.ex.gather(
            lambda j: self.ex.actors[j].resident_call.remote(self.key, method, ref),
            self.active, restore=self._restore)
        if method in MUTATING:
            self.log.append((method, ref))
        if method == "advance":
            self.steps += 1
        return out

    def close(self) -> None:
        import ray

        try:
            ray.get([self.ex.actors[j].resident_end.remote(self.key) for j in self.active],
                    timeout=60)
        except Exception:  # a dead actor has nothing to free
            pass
        self.log = []


__all__ = ["RayGroup"]

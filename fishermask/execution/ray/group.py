"""The Ray implementation of a resident computation (:meth:`RayExecutor.hold`).

Each actor computes its range of the index list and keeps the outputs as a shard object (built on
the actor by the caller's ``make``) under a key.  Every :meth:`Resident.run` is forwarded to the
actors that hold rows as the shard class's own function (``GreedyShard.reset``,
``KCenterShard.pick`` …, never a name in a string), its arguments put in the object store once,
the results in shard order.

The calls that change a shard's state (``changes=True``) are logged, and when an actor dies Ray
restarts it, the driver recomputes its range and replays the log, then re-sends the failed call,
so the result of the selection does not change.
"""

from __future__ import annotations

import uuid
from typing import Callable

import numpy as np

from fishermask.kernels._group import Resident


class RayResident(Resident):
    def __init__(self, ex, fn, indices: np.ndarray, bounds: list[tuple[int, int]],
                 make: Callable):
        import ray

        self.ex, self.indices, self.bounds = ex, indices, bounds
        self.key = uuid.uuid4().hex
        self.refs = ex.refs()
        self.fn_ref, self.make_ref = ray.put(fn), ray.put(make)
        self.active = [j for j, (a, b) in enumerate(bounds) if b > a]
        self.log: list = []
        self.recoveries0 = ex.recoveries
        pending = {j: self._compute(j) for j in self.active}
        ex.gather(lambda j: pending.pop(j) if j in pending else self._compute(j), self.active)

    @property
    def recoveries(self) -> int:
        return self.ex.recoveries - self.recoveries0

    def _compute(self, j: int):
        a, b = self.bounds[j]
        return self.ex.actors[j].resident_compute.remote(self.key, self.refs, self.fn_ref,
                                                         self.indices[a:b], a, self.make_ref)

    def _restore(self, j: int) -> None:
        """A restarted actor: compute its rows again and replay the state-changing calls."""
        import ray

        ray.get(self._compute(j))
        if self.log:
            ray.get(self.ex.actors[j].resident_replay.remote(self.key, self.log))

    def run(self, op: Callable, *args, changes: bool = False) -> list:
        import ray

        ref = ray.put(args)
        out = self.ex.gather(
            lambda j: self.ex.actors[j].resident_call.remote(self.key, op, ref),
            self.active, restore=self._restore)
        if changes:
            self.log.append((op, ref))
        return out

    def close(self) -> None:
        import ray

        try:
            ray.get([self.ex.actors[j].resident_end.remote(self.key) for j in self.active],
                    timeout=60)
        except Exception:  # a dead actor has nothing to free
            pass
        self.log = []


__all__ = ["RayResident"]

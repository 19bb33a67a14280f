"""Ray pool-shard executor: ``shards`` actors do the per-sample work of a round (the sharding rules
that keep the results identical are ``docs/design.md`` §2.5).

* ``bind(pool)`` puts the pool in the object store once per run (numpy: shared zero-copy by all
  actors of a node) and starts the actors; ``set_model`` puts the architecture once and the weights
  once per round, each as one reference the actors fetch when it changes.
* ``map``/``sum`` split the caller's index list into contiguous, batch-aligned runs, one per actor,
  so every batch holds exactly the rows it holds in :class:`~fishermask.execution.local.LocalExecutor`;
  sums are combined in the canonical tree order of :mod:`fishermask.kernels._reduction`.  Results
  are identical to the local ones.
* ``hold`` keeps a computation's rows on the actors (a range aligned on the caller's unit each):
  the Fisher greedy's embeddings (``embed_resident``), k-center's features, BADGE's factors; the
  strategy's driver talks to them through one call per step (:mod:`fishermask.execution.ray.group`).
* An actor that dies is restarted by Ray (``max_restarts=-1``); the driver re-sends the failed call,
  re-embedding a resident shard and replaying the calls that changed its state.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from typing import Any, Callable

import numpy as np
import torch

from fishermask.errors import FishermaskError
from fishermask.execution.base import BatchFn, PoolExecutor
from fishermask.execution.ray.actor import PoolShard, ShardStateLost, pool_payload
from fishermask.execution.ray.cluster import (check_bundles, check_reachable, local_cpus,
                                              local_shards, ray_init)
from fishermask.execution.ray.group import RayResident
from fishermask.kernels._reduction import cat_outputs, tree_combine
from fishermask.kernels._shard import shard_bounds

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 600.0
"""How long bind() waits for the actors to be scheduled and started before giving up."""
RESTART_TIMEOUT_S = 300.0
"""How long the driver waits for Ray to restart a dead shard actor."""


def execution_resources(execution, strategy: str = "PACK"):
    """The Ray Tune resource request of one trial running with these ``execution.*`` settings:
    a {"CPU": 1} bundle for the trial (the AL loop, the driver) plus one bundle per shard actor
    ({"CPU": cpus_per_shard, "GPU": gpus_per_shard}); without Ray shards, one bundle for the trial
    doing the work itself.  Shard actors created inside the trial land in these bundles."""
    from ray.tune import PlacementGroupFactory

    def bundle(cpus: float, gpus: float) -> dict:
        return {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}

    if not execution.use_ray:
        return PlacementGroupFactory([bundle(max(1.0, execution.cpus_per_shard),
                                             execution.gpus_per_shard)], strategy=strategy)
    shard = bundle(execution.cpus_per_shard, execution.gpus_per_shard)
    return PlacementGroupFactory([{"CPU": 1}] + [dict(shard) for _ in range(execution.shards)],
                                 strategy=strategy)


class RayExecutor(PoolExecutor):
    """Runs per-sample work on ``cfg.shards`` Ray actors (see the module docstring)."""

    max_attempts = 5
    """Failed calls per shard and operation before giving up."""

    def __init__(self, cfg):
        import ray

        self.cfg = cfg
        self.shards = int(cfg.shards)
        self.batch_size = int(cfg.batch_size)
        self.threads = int(cfg.threads or max(1, int(cfg.cpus_per_shard)))
        self.max_memory_gb = cfg.max_memory_gb
        self.pool = self.model = None
        self.actors: list = []
        self.actor_info: list[dict] = []
        self.recoveries = 0
        self._pool_ref = self._arch_ref = self._weights_ref = self._arch_sig = None
        self._started_ray = False
        if not ray.is_initialized():
            self._start_ray()
        if cfg.address:  # before any work: a cluster that lacks the resources would hang
            try:
                self._check_resources()
            except BaseException:
                self.close()
                raise

    # --------------------------------------------------------------------------- lifecycle
    def _start_ray(self) -> None:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        address = self.cfg.address or os.environ.get("RAY_ADDRESS")  # RAY_ADDRESS: ray job submit
        if address:
            check_reachable(address)  # unreachable, token auth: say what to do
            kwargs: dict[str, Any] = {"address": address}
        else:  # a new local Ray of this machine's CPUs (never another `ray start` cluster)
            local_shards(self.cfg)
            kwargs = {"address": "local", "num_cpus": local_cpus(), "include_dashboard": False}
        try:
            ray_init(**kwargs)
        except Exception:  # start-up races on a loaded machine: try once more
            log.warning("ray.init failed; retrying once", exc_info=True)
            if ray.is_initialized():
                ray.shutdown()
            time.sleep(2.0)
            ray_init(**kwargs)
        self._started_ray = True

    def _check_resources(self) -> None:
        import ray
        from ray.util import get_current_placement_group

        if get_current_placement_group() is not None:
            return  # a Tune trial's placement group holds the bundles
        if self.cfg.address:  # a cluster (that may autoscale): each actor must fit on a node
            shard = {"CPU": float(self.cfg.cpus_per_shard),
                     **({"GPU": float(self.cfg.gpus_per_shard)} if self.cfg.gpus_per_shard else {})}
            what = " + ".join(f"{v:g} {k}" for k, v in shard.items())
            check_bundles({f"execution.shards={self.shards} x ({what} per shard)":
                           [dict(shard) for _ in range(self.shards)]},
                          fix="Lower execution.shards, execution.cpus_per_shard or "
                              "execution.gpus_per_shard, or add nodes to the cluster")
            return
        total = ray.cluster_resources()
        for name, per in (("CPU", self.cfg.cpus_per_shard), ("GPU", self.cfg.gpus_per_shard)):
            if per > 0 and total.get(name, 0) + 1e-9 < per * self.shards:
                raise FishermaskError(
                    f"execution.shards={self.shards} × {per:g} {name} per shard needs "
                    f"{per * self.shards:g} {name}, but the Ray cluster has "
                    f"{total.get(name, 0):g}; lower execution.shards or "
                    f"execution.{name.lower()}s_per_shard, or add nodes")

    def bind(self, pool) -> None:
        import ray
        from ray.exceptions import GetTimeoutError
        from ray.util import get_current_placement_group

        self._kill_actors()
        if self.cfg.device == "cuda" and self.cfg.gpus_per_shard <= 0:
            raise FishermaskError("execution.device is 'cuda' but execution.gpus_per_shard is 0: "
                                  "the shard actors get no GPU; set execution.gpus_per_shard "
                                  "(e.g. 1) or execution.device=auto")
        self._check_resources()
        self.pool = pool
        self._pool_ref = ray.put(pool_payload(pool))
        # OpenMP threads that sleep at barriers (the greedy's steps are many short parallel
        # regions), unless the user chose a wait policy here
        wait = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        opts: dict[str, Any] = dict(num_cpus=self.cfg.cpus_per_shard,
                                    num_gpus=self.cfg.gpus_per_shard,
                                    max_restarts=-1, max_task_retries=0,
                                    runtime_env={"env_vars": wait})
        if get_current_placement_group() is None and self.shards > 1:
            opts["scheduling_strategy"] = "SPREAD"  # in a Tune trial: stay in its placement group
        remote = ray.remote(PoolShard)
        self.actors = [remote.options(**opts).remote(j, self.threads, self.cfg.device,
                                                     self.batch_size)
                       for j in range(self.shards)]
        try:
            self.actor_info = ray.get([a.info.remote() for a in self.actors],
                                      timeout=READY_TIMEOUT_S)
            ray.get([a.load_pool.remote([self._pool_ref]) for a in self.actors])
        except GetTimeoutError:
            self._kill_actors()
            raise FishermaskError(
                f"the {self.shards} shard actors were not all running after {READY_TIMEOUT_S:g} s; "
                "the cluster may lack the CPUs/GPUs execution.* asks for (inside a Tune trial, "
                "request them with fishermask.execution.ray.executor.execution_resources)") from None

    def set_model(self, model: torch.nn.Module) -> None:
        import ray

        state = model.state_dict()
        sig = (type(model).__module__, type(model).__qualname__,
               tuple((k, tuple(v.shape), str(v.dtype)) for k, v in state.items()))
        if sig != self._arch_sig:
            self._arch_ref = ray.put(copy.deepcopy(model).cpu().eval())
            self._arch_sig = sig
        self._weights_ref = ray.put({k: np.ascontiguousarray(v.detach().cpu().numpy())
                                     for k, v in state.items()})
        self.model = model

    def shard_stats(self) -> list[dict]:
        """Each shard actor's :meth:`~fishermask.execution.ray.actor.PoolShard.stats`."""
        import ray

        return ray.get([a.stats.remote() for a in self.actors])

    def close(self) -> None:
        import ray

        self._kill_actors()
        self._pool_ref = self._arch_ref = self._weights_ref = self._arch_sig = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def _kill_actors(self) -> None:
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
        self.actors, self.actor_info = [], []

    # --------------------------------------------------------------------------- plumbing
    def refs(self) -> list:
        """The [pool, architecture, weights] object references every shard call carries (the
        driver-side interface :class:`~fishermask.execution.ray.group.RayResident` uses)."""
        if not self.actors or self._weights_ref is None:
            raise RuntimeError("call bind(pool) and set_model(model) first")
        # nested in a list: each actor fetches a reference only when it changed (or it restarted)
        return [self._pool_ref, self._arch_ref, self._weights_ref]

    def gather(self, submit: Callable[[int], Any], shards, restore=None) -> list:
        """``submit(j)`` → ObjectRef for every shard j; results in shard order.  A shard whose call
        fails because its actor died (or lost its state) is restored (``restore(j)``, blocking)
        once Ray has restarted it, and its call submitted again."""
        import ray
        from ray.exceptions import RayActorError

        shards = list(shards)
        pending = {j: submit(j) for j in shards}
        out = {}
        for j in shards:
            attempts = 0
            while j not in out:
                try:
                    if pending[j] is None:
                        if restore is not None:
                            restore(j)
                        pending[j] = submit(j)
                    out[j] = ray.get(pending[j])
                except (RayActorError, ShardStateLost) as exc:
                    attempts += 1
                    if attempts >= self.max_attempts:
                        raise FishermaskError(f"shard actor {j} failed {attempts} times in a row; "
                                              f"last error: {exc}") from exc
                    self.recoveries += 1
                    log.warning("shard %d failed (%s); re-running its part once it is back", j,
                                type(exc).__name__)
                    pending[j] = None
                    self._wait_alive(j)
        return [out[j] for j in shards]

    def _wait_alive(self, j: int) -> None:
        """Block until Ray has restarted actor j (calls fail with ActorUnavailableError meanwhile)."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                self.actor_info[j] = ray.get(self.actors[j].info.remote(), timeout=30)
                return
            except (RayActorError, GetTimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise FishermaskError(f"shard actor {j} did not come back within "
                                          f"{RESTART_TIMEOUT_S:g} s after a failure: {exc}") from exc
                time.sleep(0.5)

    def _split(self, total: int, unit: int) -> list[tuple[int, int]]:
        return shard_bounds(total, self.shards, chunk=unit)

    # --------------------------------------------------------------------------- map / sum
    def map(self, fn: BatchFn, indices: np.ndarray):
        import ray

        idx = np.asarray(indices, dtype=np.int64)
        refs = self.refs()
        bounds = [(j, a, b) for j, (a, b) in enumerate(self._split(len(idx), self.batch_size))
                  if b > a]
        if not bounds:
            return cat_outputs([])
        fn_ref = ray.put(fn)
        ranges = {j: (a, b) for j, a, b in bounds}
        parts = self.gather(lambda j: self.actors[j].map.remote(
            refs, fn_ref, idx[ranges[j][0]:ranges[j][1]]), ranges)
        return cat_outputs(parts)

    def sum(self, fn: BatchFn, indices: np.ndarray):
        import ray

        idx = np.asarray(indices, dtype=np.int64)
        refs = self.refs()
        n_leaves = -(-len(idx) // self.batch_size)
        if n_leaves == 0:
            return None
        # whole subtrees per shard (at most 2·log₂(batches / unit) nodes each); ≤ 1/8 imbalance
        unit = 1 << max(0, int(math.log2(max(1.0, n_leaves / (8 * self.shards)))))
        ranges = {j: (a, b) for j, (a, b) in enumerate(self._split(n_leaves, unit)) if b > a}
        fn_ref = ray.put(fn)
        B = self.batch_size
        parts = self.gather(lambda j: self.actors[j].sum_nodes.remote(
            refs, fn_ref, idx[ranges[j][0] * B:ranges[j][1] * B], *ranges[j], n_leaves), ranges)
        return tree_combine({k: v for p in parts for k, v in p.items()}, n_leaves)

    # --------------------------------------------------------------------------- resident
    def hold(self, fn: BatchFn, indices: np.ndarray, make, unit: int) -> RayResident:
        """Each actor computes its ``unit``-aligned (and, when it can be, batch-aligned) range of
        the sorted ``indices`` and keeps it; see :class:`~fishermask.execution.ray.group.RayResident`."""
        idx = np.asarray(indices, dtype=np.int64)
        aligned = math.lcm(unit, self.batch_size)
        if aligned > 8 * unit and 2 * aligned * self.shards > len(idx):
            # a large unit for this pool (an odd batch size, or a large one on a small pool):
            # batch alignment would leave shards empty, so keep balance and ``unit`` alignment
            aligned = unit
        return RayResident(self, fn, idx, self._split(len(idx), aligned), make)


__all__ = ["RayExecutor", "execution_resources"]

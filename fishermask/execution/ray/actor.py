"""The pool-shard actor of :class:`~fishermask.execution.ray.executor.RayExecutor` (made remote
there).

The actor holds the whole pool (one object-store reference per run; numpy arrays are shared
zero-copy by every actor on a node), the round's model (architecture once, weights per round,
both as references it fetches only when they change), and during a selection that keeps its rows
where they were computed its shard's object (a :class:`~fishermask.kernels._shard.GreedyShard`,
a k-center or BADGE shard).  Its batches run
through the same :class:`~fishermask.execution.batches.BatchRunner` as the in-process executor's.

Every method is idempotent given its arguments: ``map``/``sum_nodes`` carry the model references
and reload them when needed, so a restarted actor answers them as before; the resident methods carry
a round key and raise :class:`ShardStateLost` when a restart erased the state, so that the driver
re-embeds the shard and replays the calls that changed it.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from fishermask.data.on_disk import OnDiskPool
from fishermask.data.pool import ImageData
from fishermask.errors import FishermaskError
from fishermask.execution.batches import BatchRunner


class ShardStateLost(RuntimeError):
    """The actor has no state for this greedy round (it was restarted): re-initialise it."""


def pool_payload(pool) -> dict:
    """What goes into the object store for the pool: numpy arrays for an ImageData (zero-copy on
    every node), the description of a pool on disk (a FeatureData's file and rows, an
    ImageFiles' paths: each shard reads its own rows), the object itself otherwise."""
    if isinstance(pool, ImageData):
        return {"images": pool.images.numpy(), "targets": pool.targets.numpy(),
                "classes": list(pool.classes), "mean": pool.mean, "std": pool.std}
    if isinstance(pool, OnDiskPool):
        return {"object": pool.for_shards()}
    return {"object": pool}


def pool_from_payload(payload: dict):
    if "object" in payload:
        return payload["object"]
    with warnings.catch_warnings():  # read-only shared buffers: the pool is never written
        warnings.filterwarnings("ignore", message=".*not writable.*")
        images = torch.from_numpy(payload["images"])
        targets = torch.from_numpy(payload["targets"])
    return ImageData(images, targets, payload["classes"], payload["mean"], payload["std"])


def actor_device(device: str) -> torch.device:
    """cuda:0 (the GPU Ray gave this actor) when it got one and torch sees it, else cpu."""
    import ray

    has_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    if device == "cuda" and not has_gpu:
        raise FishermaskError("execution.device is 'cuda' but this shard actor has no usable GPU; "
                              "set execution.gpus_per_shard > 0 on a GPU cluster, or "
                              "execution.device=auto")
    return torch.device("cuda:0" if has_gpu and device != "cpu" else "cpu")


class PoolShard:
    def __init__(self, shard: int, threads: int, device: str, batch_size: int):
        torch.set_num_threads(max(1, int(threads)))
        self.shard = shard
        self.device = actor_device(device)
        self.batch_size = int(batch_size)
        self.pool = self.model = None
        self._pool_key = self._arch_key = self._weights_key = None
        self._resident: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ plumbing
    def info(self) -> dict:
        import ray
        from ray.util import get_current_placement_group

        pg = get_current_placement_group()
        return {"shard": self.shard, "pid": os.getpid(), "device": str(self.device),
                "node_id": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "placement_group": pg.id.hex() if pg is not None else None,
                "threads": torch.get_num_threads(),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}

    def load_pool(self, refs) -> None:
        """Fetch the pool when its reference is new (once per run, and after a restart)."""
        import ray

        if self._pool_key != refs[0].hex():
            self.pool = pool_from_payload(ray.get(refs[0]))
            self._pool_key = refs[0].hex()

    def _runner(self, refs) -> BatchRunner:
        """The batch runner on the pool and the round's model; ``refs`` = [pool, architecture,
        weights] references (nested, so fetched only here, when they changed)."""
        import ray

        self.load_pool(refs)
        _, arch_ref, weights_ref = refs
        if self._arch_key != arch_ref.hex():
            self.model = ray.get(arch_ref).to(self.device).eval()
            self._arch_key, self._weights_key = arch_ref.hex(), None
        if self._weights_key != weights_ref.hex():
            state = ray.get(weights_ref)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not writable.*")
                self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            self.model.eval()
            self._weights_key = weights_ref.hex()
        return BatchRunner(self.pool, self.model, self.device, self.batch_size)

    # ------------------------------------------------------------------------------ map / sum
    def map(self, refs, fn, indices):
        return self._runner(refs).map(fn, indices)

    def sum_nodes(self, refs, fn, indices, first: int, last: int, n_leaves: int) -> dict:
        """Tree nodes over the batches (leaves) [first, last) of a sum of n_leaves batches;
        ``indices`` are the rows of exactly those batches."""
        return self._runner(refs).sum_nodes(fn, indices, first, last, n_leaves)

    # ------------------------------------------------------------------------------ resident
    def resident_compute(self, key: str, refs, fn, indices, offset: int, make) -> int:
        """``fn`` on the rows ``indices`` (global positions [offset, offset + len)); keep the
        shard object ``make(outputs per batch, offset)``."""
        outs = list(self._runner(refs).outputs(fn, indices))
        self._resident = {"key": key, "shard": make(outs, int(offset))}
        return len(indices)

    def _shard(self, key: str):
        if self._resident.get("key") != key:
            raise ShardStateLost(f"shard {self.shard} holds no resident rows for key {key}")
        return self._resident["shard"]

    def resident_call(self, key: str, op, args):
        """``op(shard, *args)`` for an operation ``op`` of the shard's class (the function itself,
        e.g. ``GreedyShard.reset``, sent by the driver's resident group)."""
        return op(self._shard(key), *args)

    def resident_replay(self, key: str, log) -> None:
        """Re-apply the state-changing operations of the round, in order (after a restart)."""
        import ray

        shard = self._shard(key)
        for op, ref in log:
            op(shard, *ray.get(ref))

    def resident_end(self, key: str) -> None:
        if self._resident.get("key") == key:
            self._resident = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict:
        """This process's peak resident memory (MB) and, for a pool on disk, the rows it read
        and the smallest and largest pool index among them."""
        import resource

        out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if isinstance(self.pool, OnDiskPool):
            out.update(read_rows=self.pool.read_rows, read_span=self.pool.read_span)
        return out


__all__ = ["PoolShard", "ShardStateLost", "pool_payload", "pool_from_payload"]

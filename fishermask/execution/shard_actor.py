"""The pool-shard actor of :class:`~fishermask.execution.ray_shards.RayExecutor` (made remote
there) and :class:`GreedyRound`, the driver's side of one distributed greedy.

The actor holds the whole pool (one object-store reference per run; numpy arrays are shared
zero-copy by every actor on a node), the round's model (architecture once, weights per round,
both as references it fetches only when they change), and during a Fisher greedy the candidates'
arrays of its shard in a :class:`~fishermask.greedy_state.GreedyState`.

Every method is idempotent given its arguments: ``map``/``sum_nodes`` carry the model references
and reload them when needed, so a restarted actor answers them as before; the greedy methods carry
a round key and a step number, and raise :class:`ShardStateLost` when a restart erased the state,
so that the driver re-initialises the shard from the round's inputs and replays the updates.
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from typing import Any

import numpy as np
import torch

from fishermask.errors import FishermaskError
from fishermask.execution.base import (FISHER_BLOCK, TreeSum, add_outputs, cat_outputs,
                                       fisher_leaves, tree_combine, tree_cover, tree_node_range)


class ShardStateLost(RuntimeError):
    """The actor has no state for this greedy round (it was restarted): re-initialise it."""


def pool_payload(pool) -> dict:
    """What goes into the object store for the pool: numpy arrays for an ImageData (zero-copy on
    every node), the object itself otherwise."""
    from fishermask.data import ImageData

    if isinstance(pool, ImageData):
        return {"images": pool.images.numpy(), "targets": pool.targets.numpy(),
                "classes": list(pool.classes), "mean": pool.mean, "std": pool.std}
    return {"object": pool}


def pool_from_payload(payload: dict):
    from fishermask.data import ImageData

    if "object" in payload:
        return payload["object"]
    with warnings.catch_warnings():  # read-only shared buffers: the pool is never written
        warnings.filterwarnings("ignore", message=".*not writable.*")
        images = torch.from_numpy(payload["images"])
        targets = torch.from_numpy(payload["targets"])
    return ImageData(images, targets, payload["classes"], payload["mean"], payload["std"])


def _to_cpu(out):
    if isinstance(out, dict):
        return {k: v.detach().cpu() for k, v in out.items()}
    return out.detach().cpu()


def _cpu_tree(value):
    if isinstance(value, dict):
        return {k: v.cpu() for k, v in value.items()}
    return value.cpu()


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
        self._round: dict[str, Any] = {}

    # ------------------------------------------------------------------------------ plumbing
    def info(self) -> dict:
        import ray
        from ray.util import get_current_placement_group

        pg = get_current_placement_group()
        return {"shard": self.shard, "pid": os.getpid(), "device": str(self.device),
                "node_id": ray.get_runtime_context().get_node_id(),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "placement_group": pg.id.hex() if pg is not None else None,
                "threads": torch.get_num_threads()}

    def load_pool(self, refs) -> None:
        """Fetch the pool when its reference is new (once per run, and after a restart)."""
        import ray

        if self._pool_key != refs[0].hex():
            self.pool = pool_from_payload(ray.get(refs[0]))
            self._pool_key = refs[0].hex()

    def _use_model(self, refs) -> torch.nn.Module:
        """``refs`` = [pool, architecture, weights] references (nested, so fetched only here)."""
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
        return self.model

    def _batches(self, model, fn, indices):
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), self.batch_size):
            x = self.pool.inputs(indices[start:start + self.batch_size]).to(self.device)
            yield fn(model, x)

    # ------------------------------------------------------------------------------ map / sum
    def map(self, refs, fn, indices):
        model = self._use_model(refs)
        return cat_outputs([_to_cpu(out) for out in self._batches(model, fn, indices)])

    def sum_nodes(self, refs, fn, indices, first: int, last: int, n_leaves: int) -> dict:
        """Tree nodes over the batches (leaves) [first, last) of a sum of n_leaves batches;
        ``indices`` are the rows of exactly those batches."""
        model = self._use_model(refs)
        leaves = (add_outputs(None, out) for out in self._batches(model, fn, indices))
        return _nodes(tree_cover(first, last, n_leaves), n_leaves, leaves)

    # ------------------------------------------------------------------------------ greedy
    def _embed(self, model, fn, indices, k: int) -> torch.Tensor:
        parts = [out.detach() for out in self._batches(model, fn, indices)]
        if not parts:
            return torch.zeros(0, self.pool.num_classes, k, device=self.device)
        return torch.cat(parts)

    def greedy_embed(self, key: str, refs, fn, cand, rest, labeled) -> dict:
        """Embed this shard's candidates and other pool rows; return the labeled rows among them."""
        from fishermask.greedy_state import _check_finite

        t0 = time.perf_counter()
        model = self._use_model(refs)
        v_c, v_r = self._embed(model, fn, cand, fn.k), self._embed(model, fn, rest, fn.k)
        _check_finite(v_c, "candidates")
        self._round = {"key": key, "v_c": v_c, "v_r": v_r}
        pos, rows = [], []
        for idx, v in ((np.asarray(cand), v_c), (np.asarray(rest), v_r)):
            if len(idx) and len(labeled):
                p = np.clip(np.searchsorted(idx, labeled), 0, len(idx) - 1)
                hit = np.flatnonzero(idx[p] == labeled)
                pos.append(hit)
                rows.append(v[torch.as_tensor(p[hit], device=v.device)].cpu())
        return {"labeled_pos": np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64),
                "labeled_rows": torch.cat(rows) if rows else None,
                "seconds": time.perf_counter() - t0}

    def _state(self, key: str, what: str):
        if self._round.get("key") != key or what not in self._round:
            raise ShardStateLost(f"shard {self.shard} has no {what} for greedy round {key}")
        return self._round[what]

    def greedy_fisher(self, key: str, target: str, cand_leaves, rest_leaves, n_leaves: int) -> dict:
        """Tree nodes of Σ V_xᵀV_x over this shard's leaves (candidate leaves, then the others')."""
        t0 = time.perf_counter()
        nodes = {}
        for (first, last), v in ((cand_leaves, self._state(key, "v_c")),
                                 (rest_leaves, self._state(key, "v_r"))):
            nodes.update(_nodes(tree_cover(first, last, n_leaves), n_leaves,
                                fisher_leaves(v, target)))
        self._round.pop("v_r")
        return {"nodes": nodes, "seconds": time.perf_counter() - t0}

    def greedy_start(self, key: str, init, offset: int) -> None:
        from fishermask.greedy_state import GreedyState

        v_c = self._state(key, "v_c")
        self._round["state"] = GreedyState(v_c, int(offset), init)
        self._round["applied"] = 0
        del self._round["v_c"]

    def _apply(self, state, update) -> None:
        g, v, z, w, sign = update
        if state.owns(g):
            state.mark(g, sign > 0)
        state.apply(v, z, w, sign)

    def greedy_replay(self, key: str, updates) -> None:
        state = self._state(key, "state")
        for update in updates[self._round["applied"]:]:
            self._apply(state, update)
        self._round["applied"] = max(self._round["applied"], len(updates))

    def greedy_step(self, key: str, step: int, update, forward: bool):
        """Apply the previous step's winner (``update``, the step-1-th update), then report the
        local best of this step's direction and that candidate's rows."""
        state = self._state(key, "state")
        applied = self._round["applied"]
        if update is not None and applied == step - 1:
            self._apply(state, update)
            self._round["applied"] = applied = step
        if applied != step:
            raise ShardStateLost(f"shard {self.shard} applied {applied} updates, step {step}")
        best = state.best_forward() if forward else state.best_backward()
        rows = None if best is None else tuple(r.cpu() for r in state.rows(best[1]))
        return best, rows

    def greedy_end(self, key: str) -> None:
        if self._round.get("key") == key:
            self._round = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def pid(self) -> int:
        return os.getpid()


class GreedyRound:
    """The driver's side of one distributed greedy (all it needs to restore a restarted shard)."""

    def __init__(self, ex, embed_fn, cand, rest, lab, c_rng, r_rng, target):
        import ray

        self.ex, self.cand, self.rest, self.lab = ex, cand, rest, lab
        self.c_rng, self.r_rng, self.target = c_rng, r_rng, target
        self.key = uuid.uuid4().hex
        self.refs = ex._refs()
        self.fn_ref = ray.put(embed_fn)
        self.init_ref = None
        self.updates: list = []
        self.active = [j for j, (a, b) in enumerate(c_rng) if b > a]

    def _hook(self, event: str, step: int = -1) -> None:
        if self.ex.hook is not None:
            self.ex.hook(event, step)

    def _embed_call(self, j: int, with_rest: bool = True):
        (ca, cb), (ra, rb) = self.c_rng[j], self.r_rng[j]
        rest = self.rest[ra:rb] if with_rest else self.rest[:0]
        return self.ex.actors[j].greedy_embed.remote(self.key, self.refs, self.fn_ref,
                                                     self.cand[ca:cb], rest, self.lab)

    def _restore_embed(self, j: int, with_rest: bool = True) -> None:
        import ray

        ray.get(self._embed_call(j, with_rest))

    def _restore_state(self, j: int) -> None:
        """Bring a restarted shard back to the state after the updates applied so far."""
        import ray

        ray.get(self._embed_call(j, with_rest=False))
        actor = self.ex.actors[j]
        ray.get(actor.greedy_start.remote(self.key, self.init_ref, self.c_rng[j][0]))
        if self.updates:
            ray.get(actor.greedy_replay.remote(self.key, ray.put(self.updates)))

    def embed(self, C: int, k: int) -> torch.Tensor:
        """Every shard embeds its rows; returns the labeled rows [L, C, k]."""
        pending = {j: self._embed_call(j) for j in range(self.ex.shards)}
        self._hook("embed")
        parts = self.ex._gather(lambda j: pending.pop(j) if j in pending else self._embed_call(j),
                                range(self.ex.shards))
        rows = [p["labeled_rows"] for p in parts if p["labeled_rows"] is not None]
        dtype = rows[0].dtype if rows else torch.float32
        v_lab = torch.zeros(len(self.lab), C, k, dtype=dtype)
        for p in parts:
            if p["labeled_rows"] is not None:
                v_lab[torch.tensor(p["labeled_pos"], dtype=torch.long)] = p["labeled_rows"]
        return v_lab

    def fisher(self, N: int) -> torch.Tensor:
        """F = (1/N) Σ_pool V_xᵀV_x from the shards' tree nodes (canonical order), float32."""
        n_c = -(-len(self.cand) // FISHER_BLOCK)
        n_leaves = n_c + -(-len(self.rest) // FISHER_BLOCK)

        def leaves(a: int, b: int, offset: int) -> tuple[int, int]:
            first = offset + a // FISHER_BLOCK
            return first, (offset + -(-b // FISHER_BLOCK)) if b > a else first

        parts = self.ex._gather(
            lambda j: self.ex.actors[j].greedy_fisher.remote(
                self.key, self.target, leaves(*self.c_rng[j], 0), leaves(*self.r_rng[j], n_c),
                n_leaves),
            range(self.ex.shards), restore=self._restore_embed)
        total = tree_combine({key: v for p in parts for key, v in p["nodes"].items()}, n_leaves)
        return (total / N).to(torch.float32)

    def greedy(self, v_lab, F, n: int, oversample: int, lam, weighting, C: int, k: int) -> list:
        """``drive_greedy`` over the shards: one round trip per step."""
        import ray

        from fishermask.selection import _global_best, greedy_init, greedy_steps

        init = greedy_init(v_lab, F, n, lam=lam, weighting=weighting, num_classes=C, dim=k)
        self.init_ref = ray.put(init)
        ex = self.ex
        ex._gather(lambda j: ex.actors[j].greedy_start.remote(self.key, self.init_ref,
                                                              self.c_rng[j][0]),
                   self.active, restore=lambda j: self._restore_embed(j, with_rest=False))
        n_fwd, n_bwd = greedy_steps(len(self.cand), n, oversample)
        order: list[int] = []
        for step in range(n_fwd + n_bwd):
            forward = step < n_fwd
            update = ray.put(self.updates[-1]) if self.updates else None  # one copy for all
            reports = ex._gather(lambda j: ex.actors[j].greedy_step.remote(
                self.key, step, update, forward), self.active, restore=self._restore_state)
            _, g, owner = _global_best([best for best, _ in reports])
            v, z, w = reports[owner][1]
            self.updates.append((g, v, z, w, 1 if forward else -1))
            if forward:
                order.append(g)
            else:
                order.remove(g)
            self._hook("step", step)
        return order

    def end(self) -> None:
        import ray

        try:
            ray.get([self.ex.actors[j].greedy_end.remote(self.key)
                     for j in range(self.ex.shards)], timeout=60)
        except Exception:  # a dead actor has nothing to free
            pass


def _nodes(cover, n_leaves: int, leaves) -> dict:
    """Values of the tree nodes ``cover`` (contiguous, left to right) from an iterator over
    their leaves in order."""
    out = {}
    for node in cover:
        tree = TreeSum()
        for _ in tree_node_range(node, n_leaves):
            tree.add(next(leaves))
        out[node] = _cpu_tree(tree.result())
    return out


__all__ = ["GreedyRound", "PoolShard", "ShardStateLost", "pool_payload", "pool_from_payload"]

"""Canonical float64 reductions: pairwise tree sums whose result does not depend on sharding.

Sums over the pool (``sum``, the target F) are defined as a fixed pairwise tree over "leaves"
(one batch of ``sum``; FISHER_BLOCK rows of F), whatever the number of shards: a shard that owns
the contiguous leaves [p, q) sends the values of the maximal tree nodes inside [p, q)
(:func:`tree_cover`, at most 2·log₂(leaves) of them) and :func:`tree_combine` finishes the tree.
Every float64 addition then happens in the same order, so results are bit-identical for any
sharding (the leaves themselves are computed on the same rows in the same batches).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from fishermask.kernels.embeddings import FisherEmbeddings

FISHER_BLOCK = 128
"""Rows of V per leaf of the target-Fisher sum (candidates first, then the other pool rows)."""


def add_values(a: Any, b: Any) -> Any:
    """a + b for tensors or dicts of tensors (the combine step of the reduction tree)."""
    if isinstance(a, dict):
        return {key: add_values(a[key], b[key]) for key in a}
    return a + b


class TreeSum:
    """Streaming pairwise tree sum of leaves 0, 1, 2, …: node (l, i) = node (l−1, 2i) + node
    (l−1, 2i+1) over leaves [i·2ˡ, (i+1)·2ˡ) clipped to the leaves present (a node whose right
    child is empty is its left child).  Holds at most log₂(leaves) partial sums."""

    def __init__(self):
        self._stack: list[tuple[int, Any]] = []

    def add(self, leaf: Any) -> None:
        level, value = 0, leaf
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            level, value = level + 1, add_values(left, value)
        self._stack.append((level, value))

    def result(self) -> Any:
        """The root over the leaves added so far (None if none)."""
        if not self._stack:
            return None
        acc = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            acc = add_values(left, acc)
        return acc


def _tree_levels(n_leaves: int) -> int:
    return max(0, (n_leaves - 1).bit_length())


def tree_cover(p: int, q: int, n_leaves: int) -> list[tuple[int, int]]:
    """The maximal nodes (level, index) of the tree over ``n_leaves`` leaves that lie inside the
    leaves [p, q), left to right; node (l, i) covers [i·2ˡ, min((i+1)·2ˡ, n_leaves))."""
    out: list[tuple[int, int]] = []

    def visit(level: int, i: int) -> None:
        start = i << level
        stop = min(start + (1 << level), n_leaves)
        if stop <= p or start >= q or start >= n_leaves:
            return
        if p <= start and stop <= q:
            out.append((level, i))
            return
        visit(level - 1, 2 * i)
        visit(level - 1, 2 * i + 1)

    if n_leaves > 0 and q > p:
        visit(_tree_levels(n_leaves), 0)
    return out


def tree_node_range(node: tuple[int, int], n_leaves: int) -> range:
    level, i = node
    return range(i << level, min((i + 1) << level, n_leaves))


def tree_combine(nodes: dict, n_leaves: int) -> Any:
    """The root of the tree over ``n_leaves`` leaves from node values that cover every leaf
    (as from :func:`tree_cover` of disjoint ranges); equal to :class:`TreeSum` over all leaves."""
    def value(level: int, i: int):
        if (level, i) in nodes:
            return nodes[(level, i)]
        if level == 0:
            raise KeyError(f"leaf {i} of the reduction tree is missing")
        left = value(level - 1, 2 * i)
        if (2 * i + 1) << (level - 1) >= n_leaves:
            return left
        return add_values(left, value(level - 1, 2 * i + 1))

    return value(_tree_levels(n_leaves), 0) if n_leaves > 0 else None


def tree_nodes(cover: list[tuple[int, int]], n_leaves: int, leaves) -> dict:
    """The values (on the CPU) of the tree nodes ``cover`` (contiguous, left to right, as from
    :func:`tree_cover`) from an iterator over exactly their leaves, in order."""
    out = {}
    for node in cover:
        tree = TreeSum()
        for _ in tree_node_range(node, n_leaves):
            tree.add(next(leaves))
        out[node] = to_cpu(tree.result())
    return out


def merge_nodes(parts) -> dict:
    """One mapping of tree nodes from the shards' mappings (their nodes are disjoint)."""
    return {node: value for part in parts for node, value in part.items()}


def leaf_count(total: int) -> int:
    """Leaves of FISHER_BLOCK rows over ``total`` rows."""
    return -(-total // FISHER_BLOCK)


# ----------------------------------------------------------------- batch outputs

def add_outputs(acc: Optional[Any], out: Any) -> Any:
    """Accumulate a tensor or dict of tensors in float64."""
    if isinstance(out, dict):
        acc = acc or {}
        for key, val in out.items():
            acc[key] = add_outputs(acc.get(key), val)
        return acc
    out = out.detach().to("cpu", torch.float64)
    return out if acc is None else acc + out


def cat_outputs(parts: list[Any]) -> Any:
    """Concatenate per-batch tensors (or dicts of tensors) along the sample axis."""
    if not parts:
        return torch.zeros(0)
    if isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}
    if isinstance(parts[0], FisherEmbeddings):
        return FisherEmbeddings.cat(parts)
    return torch.cat(parts)


def take_rows(parts: list, device=None) -> Any:
    """``cat_outputs(parts)`` (tensors, dicts of tensors or FisherEmbeddings, non-empty), written
    into tensors allocated once (on ``device``, default the parts'), each part released from the
    list ``parts`` as soon as it is copied: the peak is the result and one part, not twice the
    result."""
    def fields(part) -> dict:
        if isinstance(part, FisherEmbeddings):
            return {"features": part.features, "probs": part.probs, "dense": part.dense,
                    "top": part.top}
        return part if isinstance(part, dict) else {None: part}

    def rows(part) -> int:
        return len(next(t for t in fields(part).values() if t is not None))

    first = parts[0]
    n = sum(rows(p) for p in parts)
    out = {k: None if t is None else torch.empty((n, *t.shape[1:]), dtype=t.dtype,
                                                 device=t.device if device is None else device)
           for k, t in fields(first).items()}
    at = 0
    for i in range(len(parts)):
        m = rows(parts[i])
        for k, t in fields(parts[i]).items():
            if t is not None:
                out[k][at:at + m] = t
        at, parts[i] = at + m, None
    if isinstance(first, FisherEmbeddings):
        return FisherEmbeddings(out["features"], out["probs"], out["dense"], first.prob_scaling,
                                out["top"])
    return out if isinstance(first, dict) else out[None]


def to_cpu(out):
    """A batch function's output (tensor, dict of tensors or FisherEmbeddings) on the CPU."""
    if isinstance(out, dict):
        return {k: v.detach().cpu() for k, v in out.items()}
    if isinstance(out, FisherEmbeddings):
        return out.to("cpu")
    return out.detach().cpu()

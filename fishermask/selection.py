"""Greedy Fisher-trace selection (BAIT / FisherMask), DESIGN.md §2 "Greedy".

:func:`fisher_greedy` minimises tr(M_S⁻¹ F) greedily with low-rank maintenance of Z_x = Ṽ_x A and
W_x = Z_x F (see :mod:`fishermask.greedy_state`): O(U·C²·k) per step instead of the public codes'
O(U·C·k²).  The engine is one :class:`GreedyState` over all candidates driven by :func:`drive_greedy`;
a distributed driver builds one state per CHUNK-aligned shard (:func:`shard_bounds`) from the same
:func:`greedy_init` result and picks exactly the same indices.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

from fishermask.greedy_state import (
    CHUNK,
    WEIGHTINGS,
    GreedyInit,
    GreedyState,
    _as_float_tensor,
    _check_finite,
    check_options,
    greedy_init,
    shard_bounds,
)

__all__ = [
    "CHUNK",
    "WEIGHTINGS",
    "GreedyInit",
    "GreedyState",
    "drive_greedy",
    "fisher_greedy",
    "greedy_init",
    "greedy_steps",
    "shard_bounds",
]


def greedy_steps(num_candidates: int, n: int, oversample: int) -> tuple[int, int]:
    """(forward steps, backward steps): min(oversample·n, U) forward, then down to n.

    ``oversample·n > U`` is not an error: the forward phase stops when every candidate is selected
    and the backward phase removes the surplus, so the result still has n indices.
    """
    forward = min(oversample * n, num_candidates)
    return forward, forward - n


def _global_best(reports) -> tuple[float, int, int]:
    """Largest score over the shards' reports, ties to the lowest global index."""
    best = None
    for shard, report in enumerate(reports):
        if report is None:
            continue
        score, index = report
        if best is None or score > best[0] or (score == best[0] and index < best[1]):
            best = (score, index, shard)
    if best is None:
        raise RuntimeError("no eligible candidate left in any shard")
    return best


def drive_greedy(states: Sequence[GreedyState], n: int, oversample: int = 1) -> Tensor:
    """Run the greedy over CHUNK-aligned shard states (in-process); returns the kept global
    indices in the order they were added (LongTensor[n])."""
    total = sum(s.size for s in states)
    n_fwd, n_bwd = greedy_steps(total, n, oversample)
    order: list[int] = []
    for step in range(n_fwd + n_bwd):
        forward = step < n_fwd
        _, g, owner = _global_best([s.best_forward() if forward else s.best_backward()
                                    for s in states])
        v, z, w = states[owner].rows(g)
        states[owner].mark(g, forward)
        if forward:
            order.append(g)
        else:
            order.remove(g)
        if step + 1 < n_fwd + n_bwd:  # the last update would never be read
            for s in states:
                s.apply(v, z, w, 1 if forward else -1)
    return torch.tensor(order, dtype=torch.long)


def fisher_greedy(candidates: Tensor, labeled: Tensor, fisher: Tensor, n: int, *,
                  lam: float = 1.0, oversample: int = 1, weighting: str = "bait") -> Tensor:
    """Greedily choose n of the candidates to minimise tr(M_S⁻¹ F) (DESIGN.md §2).

    Args:
        candidates: raw embeddings V_x, [U, C, k].
        labeled: raw embeddings of the labeled set, [L, C, k] (L may be 0; ``None`` = no labeled).
        fisher: target Fisher F, dense [k, k] or its diagonal [k].
        n: batch size, 0 ≤ n ≤ U.
        lam: ridge λ > 0 of M = λI + ….
        oversample: r ≥ 1; r·n forward steps then (r−1)·n backward removals.  When r·n > U the
            forward phase is clamped to U steps and the backward phase removes U − n points.
        weighting: "bait" (w_S = n/(|L|+n)) or "uniform" (w_S = 1/(|L|+n)); w_L = 1/(|L|+n).

    Returns:
        LongTensor[n] of indices into ``candidates`` in the order they were added.  Ties go to the
        lowest index.  Embeddings are stored in float32 (C×C solves in float64) on the candidates'
        device.
    """
    candidates = _as_float_tensor(candidates, "candidates")
    if candidates.dim() != 3:
        raise ValueError(f"candidates must have shape [U, C, k], got {tuple(candidates.shape)}")
    num_u, num_c, k = candidates.shape
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if n > num_u:
        raise ValueError(f"cannot select n={n} points from {num_u} candidates")
    if isinstance(oversample, bool) or not isinstance(oversample, numbers.Integral) or oversample < 1:
        raise ValueError(f"oversample must be an integer >= 1, got {oversample!r}")
    _check_finite(candidates, "candidates")
    if n == 0:
        check_options(lam, weighting)
        return torch.zeros(0, dtype=torch.long)
    init = greedy_init(labeled, fisher, int(n), lam=lam, weighting=weighting,
                       num_classes=num_c, dim=k, device=candidates.device)
    state = GreedyState(candidates, 0, init)
    return drive_greedy([state], int(n), int(oversample))

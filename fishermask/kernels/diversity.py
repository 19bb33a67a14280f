"""Diversity kernels: k-center greedy and BADGE's k-means++ seeding (torch/numpy only).

Neither kernel ever materialises a pool × pool or pool × batch distance matrix, nor BADGE's C·d
gradient embeddings: k-center computes its distances in blocks of at most ``BLOCK`` entries, and
BADGE keeps O(|pool|) numbers besides its inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from fishermask.kernels._checks import check_n

BLOCK = 1 << 22  # distances computed at a time by k-center (32 MB of float64)


def _sq_dists(x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    """‖x_i − y_j‖² = ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j, clamped at 0 (float64)."""
    return (x_sq[:, None] + y_sq[None, :] - 2.0 * (x @ y.T)).clamp_min_(0.0)


def kcenter_greedy(candidates: torch.Tensor, centers: torch.Tensor, n: int, *,
                   chunk: int = 2048) -> torch.Tensor:
    """Greedy k-center (core-set) selection.

    With initial centers c ∈ ``centers`` (the labeled points' features), repeat ``n`` times:
    add argmax_{x ∈ candidates∖S} min_{c ∈ centers ∪ S} ‖z_x − z_c‖² (ties: lowest index).
    Without initial centers the first pick is the candidate farthest from the candidates' mean.
    Distances are computed in float64 against ``chunk`` centers at a time, for as many
    candidates at a time as keep a block within ``BLOCK`` entries (the candidates stay in their
    dtype; each block is converted).

    Returns positions into ``candidates`` in pick order.
    """
    n = check_n(n, len(candidates))
    U = len(candidates)
    C = centers.to(torch.float64)
    chunk = max(1, min(chunk, len(C)))
    rows = max(1, BLOCK // chunk)
    blocks = [(a, min(a + rows, U)) for a in range(0, U, rows)]
    x64 = [candidates[a:b].to(torch.float64) for a, b in blocks] if len(blocks) == 1 else None

    def block(j: int) -> torch.Tensor:  # candidates of block j in float64
        a, b = blocks[j]
        return x64[0] if x64 is not None else candidates[a:b].to(torch.float64)

    x_sq = torch.cat([(x * x).sum(1) for x in map(block, range(len(blocks)))]) if U else \
        torch.zeros(0, dtype=torch.float64)
    min_d = torch.full((U,), float("inf"), dtype=torch.float64)
    for start in range(0, len(C), chunk):
        c = C[start:start + chunk]
        c_sq = (c * c).sum(1)
        for j, (a, b) in enumerate(blocks):
            d = _sq_dists(block(j), c, x_sq[a:b], c_sq)
            min_d[a:b] = torch.minimum(min_d[a:b], d.min(dim=1).values)
    picks: list[int] = []
    chosen = torch.zeros(U, dtype=torch.bool)
    for step in range(n):
        if step == 0 and len(C) == 0:
            centre = (block(0).mean(0) if len(blocks) == 1
                      else sum(block(j).sum(0) for j in range(len(blocks))) / U)
            score = torch.cat([((block(j) - centre) ** 2).sum(1) for j in range(len(blocks))])
        else:
            score = min_d
        score = score.masked_fill(chosen, -1.0)
        i = int(torch.argmax(score))  # argmax returns the first maximum: lowest index on ties
        picks.append(i)
        chosen[i] = True
        z = candidates[i:i + 1].to(torch.float64)
        for j, (a, b) in enumerate(blocks):
            d = _sq_dists(block(j), z, x_sq[a:b], x_sq[i:i + 1])[:, 0]
            min_d[a:b] = torch.minimum(min_d[a:b], d)
    return torch.tensor(picks, dtype=torch.long)


def badge_embedding_factors(probs: torch.Tensor) -> torch.Tensor:
    """a_x = e_ŷ − p(x) with ŷ = argmax p (the hallucinated label); g_x = a_x ⊗ h_x."""
    a = -probs.to(torch.float64).clone()
    a[torch.arange(len(a)), probs.argmax(1)] += 1.0
    return a


def badge_seeding(probs: torch.Tensor, features: torch.Tensor, n: int,
                  rng: np.random.Generator) -> torch.Tensor:
    """BADGE: k-means++ seeding on g_x = (e_ŷ − p(x)) ⊗ h(x), never materialising g.

    ‖g_x − g_μ‖² = ‖a_x‖²‖h_x‖² + ‖a_μ‖²‖h_μ‖² − 2 (a_x·a_μ)(h_x·h_μ).  The first center is the
    largest ‖g‖ (ties: lowest index); each next one is drawn ∝ D(x)², D = distance to the nearest
    chosen center (chosen points have D = 0; if every D is 0 the draw is uniform over the rest).

    Returns positions into the rows of ``probs``/``features`` in pick order.
    """
    N = len(probs)
    n = check_n(n, N)
    a = badge_embedding_factors(probs)
    h = features.to(torch.float64)
    a_sq, h_sq = (a * a).sum(1), (h * h).sum(1)
    g_sq = a_sq * h_sq
    picks: list[int] = []
    chosen = torch.zeros(N, dtype=torch.bool)
    D2 = torch.full((N,), float("inf"), dtype=torch.float64)
    for step in range(n):
        if step == 0:
            i = int(torch.argmax(g_sq))
        else:
            w = D2.masked_fill(chosen, 0.0).clamp_min(0.0).numpy()
            total = w.sum()
            if not np.isfinite(total) or total <= 0:
                w = (~chosen).numpy().astype(np.float64)
                total = w.sum()
            i = int(rng.choice(N, p=w / total))
        picks.append(i)
        chosen[i] = True
        d = g_sq + g_sq[i] - 2.0 * (a @ a[i]) * (h @ h[i])
        D2 = torch.minimum(D2, d.clamp_min(0.0))
    return torch.tensor(picks, dtype=torch.long)
